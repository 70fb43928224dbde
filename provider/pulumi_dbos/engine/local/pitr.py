"""Backups, retention and point-in-time recovery from the archived WAL.

Restore = newest base backup finished before the target + WAL replay from the source's archive
to ``recovery_target_time``, then promote, into a new cluster with its own port and archive.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
from contextlib import AbstractContextManager
from datetime import datetime, timedelta
from pathlib import Path

from ...errors import EngineError
from ...timeutil import parse_rfc3339, to_pg, to_rfc3339, utcnow
from .. import pgbin, proc
from ..contract import BackupInfo
from ..locks import file_lock
from ..waits import wait_until
from .catalog import BackupRecord, Catalog, InstanceRecord
from .paths import Layout
from .pool import Pool
from .repo import RepoBackup, Repository
from .server import ADMIN_OPTIONS, ADMIN_ROLE, Server

log = logging.getLogger("pulumi_dbos.engine")

#: a WAL segment's file name (timeline, log, segment) and a timeline history file's
_SEGMENT = re.compile(r"^[0-9A-F]{24}$")
_HISTORY = re.compile(r"^[0-9A-F]{8}\.history$")
#: transaction ids :meth:`Pitr.archive_now` takes on the source (restore drills tell its own from the users')
ARCHIVE_NOW_XIDS = 2


def _positions(start: str, end: str, segment_bytes: int) -> list[str]:
    """Segment positions (the 16 hex digits after the timeline) from ``start`` to ``end``, both included."""
    per_log = 0x100000000 // segment_bytes
    def number(p: str) -> int:
        return int(p[:8], 16) * per_log + int(p[8:], 16)
    return [f"{n // per_log:08X}{n % per_log:08X}" for n in range(number(start), number(end) + 1)]


def instance_lock(layout: Layout, name: str, wait: float) -> AbstractContextManager[bool]:
    """The lock a base backup of ``name`` holds (across threads and processes: the WAL-volume watcher is
    a process of its own); ``destroy`` takes it too, so that no backup writes into a directory being
    removed. Yields False when it was not free within ``wait`` seconds (or the instance has no directory)."""
    return file_lock(layout.inst_dir(name) / "backup.lock", wait=wait)


class Pitr:
    def __init__(self, layout: Layout, catalog: Catalog, server: Server) -> None:
        self.layout, self.catalog, self.server = layout, catalog, server
        self.repo = Repository(layout, server.repo_settings)

    # ---------------------------------------------------------------- the backup repository
    def repo_backup(self, rec: InstanceRecord) -> RepoBackup | None:
        """A backup of a running ``rec`` into the repository: full when it has none, else incremental.
        The annotations make the repository self-describing (``repo``). None: ``rec`` has no stanza
        (made before the repository existed: ``ensure_stanza`` first)."""
        stanza = rec.stanza or self.layout.stanza(rec.name)
        if not stanza:
            return None
        notes = {"instance": rec.name, "username": rec.username, "kind": rec.kind.value,
                 "retention-hours": str(rec.retention_hours), "port": str(rec.port),
                 "created-at": rec.created_at or "", **({"source": rec.source} if rec.source else {})}
        b = self.repo.backup(stanza, self.layout.pgdata(rec.name), self.layout.sockdir(rec.name), rec.port,
                             full=rec.repo_backup_at is None, annotations=notes, retention_hours=rec.retention_hours)
        self.catalog.update(rec.name, repo_backup_at=to_rfc3339(b.stopped))
        rec.repo_backup_at = to_rfc3339(b.stopped)
        return b

    # ---------------------------------------------------------------- backups and retention
    def backup(self, rec: InstanceRecord, *, locked: bool = False) -> BackupInfo:
        """A base backup now (then pruning), holding the instance's backup lock (``locked``: held already)."""
        if not locked:
            with instance_lock(self.layout, rec.name, self.server.settings.recovery_timeout) as mine:
                if not mine:
                    raise EngineError(f"a base backup of {rec.name!r} is still running",
                                      hint="try again once it is done")
                return self.backup(rec, locked=True)
        name, port = rec.name, rec.port
        self.remove_orphans(name)
        backup_id = "base-" + utcnow().strftime("%Y%m%dT%H%M%S%f")
        bdir = self.layout.backups(name) / backup_id
        with self.server.admin(name, port) as conn:
            started: datetime = conn.execute("SELECT pg_catalog.clock_timestamp()").fetchone()[0]  # type: ignore[index]
        try:
            proc.run([pgbin.tool("pg_basebackup"), "-h", str(self.layout.sockdir(name)), "-p", str(port),
                      "-U", ADMIN_ROLE, "-D", str(bdir), "-Fp", "-X", "none", "-c", "fast"],
                     run_as=self.layout.run_as, timeout=self.server.settings.recovery_timeout,
                     env=proc.clean_env({"PGOPTIONS": ADMIN_OPTIONS}, run_as=self.layout.run_as))
        except BaseException:
            shutil.rmtree(bdir, ignore_errors=True)
            raise
        m = re.search(r"START WAL LOCATION: \S+ \(file (\S+)\)", (bdir / "backup_label").read_text())
        with self.server.admin(name, port) as conn:
            # consistent once the WAL up to its end is archived (pg_basebackup waited for it)
            finished: datetime = conn.execute("SELECT pg_catalog.clock_timestamp()").fetchone()[0]  # type: ignore[index]
        record = BackupRecord(name, backup_id, to_rfc3339(started), to_rfc3339(finished), str(bdir),
                              m.group(1) if m else "")
        self.catalog.add_backup(record)
        self.repo_backup(rec)
        self.prune(rec)
        return BackupInfo(name, backup_id, record.started_at, record.finished_at)

    def remove_orphans(self, name: str) -> list[str]:
        """Remove what a killed base backup left (a ``base-*`` directory the catalog does not list). Only
        with the instance's backup lock held (``backup``; the watcher takes it): no backup is being written."""
        listed = {Path(b.path).name for b in self.catalog.backups(name)}
        gone = []
        with contextlib.suppress(OSError):
            for d in self.layout.backups(name).iterdir():
                if d.name.startswith("base-") and d.name not in listed and not d.is_symlink() and d.is_dir():
                    shutil.rmtree(d, ignore_errors=True)
                    gone.append(d.name)
        if gone:
            log.warning("instance %r: removed %s left by a base backup that did not finish", name, ", ".join(gone))
        return gone

    def prune(self, rec: InstanceRecord) -> None:
        """Drop base backups and WAL no longer needed to restore anywhere in the retention window."""
        backups = self.catalog.backups(rec.name)
        if not backups:
            return
        window_start = to_rfc3339(utcnow() - timedelta(hours=rec.retention_hours))
        # keep the newest backup finished at or before the window start, and everything after
        keep_from = max((i for i, b in enumerate(backups) if b.finished_at <= window_start), default=0)
        for b in backups[:keep_from]:
            shutil.rmtree(b.path, ignore_errors=True)
            self.catalog.delete_backup(rec.name, b.backup_id)
        oldest = backups[keep_from]
        if keep_from and oldest.start_wal:
            proc.run([pgbin.tool("pg_archivecleanup"), str(self.layout.archive(rec.name)), oldest.start_wal],
                     run_as=self.layout.run_as, timeout=120)

    # ---------------------------------------------------------------- the restorable window
    def earliest(self, rec: InstanceRecord) -> str | None:
        """When the user's role was committed, or the end of the oldest kept backup from which the WAL chain
        is whole up to now (a segment missing from the local cache *and* the repository cuts the window:
        nothing before it can be replayed past it), if later."""
        backups = self.catalog.backups(rec.name)
        candidates = [rec.earliest] if rec.earliest else []
        if backups:
            gaps = self.gaps(rec)
            whole = [b for b in backups if not any(g[8:] > b.start_wal[8:] for g in gaps)] if gaps else backups
            candidates.append((whole[0] if whole else backups[-1]).finished_at)
        return max(candidates) if candidates else None

    def gaps(self, rec: InstanceRecord) -> list[str]:
        """WAL segments missing from the chain between the oldest kept backup's start and the newest archived
        segment: missing from the local cache (checked first: cheap) and then from the repository too."""
        backups = self.catalog.backups(rec.name)
        if not backups or not _SEGMENT.match(backups[0].start_wal or ""):
            return []
        local = self._cached_positions(rec.name)
        if not local:
            return []
        start, newest = backups[0].start_wal[8:], max(local)
        missing = [p for p in _positions(start, newest, self._segment_bytes(rec.name)) if p not in local]
        if not missing:
            return []
        stanza = rec.stanza or self.layout.stanza(rec.name)
        in_repo = {s[8:] for s in self.repo.segments(stanza)} if stanza else set()
        tl = backups[-1].start_wal[:8]
        return [tl + p for p in missing if p not in in_repo]

    def gaps_in_cache(self, name: str, base: BackupRecord) -> bool:
        """Whether the local cache misses a segment after ``base``'s start (then a restore asks the repository)."""
        local = self._cached_positions(name)
        if not local or not _SEGMENT.match(base.start_wal or ""):
            return bool(base.start_wal)
        return any(p not in local for p in _positions(base.start_wal[8:], max(local), self._segment_bytes(name)))

    def _segment_bytes(self, name: str) -> int:
        """The size of ``name``'s WAL segments (fixed when its template was made): a cached segment's."""
        with contextlib.suppress(OSError), os.scandir(self.layout.archive(name)) as it:
            for e in it:
                if _SEGMENT.match(e.name):
                    return e.stat().st_size
        return self.layout.wal_segment_bytes

    def _cached_positions(self, name: str) -> set[str]:
        try:
            with os.scandir(self.layout.archive(name)) as it:
                return {e.name[8:] for e in it if _SEGMENT.match(e.name)}
        except OSError:
            return set()

    def last_archived_time(self, name: str) -> str | None:
        try:
            mtimes = [p.stat().st_mtime for p in self.layout.archive(name).iterdir()
                      if not p.name.endswith(".part")]
        except OSError:
            return None
        return to_rfc3339(datetime.fromtimestamp(max(mtimes)).astimezone()) if mtimes else None

    def archive_now(self, name: str, port: int) -> datetime:
        """Write a commit record stamped now, switch WAL, wait until the segment is archived."""
        with self.server.admin(name, port) as conn:
            with conn.transaction():
                conn.execute("SELECT pg_catalog.pg_current_xact_id()")
            now: datetime = conn.execute("SELECT pg_catalog.clock_timestamp()").fetchone()[0]  # type: ignore[index]
            with conn.transaction():
                conn.execute("SELECT pg_catalog.pg_current_xact_id()")
            seg = conn.execute("SELECT pg_catalog.pg_walfile_name(pg_catalog.pg_switch_wal() - 1)").fetchone()[0]  # type: ignore[index]
        self.wait_archived(name, port, seg)
        return now

    def wait_archived(self, name: str, port: int, seg: str) -> None:
        """Until PostgreSQL's archiver has archived ``seg`` (the local cache and the repository: one
        ``archive_command``); its last failure is shown when it does not."""
        def archived() -> bool:
            with self.server.admin(name, port) as conn:
                row = conn.execute("SELECT last_archived_wal FROM pg_catalog.pg_stat_archiver").fetchone()
            last: str = (row[0] if row else None) or ""
            return _SEGMENT.match(last[:24]) is not None and last[:24] >= seg

        def failure() -> str:
            with contextlib.suppress(EngineError), self.server.admin(name, port) as conn:
                row = conn.execute("SELECT last_failed_wal, last_failed_time FROM pg_catalog.pg_stat_archiver").fetchone()
                if row and row[0]:
                    return f" (last failure: {row[0]} at {row[1]}; see the server log)"
            return ""

        try:
            wait_until(archived, self.server.settings.start_timeout, f"WAL segment {seg} of {name!r} was not archived",
                       interval=0.02)
        except EngineError as exc:
            raise EngineError(exc.message + failure(),
                              hint="check archive_command errors in the instance's server.log: is the backup "
                                   "repository reachable?") from None

    def base_for(self, source: str, target: datetime, *, missing_ok: bool = False) -> BackupRecord | None:
        base = None
        for b in self.catalog.backups(source):
            if parse_rfc3339(b.finished_at) <= target and Path(b.path).is_dir():
                base = b
        if base is None and missing_ok:
            return None
        if base is None:
            raise EngineError(f"no base backup of {source!r} finished before {to_rfc3339(target)}")
        return base

    # ---------------------------------------------------------------- recovery
    def place_base(self, name: str, base: BackupRecord, pool: Pool | None) -> None:
        """``name``'s directories, its cluster a copy of ``base``: a warm-pool entry rewritten into the base
        (``Pool.take_copy_of``: no file made that the entry has already) or, without one, ``cp -a``."""
        if pool is not None and pool.take_copy_of(self.layout.inst_dir(name), Path(base.path)):
            log.info("restore into %s: base %s written over a warm-pool entry", name, base.backup_id)
            return
        log.info("restore into %s: base %s copied", name, base.backup_id)
        self.layout.make_instance_dirs(name)
        proc.run(["cp", "-a", base.path, str(self.layout.pgdata(name))], run_as=self.layout.run_as,
                 timeout=self.server.settings.recovery_timeout)

    def recover(self, source: str, name: str, port: int, base: BackupRecord, target: datetime) -> None:
        """Replay ``source``'s WAL over ``name``'s cluster (a copy of ``base``: :meth:`place_base`) to
        ``target``, promote.

        The WAL is not copied: the archived segments from the base's start on are hard-linked into the
        new cluster's ``pg_wal`` (with ``archive_status/*.done`` for each, so the new instance never
        archives them again), and ``restore_command`` finds nothing (``false``), so recovery reads them
        where they are. Catches handled: ``wal_recycle = off`` while any link exists (a recycled segment
        is renamed and *overwritten* — the archive's file, through the link; ``Server.write_conf`` says it
        whenever ``pg_wal`` still shares a file, so it holds after the promotion too, until the new
        timeline's checkpoints have deleted the old segments, and comes back on at the next configuration
        written after that); the base's own WAL is removed. The restore does not wait for those
        checkpoints (a synchronous CHECKPOINT flushed every page the replay dirtied: ~0.2 s of a 2 s
        restore). Across filesystems (no hard links), or when the links cannot be made, segments are
        copied by ``restore_command`` as before.
        """
        pgdata = self.layout.pgdata(name)
        for stale in ("postmaster.pid", "instance.conf", "postmaster.opts"):
            with contextlib.suppress(FileNotFoundError):
                (pgdata / stale).unlink()
        linked = self._link_wal(source, base, pgdata)
        log.info("restore of %s into %s: archived WAL %s", source, name, "linked" if linked else "copied")
        restore = "false" if linked else f"cp {self.layout.archive(source)}/%f %p"
        src = self.catalog.get(source)
        stanza = (src.stanza if src else None) or self.layout.stanza(source)
        if stanza and self.gaps_in_cache(source, base):
            # a segment the local cache lacks (removed, never copied) comes from the repository, the truth
            get = self.repo.archive_get_command(stanza, pgdata)
            restore = (f"test ! -f {pgdata}/pg_wal/%f && {get}" if linked
                       else f"{{ cp {self.layout.archive(source)}/%f %p || {get}; }}").replace("'", "''")
        self.server.write_conf(name, port, (
            f"restore_command = '{restore}'\n"
            f"recovery_target_time = '{to_pg(target)}'\n"
            "recovery_target_action = 'promote'\n"
            "recovery_target_timeline = 'latest'\n"
        ))
        signal = pgdata / "recovery.signal"
        signal.touch()
        self.layout.own(signal, 0o600)
        self.server.start(name, port, self.server.settings.recovery_timeout)

        self.wait_promoted(name, port)
        # recovery is over: drop the recovery settings (wal_recycle stays off while links remain), keep
        # archiving to our own archive
        self.server.write_conf(name, port)
        with self.server.admin(name, port) as conn:
            conn.execute("SELECT pg_catalog.pg_reload_conf()")

    def wait_promoted(self, name: str, port: int) -> None:
        """Until ``name``'s server has left recovery (a clear error when it stopped instead)."""
        def promoted() -> bool:
            if not self.server.running(name):
                raise EngineError(f"recovery of {name!r} stopped:\n{self.layout.log_tail(name)}",
                                  hint="the WAL needed to reach the target may be missing from the archive")
            with contextlib.suppress(EngineError), self.server.admin(name, port) as conn:
                return not conn.execute("SELECT pg_catalog.pg_is_in_recovery()").fetchone()[0]  # type: ignore[index]
            return False

        wait_until(promoted, self.server.settings.recovery_timeout, f"recovery of {name!r} did not finish",
                   hint="set PULUMI_DBOS_RECOVERY_TIMEOUT for very large restores", interval=0.02)

    def _link_wal(self, source: str, base: BackupRecord, pgdata: Path) -> bool:
        """Hard-link ``source``'s archived segments from ``base``'s start on (and the timelines' history
        files) into ``pgdata/pg_wal``, each marked archived; False (and nothing left) when it cannot."""
        wal = pgdata / "pg_wal"
        status = wal / "archive_status"
        for p in wal.iterdir():  # the base's own WAL, if it has any: replay reads the archive's
            if p.is_file():
                p.unlink()
        start = base.start_wal[8:] if _SEGMENT.match(base.start_wal or "") else ""
        linked: list[Path] = []
        try:
            status.mkdir(exist_ok=True)
            for f in sorted(self.layout.archive(source).iterdir()):
                if (_SEGMENT.match(f.name) and f.name[8:] >= start) or _HISTORY.match(f.name):
                    os.link(f, wal / f.name)
                    linked.append(wal / f.name)
            for p in linked:
                done = status / f"{p.name}.done"
                done.touch()
                self.layout.own(done, 0o600)
        except OSError:  # another filesystem (EXDEV), links not allowed here: copy instead
            for p in linked:
                p.unlink(missing_ok=True)
                (status / f"{p.name}.done").unlink(missing_ok=True)
            return False
        self.layout.own(status, 0o700)
        return bool(linked)

    def inherit(self, source: str, name: str, base: BackupRecord) -> None:
        """Give a restored instance its own base backup and archive without copying data.

        The source's base backup and WAL files are immutable once written, so hard links are a
        complete, independent copy: with the new timeline's history file (archived at promotion)
        they restore any time after the promotion. Later backups and pruning work on the restored
        instance's own copies only.
        """
        dest = self.layout.backups(name) / f"{base.backup_id}-inherited"
        proc.run(["cp", "-al", base.path, str(dest)], run_as=self.layout.run_as,
                 timeout=self.server.settings.recovery_timeout)
        own_archive = self.layout.archive(name)
        for f in sorted(self.layout.archive(source).iterdir()):
            target = own_archive / f.name
            if f.name.endswith(".part") or target.exists():
                continue
            with contextlib.suppress(FileExistsError):
                try:
                    os.link(f, target)
                except OSError:  # another filesystem: a copy (written beside, renamed: never half a file)
                    tmp = target.with_name(f"{target.name}.part")
                    shutil.copyfile(f, tmp)
                    self.layout.own(tmp, 0o600)
                    os.replace(tmp, target)
        self.catalog.add_backup(BackupRecord(name, dest.name, base.started_at, base.finished_at, str(dest),
                                             base.start_wal))
