"""The warm pool: stopped, ready instance directories copied from the template ahead of time.

A provision takes an entry by renaming it into ``instances/<name>`` (one ``rename``: atomic, so two
callers never get the same entry), then writes its configuration, starts it and makes the role;
the copying a provision used to wait for was done earlier, in the background.

Layout, next to the template it is copied from (``templates/pg<ver>-wal<n>/``)::

    pool/e-<random>/            a complete entry: data/ (copy of the template), backups/base-000
                                (the template hard-linked: the instance's first base backup), archive/,
                                s/, and POOL (the stamp: Postgres version and template it was made for)
    pool/.tmp-<random>/         an entry being made (never taken; removed by the next refill)
    pool/refill.lock            held (flock) by the one refill working on this pool

Restores take entries too (``Pool.take_copy_of``): the entry's cluster is rewritten, file by file in
place, into a copy of the base backup being restored. Why: the entry's files already exist, and on
this machine's ext4 creating a file costs ~0.6 ms (writing into an existing one ~0.04 ms), so placing a
~1000-file base by ``cp -a`` took 0.5-0.7 s of a ~1.8 s restore, by rewrite ~0.05 s. The result is the
base, byte for byte, whatever the entry held (its files not in the base are removed, missing ones made,
each file truncated to the base's size), so an entry of another template would do as well.

An entry is used only if its stamp equals the current one (the full server version, and the
template's identity: its READY file's content and modification time, which change when the
template is rebuilt); any other entry is removed. A refill writes an entry under a ``.tmp-`` name
and renames it into the pool only once complete and stamped, so a refill killed half-way leaves
nothing usable. The refill runs in a detached process (``python -m pulumi_dbos.engine.local.workers_run
refill``): a Pulumi provider exits right after its calls, and a thread would die with it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path

from .. import pgbin, proc
from .paths import Layout
from .workers import spawn_worker, try_lock

log = logging.getLogger("pulumi_dbos.engine")

STAMP = "POOL"
REFILL_LOCK = "refill.lock"
_OWN_FILES = (REFILL_LOCK, "refill.log")


class Pool:
    """The pool of one template (``template`` is the template's ``data`` directory)."""

    def __init__(self, layout: Layout, template: Path, size: int) -> None:
        self.layout, self.template, self.size = layout, template, size
        self.dir = template.parent / "pool"

    @property
    def stamp(self) -> str:
        """What an entry must say to be used: this server version and this very template."""
        ready = self.template.parent / "READY"
        st = ready.stat()
        return f"{pgbin.server_version()}|{ready.read_text().strip()}|{st.st_mtime_ns}|{st.st_ino}\n"

    def entries(self) -> list[Path]:
        try:
            return sorted(p for p in self.dir.iterdir() if p.name.startswith("e-"))
        except FileNotFoundError:
            return []

    @staticmethod
    def _stamp_of(entry: Path) -> str | None:
        try:
            return (entry / STAMP).read_text()
        except OSError:
            return None

    # ---------------------------------------------------------------- taking
    def take(self, inst_dir: Path) -> bool:
        """Move a ready entry to ``inst_dir`` (which must not exist); False when none is ready."""
        if self.size <= 0:
            return False
        want = self.stamp
        for entry in self.entries():
            if self._stamp_of(entry) != want:
                continue  # another version's or template's: the refill removes it
            try:
                os.rename(entry, inst_dir)
            except FileNotFoundError:
                continue  # taken by another call a moment ago
            if self._stamp_of(inst_dir) != want:  # replaced between the check and the rename: not ours
                shutil.rmtree(inst_dir, ignore_errors=True)
                continue
            (inst_dir / STAMP).unlink()
            return True
        return False

    def take_copy_of(self, inst_dir: Path, src: Path) -> bool:
        """Take an entry to ``inst_dir`` and make its ``data`` a copy of the cluster directory ``src`` (a base
        backup) by rewriting it in place (:func:`rewrite_tree`); its own first backup goes. False (and
        nothing left at ``inst_dir``) when no entry is ready or ``src`` holds more than directories and
        regular files (a tablespace link, say): the caller copies."""
        if not self.take(inst_dir):
            return False
        try:
            shutil.rmtree(inst_dir / "backups" / "base-000")  # the template's links: not this instance's
            rewrite_tree(src, inst_dir / "data", self.layout.run_as.uid if self._chown else None,
                         self.layout.run_as.gid)
        except NotPlainTree as exc:
            log.info("restore without the warm pool: %s", exc)
            shutil.rmtree(inst_dir, ignore_errors=True)
            return False
        except BaseException:
            shutil.rmtree(inst_dir, ignore_errors=True)
            raise
        return True

    @property
    def _chown(self) -> bool:
        return os.geteuid() == 0 and bool(self.layout.run_as.user)

    # ---------------------------------------------------------------- refilling
    def wanted(self) -> bool:
        """Entries are missing, or some are stale (another version or template) or half-made."""
        if self.size <= 0:
            return False
        try:
            names = [p.name for p in self.dir.iterdir()]
        except FileNotFoundError:
            return True
        want = self.stamp
        good = [n for n in names if n.startswith("e-") and self._stamp_of(self.dir / n) == want]
        return len(good) < self.size or len(good) != len([n for n in names if n not in _OWN_FILES])

    def spawn_refill(self) -> None:
        """Start a detached refill unless the pool is full or a refill already runs (best effort)."""
        if not self.wanted():
            return
        try:
            self.layout.mkdir(self.dir)
            with try_lock(self.dir / REFILL_LOCK) as free:
                if not free:
                    return  # one is at work
            spawn_worker(self.layout, ["refill", str(self.template), str(self.size)], cwd=self.dir,
                         log_file=self.dir / "refill.log")
        except OSError as exc:
            log.warning("could not start the pool's refill in %s: %s", self.dir, exc)

    @contextlib.contextmanager
    def refilling(self, *, worker: bool = False) -> Iterator[bool]:
        """The refill lock (yields False when another process holds it)."""
        self.layout.mkdir(self.dir)
        with try_lock(self.dir / REFILL_LOCK, record_pid=worker) as mine:
            yield mine

    def refill(self) -> int:
        """Under the refill lock: remove stale and half-made entries, make entries until ``size`` are ready.
        Returns how many were made."""
        made = 0
        with self.refilling(worker=True) as mine:
            if not mine:
                return 0
            want = self.stamp
            for other in self.dir.parent.parent.glob("*/pool"):
                if other != self.dir:  # another Postgres version's or WAL size's template: its pool is dead weight
                    shutil.rmtree(other, ignore_errors=True)
            for p in list(self.dir.iterdir()):
                if p.name in _OWN_FILES:
                    continue
                if p.name.startswith("e-") and self._stamp_of(p) == want:
                    continue
                # half-made by a killed refill, or another version's/template's: out of the pool first
                # (a rename, so that no taker can get it while it is being removed)
                trash = self.dir / f".trash-{secrets.token_hex(6)}"
                with contextlib.suppress(FileNotFoundError):
                    os.rename(p, trash)
                    shutil.rmtree(trash, ignore_errors=True)
            while len(self.entries()) < self.size and (self.template.parent / "READY").exists():
                self._make_one(want)
                made += 1
        return made

    def _make_one(self, want: str) -> None:
        token = secrets.token_hex(8)
        tmp = self.dir / f".tmp-{token}"
        try:
            self.layout.mkdir(tmp)
            for sub in ("archive", "backups", "s"):
                self.layout.mkdir(tmp / sub)
            proc.run(["cp", "-a", str(self.template), str(tmp / "data")], run_as=self.layout.run_as, timeout=300)
            proc.run(["cp", "-al", str(self.template), str(tmp / "backups" / "base-000")],
                     run_as=self.layout.run_as, timeout=300)
            (tmp / STAMP).write_text(want)
            self.layout.own(tmp / STAMP, 0o600)
            os.rename(tmp, self.dir / f"e-{token}")  # complete: only now can it be taken
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise


class NotPlainTree(Exception):
    """The tree to copy holds something :func:`rewrite_tree` does not copy (a symlink, a device)."""


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def rewrite_tree(src: Path, dst: Path, uid: int | None, gid: int) -> None:
    """Make the directory ``dst`` hold exactly what ``src`` holds (names, bytes, permission bits), writing
    into the files ``dst`` already has instead of making new ones where the names match.

    Every step is relative to an open directory and refuses symlinks (``O_NOFOLLOW``), so nothing
    outside ``dst`` is ever written or removed, whoever runs it. Files and directories made here get
    ``uid``/``gid`` when ``uid`` is given (the engine runs as root, the clusters as their user).
    Raises :class:`NotPlainTree` when ``src`` holds anything but directories and regular files.
    """
    sfd = os.open(src, _DIR_FLAGS)
    try:
        dfd = os.open(dst, _DIR_FLAGS)
        try:
            _rewrite_dir(sfd, dfd, str(src), uid, gid)
        finally:
            os.close(dfd)
    finally:
        os.close(sfd)


def _rewrite_dir(sfd: int, dfd: int, where: str, uid: int | None, gid: int) -> None:
    have = {e.name: e for e in os.scandir(dfd)}
    for e in os.scandir(sfd):
        old = have.pop(e.name, None)
        if e.is_dir(follow_symlinks=False):
            if old is not None and not old.is_dir(follow_symlinks=False):
                os.unlink(e.name, dir_fd=dfd)
                old = None
            mode = stat.S_IMODE(e.stat(follow_symlinks=False).st_mode)
            if old is None:
                os.mkdir(e.name, mode, dir_fd=dfd)
            child_s = os.open(e.name, _DIR_FLAGS, dir_fd=sfd)
            try:
                child_d = os.open(e.name, _DIR_FLAGS, dir_fd=dfd)
                try:
                    os.fchmod(child_d, mode)
                    if uid is not None and old is None:
                        os.fchown(child_d, uid, gid)
                    _rewrite_dir(child_s, child_d, f"{where}/{e.name}", uid, gid)
                finally:
                    os.close(child_d)
            finally:
                os.close(child_s)
        elif e.is_file(follow_symlinks=False):
            if old is not None and not old.is_file(follow_symlinks=False):
                _remove(old, dfd)
                old = None
            _rewrite_file(sfd, dfd, e.name, old is None, uid, gid)
        else:
            raise NotPlainTree(f"{where}/{e.name} is neither a directory nor a regular file")
    for extra in have.values():  # in the entry, not in the base
        _remove(extra, dfd)


def _rewrite_file(sfd: int, dfd: int, name: str, new: bool, uid: int | None, gid: int) -> None:
    src = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=sfd)
    try:
        st = os.fstat(src)
        mode = stat.S_IMODE(st.st_mode)
        flags = os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC | (os.O_CREAT | os.O_EXCL if new else 0)
        dst = os.open(name, flags, mode, dir_fd=dfd)
        try:
            if not stat.S_ISREG(os.fstat(dst).st_mode):
                raise NotPlainTree(f"{name} in the entry is not a regular file")
            off = 0
            while off < st.st_size:
                try:
                    n = os.copy_file_range(src, dst, st.st_size - off, off, off)
                except OSError:  # not supported between these files: read and write
                    n = os.pwrite(dst, os.pread(src, min(1 << 20, st.st_size - off), off), off)
                if n == 0:
                    break  # the source shrank: a base backup never does
                off += n
            os.ftruncate(dst, off)
            if new and uid is not None:
                os.fchown(dst, uid, gid)
            os.fchmod(dst, mode)
        finally:
            os.close(dst)
    finally:
        os.close(src)


def _remove(entry: os.DirEntry[str], dfd: int) -> None:
    if entry.is_dir(follow_symlinks=False):
        shutil.rmtree(entry.name, dir_fd=dfd)
    else:
        os.unlink(entry.name, dir_fd=dfd)
