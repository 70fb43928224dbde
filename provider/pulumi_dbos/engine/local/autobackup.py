"""Base backups by WAL volume: a restore replays not much more than ``PULUMI_DBOS_WAL_BACKUP_MB`` of WAL.

Once that much WAL (default 128 MB; 0 turns this off) has been archived since an instance's newest
base backup, and at least as much as that backup's size (a backup copies the whole cluster: for a big
database, never more copying than WAL written), a new one is taken (and old ones pruned as after any
backup, ``Pitr.backup``), besides ``pulumi-dbos db backup`` and serve's hourly schedule. 128 MB of WAL
replays in 1-3 s on a small machine; a restore replays at most that plus what was written during the
newest backup and one check interval.

Where it runs: the embedded engine has no daemon, and WAL is written when no engine call runs (the
instances' clients write it). So every engine call that starts a server makes sure a *watcher* runs
for its data dir: a detached process (``python -m pulumi_dbos.engine.local.workers_run watch``), one
per data dir (a lock file), that every ``PULUMI_DBOS_WAL_CHECK_SECONDS`` (default 2) adds up the
archive's segments since each running instance's newest backup, and exits once none of the data
dir's instances runs (nothing writes WAL then; the next start starts it again) or the data dir is
gone. It runs as the engine's user, backups as the cluster user (as ``db backup`` does). Rejected:
checking only at engine calls (a write load between two ``pulumi up`` would never be bounded), and
an ``archive_command`` hook (it runs as the cluster user, who must not write the catalog). Under
``pulumi-dbos serve`` each organization's data dir gets its watcher the same way.

One backup at a time per host (for the engine's OS user): a lock file in ``PULUMI_DBOS_LOCK_DIR``
(default the system's temporary directory); a busy host skips a round. A backup of an instance
holds that instance's ``backup.lock``, which ``destroy`` waits for.

High-availability instances (``engine/ha``) by the same rule, in the same rounds: their members run rather
than a server of the instance's own, their WAL is measured on the current leader and their backup taken from
it into the instance's stanza (``ha.restores``), whichever member leads after a failover. One round is
:func:`watch_once` (the tests drive it directly).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from .. import settings
from ..contract import Status
from .catalog import Catalog, InstanceRecord
from .paths import Layout
from .pitr import Pitr, instance_lock
from .repo import Repository
from .server import Server, alive
from .workers import spawn_worker, try_lock

if TYPE_CHECKING:
    from .context import LocalContext

log = logging.getLogger("pulumi_dbos.engine")

_SEGMENT = re.compile(r"^[0-9A-F]{24}$")
_HISTORY = re.compile(r"^[0-9A-F]{8}\.history$")
WATCH_LOCK = "wal-watch.lock"
#: how often the watcher removes destroyed instances' backups whose keep-until has passed
EXPIRY_SECONDS = 600

_sizes: dict[str, int] = {}  # a base backup's size, by path (they never change)


def threshold_mb() -> int:
    return settings.from_env().wal_backup_mb


def check_seconds() -> float:
    return settings.from_env().wal_check_seconds


def _tree_size(path: str) -> int:
    if path not in _sizes:
        total = 0
        for top, _dirs, files in os.walk(path):
            for f in files:
                with contextlib.suppress(OSError):
                    total += os.lstat(os.path.join(top, f)).st_size
        _sizes[path] = total
    return _sizes[path]


def limit_for(catalog: Catalog, name: str) -> int:
    """Bytes of WAL after which ``name`` gets a new base backup: the threshold, or the size of its newest
    backup if larger (a backup copies the whole cluster: never more copying than WAL written)."""
    limit = threshold_mb() * 1024 * 1024
    backups = catalog.backups(name)
    if backups:
        limit = max(limit, _tree_size(backups[-1].path))
    return limit


def wal_since_backup(layout: Layout, catalog: Catalog, name: str) -> int:
    """Bytes of WAL a restore from ``name``'s newest base backup would replay at most: one segment per
    position (log/segment) after the backup's start, up to the newest position of the newest timeline (a
    restored instance's archive also holds its source's segments of older timelines past the fork, which
    no replay of its own reads)."""
    backups = catalog.backups(name)
    start = backups[-1].start_wal[8:] if backups and _SEGMENT.match(backups[-1].start_wal or "") else ""
    sizes: dict[str, int] = {}
    newest = ("", "")  # (timeline, position) of the newest timeline's newest segment
    try:
        with os.scandir(layout.archive(name)) as it:
            for e in it:
                if _SEGMENT.match(e.name):
                    newest = max(newest, (e.name[:8], e.name[8:]))
                    if e.name[8:] > start:
                        with contextlib.suppress(OSError):
                            sizes[e.name[8:]] = e.stat().st_size
                elif _HISTORY.match(e.name):
                    newest = max(newest, (e.name[:8], ""))
    except OSError:
        return 0
    return sum(size for pos, size in sizes.items() if pos <= newest[1])


def host_lock_path() -> Path:
    return (settings.from_env().lock_dir or Path(tempfile.gettempdir())) / \
        f"pulumi-dbos-{os.geteuid()}-wal-backup.lock"


_spawned: dict[Path, int] = {}  # data dir -> the watcher this process last started there


def spawn_watcher(layout: Layout) -> None:
    """Make sure a watcher runs for this data dir (best effort: a failure only logs). A watcher takes its lock
    only once its interpreter has started (~0.3 s): while the one this process started last is alive, it
    does not start another (a `db list` of many instances would start one per instance)."""
    pid = _spawned.get(layout.data_dir)
    if pid is not None and alive(pid):
        return
    try:
        with try_lock(layout.data_dir / WATCH_LOCK) as free:
            if not free:
                return  # one runs
        instances = layout.data_dir / "instances"
        _spawned[layout.data_dir] = spawn_worker(layout, ["watch"], cwd=instances,
                                                 log_file=layout.data_dir / "wal-watch.log")
    except OSError as exc:
        log.warning("could not start the WAL-volume backup watcher of %s: %s", layout.data_dir, exc)


def sweep_orphans(layout: Layout, catalog: Catalog, server: Server, rec: InstanceRecord) -> None:
    """What a killed base backup of ``rec`` left (only while nothing backs it up: its lock, not waited for)."""
    with instance_lock(layout, rec.name, wait=0) as mine:
        if mine:
            Pitr(layout, catalog, server).remove_orphans(rec.name)


def _ha_context(layout: Layout, name: str) -> LocalContext | None:
    """A context over ``layout`` when ``name`` is an HA instance (``ha`` works on one), else None."""
    from ..ha import members  # ha -> local: imported when used
    from .context import LocalContext
    ctx = _contexts.get(layout.data_dir)
    if ctx is None:
        ctx = _contexts[layout.data_dir] = LocalContext(layout.data_dir, run_as=layout.run_as.user or False, pool=0)
    return ctx if members.enabled(ctx, name) else None


_contexts: dict[Path, LocalContext] = {}


def _wal(layout: Layout, catalog: Catalog, rec: InstanceRecord, ctx: LocalContext | None) -> int | None:
    """WAL written since ``rec``'s newest backup: its local archive's, or an HA instance's leader's (None: no
    leader answers now)."""
    if ctx is not None:
        from ..ha import restores as ha_backups
        return ha_backups.wal_since_backup(ctx, rec.name)
    return wal_since_backup(layout, catalog, rec.name)


def _due(layout: Layout, catalog: Catalog, server: Server) -> tuple[list[InstanceRecord], bool]:
    """(instances over their limit, whether any instance runs)."""
    due, running = [], False
    for rec in catalog.all():
        if rec.linked or rec.status != Status.AVAILABLE.value:
            continue
        ctx = _ha_context(layout, rec.name)
        if ctx is not None:
            from ..ha import restores as ha_backups
            if not ha_backups.members_running(ctx, rec.name):
                continue
        elif not server.running(rec.name):
            continue
        else:
            with contextlib.suppress(Exception):
                sweep_orphans(layout, catalog, server, rec)
        running = True
        if ctx is None and rec.stanza and rec.repo_backup_at is None:
            due.append(rec)  # its first repository backup (``first_repo_backup``)
            continue
        if threshold_mb() <= 0:
            continue
        wal = _wal(layout, catalog, rec, ctx)
        if wal is not None and wal >= threshold_mb() * 1024 * 1024 and wal >= limit_for(catalog, rec.name):  # the cheap test first
            due.append(rec)
    return due, running


def first_repo_backup(layout: Layout, catalog: Catalog, server: Server, rec: InstanceRecord) -> bool:
    """A new instance's first backup into the repository (full), taken here, seconds after its create, not in
    the create itself (which it would make ~2 s slower): until then only its local cache can restore it."""
    with instance_lock(layout, rec.name, wait=0) as mine:
        current = catalog.get(rec.name)
        if not mine or current is None or current.repo_backup_at is not None:
            return False
        b = Pitr(layout, catalog, server).repo_backup(current)
        log.info("first repository backup %s of %s", b.label if b else None, rec.name)
        return True


def backup_if_due(layout: Layout, catalog: Catalog, server: Server, rec: InstanceRecord) -> bool:
    """Take a base backup of ``rec`` if it is still over the limit, holding the host's lock and the
    instance's (both taken without waiting: False when busy, tried again next round). An HA instance's is a
    repository backup from its current leader."""
    with try_lock(host_lock_path()) as host:
        if not host:
            return False
        ctx = _ha_context(layout, rec.name)
        wal = _wal(layout, catalog, rec, ctx)
        if wal is None or wal < limit_for(catalog, rec.name):
            return False  # taken meanwhile (db backup, serve's schedule), or no leader right now
        with instance_lock(layout, rec.name, wait=0) as mine:
            if not mine or catalog.get(rec.name) is None:
                return False
            if ctx is not None:
                from ..ha import restores as ha_backups
                rb = ha_backups._backup(ctx, rec.name)
                log.info("repository backup %s of HA instance %s (WAL volume)", rb.label, rec.name)
                return True
            b = Pitr(layout, catalog, server).backup(rec, locked=True)
            log.info("base backup %s of %s (WAL volume)", b.backup_id, rec.name)
            return True


def watch_once(layout: Layout, catalog: Catalog, server: Server) -> bool:
    """One round of the watcher: the backups due, taken; False when none of the data dir's instances runs."""
    due, running = _due(layout, catalog, server)
    for rec in due:
        try:
            if rec.stanza and rec.repo_backup_at is None and _ha_context(layout, rec.name) is None:
                first_repo_backup(layout, catalog, server, rec)
            else:
                backup_if_due(layout, catalog, server, rec)
        except Exception as exc:  # one instance's trouble (destroyed meanwhile) stops nothing
            log.warning("WAL-volume backup of %s failed: %s", rec.name, exc)
    return running


def watch(layout: Layout) -> None:
    """The watcher's loop (see the module's docstring)."""
    lock_file = layout.data_dir / WATCH_LOCK
    server = Server(layout)
    next_expiry = time.monotonic() + 60
    while True:
        with try_lock(lock_file, record_pid=True) as mine:
            if not mine:
                return
            while layout.catalog_file.exists():
                if not watch_once(layout, Catalog(layout.data_dir), server):
                    break
                if time.monotonic() >= next_expiry:  # destroyed instances past their keep-until
                    next_expiry = time.monotonic() + EXPIRY_SECONDS
                    try:
                        Repository(layout).expire_deleted()
                    except Exception as exc:
                        log.warning("expiring destroyed instances' backups failed: %s", exc)
                time.sleep(check_seconds())
            else:
                return  # the data dir is gone
        # released; a server started just now would have found the lock taken: look once more
        if not layout.catalog_file.exists() or not _due(layout, Catalog(layout.data_dir), server)[1]:
            return
