"""Backups and restores of an HA instance: from its leader into the instance's stanza of the shared
repository, and point-in-time restores out of it (across the timelines failovers made) into a new instance.

Scheduled backups are the local engine's watcher's (``local.autobackup``), by the same WAL-volume rule as a
single server's: its measure here is the WAL the current leader wrote since the newest repository backup's
start (:func:`wal_since_backup`; a single server's counts its local archive, which members do not write),
its backup :func:`_backup` from whichever member leads then, into the same stanza across failovers; pgBackRest
expires what the instance's retention no longer needs after each one, as for a single server.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ...errors import EngineError
from ...timeutil import to_rfc3339, utcnow
from ..contract import BackupInfo, InstanceInfo
from ..waits import wait_until
from . import patroni
from .members import (
    _try_leader,
    admin,
    leader,
    members,
)

if TYPE_CHECKING:
    import psycopg

    from ..local.context import LocalContext

log = logging.getLogger("pulumi_dbos.engine")


def backup_info(ctx: LocalContext, name: str) -> BackupInfo:
    b = backup(ctx, name)
    return BackupInfo(name, b.label, to_rfc3339(b.started), to_rfc3339(b.stopped))


def restore_window(ctx: LocalContext, name: str) -> tuple[datetime, datetime]:
    """From the oldest repository backup's end to now (every member archives into the same stanza)."""
    rec = ctx._require_local(name, "it has no backups here")
    st = ctx.repo.stanza(rec.stanza or ctx.layout.stanza(name) or "")
    if st is None or not st.backups:
        raise EngineError(f"HA instance {name!r} has no repository backup yet",
                          hint=f"take one: `pulumi-dbos db backup {name}`")
    return st.backups[0].stopped, utcnow()


def restore_to_new(ctx: LocalContext, source: str, name: str, restore_time: str, *, password: str,
                   port: int | None = None, retention_hours: int | None = None,
                   owner: str | None = None) -> InstanceInfo:
    """A new (single-server) instance from the HA instance's repository backups and WAL, across its timelines
    (``pgbackrest restore --target-timeline=latest`` follows the history files the leaders archived): the local
    engine's restore from the repository (``local.restores.restore_from_repo_alone``, which makes a member's
    files a single server's and drops the HA roles), the newest WAL archived from the current leader first.
    ``RestoredInstance(high_availability=True)`` turns HA on afterwards (``cluster.enable``)."""
    from ..local.restores import restore_from_repo_alone
    src = ctx._require_local(source, "point-in-time restore needs an instance this engine archives WAL for")
    return restore_from_repo_alone(ctx, source, name, restore_time, password=password, port=port,
                                   retention_hours=retention_hours, owner=owner, src=src,
                                   archive=lambda: archive_now(ctx, source))


# ---------------------------------------------------------------- what a drill reads (``local.drills``)
def admin_of(ctx: LocalContext, name: str) -> Callable[[str], AbstractContextManager[psycopg.Connection[Any]]]:
    """The drill's superuser connections to a database of the instance: on its leader, found anew each time."""
    return lambda db: admin(ctx, name, db)


def has_leader(ctx: LocalContext, name: str) -> bool:
    return _try_leader(ctx, name) is not None


def newest_archived(ctx: LocalContext, name: str) -> list[str]:
    """When the newest WAL segment the leader archived (``pg_stat_archiver``) and the newest repository backup were
    made: a drill's RPO is measured from the later."""
    rec = ctx._require_local(name, "it has no backups here")
    out: list[str] = []
    with contextlib.suppress(EngineError), admin(ctx, name) as conn:
        row = conn.execute("SELECT last_archived_time FROM pg_catalog.pg_stat_archiver").fetchone()
        if row and row[0] is not None:
            out.append(to_rfc3339(row[0]))
    st = ctx.repo.stanza(rec.stanza or ctx.layout.stanza(name) or "")
    if st is not None and st.backups:
        out.append(to_rfc3339(st.backups[-1].stopped))
    return out


def archive_now(ctx: LocalContext, name: str) -> datetime:
    """A commit stamped now, a WAL switch on the leader, and that segment in the repository."""
    with admin(ctx, name) as conn:
        with conn.transaction():
            conn.execute("SELECT pg_catalog.pg_current_xact_id()")
        now: datetime = conn.execute("SELECT pg_catalog.clock_timestamp()").fetchone()[0]  # type: ignore[index]
        with conn.transaction():
            conn.execute("SELECT pg_catalog.pg_current_xact_id()")
        seg: str = conn.execute(  # type: ignore[index]
            "SELECT pg_catalog.pg_walfile_name(pg_catalog.pg_switch_wal() - 1)").fetchone()[0]

    def archived() -> bool:
        with admin(ctx, name) as conn:
            row = conn.execute("SELECT last_archived_wal FROM pg_catalog.pg_stat_archiver").fetchone()
        last = str((row[0] if row else None) or "")
        return len(last) >= 24 and last[:24] >= seg

    wait_until(archived, 60, f"WAL segment {seg} of {name!r} archived into the repository", interval=0.05)
    return now


def backup(ctx: LocalContext, name: str, *, full: bool = False) -> Any:
    """A repository backup taken from the current leader (holding the instance's backup lock)."""
    from ..local.pitr import instance_lock
    with instance_lock(ctx.layout, name, ctx.settings.ha_member_timeout) as mine:
        if not mine:
            raise EngineError(f"a backup of {name!r} is still running", hint="try again once it is done")
        return _backup(ctx, name, full=full)


def _backup(ctx: LocalContext, name: str, *, full: bool = False) -> Any:
    rec = ctx._require_local(name, "backups are of instances this engine runs")
    stanza = rec.stanza or ctx.layout.stanza(name)
    assert stanza
    m = leader(ctx, name)
    # a leader promoted moments ago still has its old timeline in pg_control until the end-of-recovery checkpoint,
    # which PostgreSQL spreads out (minutes): pgBackRest refuses that ("WAL timeline 7 does not match pg_control
    # timeline 4"), so the checkpoint is made now (on the leader: a standby's pg_control is not backed up)
    with admin(ctx, name) as conn:
        conn.execute("CHECKPOINT")
    notes = {"instance": rec.name, "username": rec.username, "kind": rec.kind.value,
             "retention-hours": str(rec.retention_hours), "port": str(rec.port), "created-at": rec.created_at or "",
             "high-availability": "true"}
    b = ctx.repo.backup(stanza, m.pgdata, m.sockdir, m.port, full=full or rec.repo_backup_at is None,
                        annotations=notes, retention_hours=rec.retention_hours)
    ctx.catalog.update(name, repo_backup_at=to_rfc3339(b.stopped))
    return b


_starts: dict[tuple[str, str | None], int] = {}  # (instance, repo_backup_at) -> its newest backup's start LSN


def lsn_bytes(lsn: str) -> int:
    """``X/Y`` (PostgreSQL's and pgBackRest's way of writing a WAL position) as a byte position."""
    hi, _, lo = lsn.partition("/")
    return (int(hi, 16) << 32) | int(lo or "0", 16)


def members_running(ctx: LocalContext, name: str) -> bool:
    """Whether any member of ``name`` runs (it writes WAL then: the watcher stays)."""
    return any(m.running() for m in members(ctx, name))


def wal_since_backup(ctx: LocalContext, name: str) -> int | None:
    """Bytes of WAL the leader has written since the start of the newest repository backup (positions go on
    across timelines: a failover does not reset it); None when no leader answers now (an election: the
    watcher looks again next round)."""
    rec = ctx.catalog.get(name)
    if rec is None:
        return None
    with contextlib.suppress(EngineError):
        m = leader(ctx, name)
        status, body = patroni.get(m, "/patroni")
        location = (body.get("xlog") or {}).get("location")
        if status == 200 and body.get("role") in ("primary", "master") and location is not None:
            return max(0, int(location) - _backup_start(ctx, name, rec.stanza, rec.repo_backup_at))
    return None


def _backup_start(ctx: LocalContext, name: str, stanza: str | None, backup_at: str | None) -> int:
    """The newest repository backup's start (asked of the repository once per backup: ``repo_backup_at`` changes
    with each); 0 without one."""
    key = (name, backup_at)
    if key not in _starts:
        stanza = stanza or ctx.layout.stanza(name)
        st = ctx.repo.stanza(stanza) if stanza else None
        lsn = st.backups[-1].start_lsn if st and st.backups else ""
        _starts[key] = lsn_bytes(lsn) if lsn else 0
    return _starts[key]
