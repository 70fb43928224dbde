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

An entry is used only if its stamp equals the current one (the full server version, and the
template's identity: its READY file's content and modification time, which change when the
template is rebuilt); any other entry is removed. A refill writes an entry under a ``.tmp-`` name
and renames it into the pool only once complete and stamped, so a refill killed half-way leaves
nothing usable. The refill runs in a detached process (``python -m pulumi_dbos.engine.local.workers
refill``): a Pulumi provider exits right after its calls, and a thread would die with it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

from .. import pgbin, proc
from .paths import Layout
from .workers import spawn_worker, try_lock

log = logging.getLogger("pulumi_dbos.engine")

#: entries kept ready per data dir and template (``PULUMI_DBOS_POOL_SIZE``; 0 disables the pool)
DEFAULT_SIZE = 2
STAMP = "POOL"
REFILL_LOCK = "refill.lock"
_OWN_FILES = (REFILL_LOCK, "refill.log")


def pool_size(given: int | None = None) -> int:
    if given is not None:
        return max(0, given)
    try:
        return max(0, int(os.environ.get("PULUMI_DBOS_POOL_SIZE", str(DEFAULT_SIZE))))
    except ValueError:
        return DEFAULT_SIZE


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
