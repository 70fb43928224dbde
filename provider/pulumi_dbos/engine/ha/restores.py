"""Backups and restores of an HA instance: from its leader into the instance's stanza of the shared
repository, and point-in-time restores out of it (across the timelines failovers made) into a new instance.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ...errors import EngineError
from ...timeutil import parse_rfc3339, to_rfc3339, utcnow
from ..contract import BackupInfo, InstanceInfo, Kind, Status
from ..waits import wait_until
from . import patroni
from .members import (
    _try_leader,
    admin,
    leader,
    single_server,
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
    (``pgbackrest restore --target-timeline=latest`` follows the history files the leaders archived)."""
    from psycopg import sql

    from ..local import creates, roles
    from ..local.drills import is_scratch
    from ..local.durability import restore_from_repo
    src = ctx._require_local(source, "point-in-time restore needs an instance this engine archives WAL for")
    earliest, _ = restore_window(ctx, source)
    archived_to = archive_now(ctx, source)
    target = archived_to if restore_time == "latest" else parse_rfc3339(restore_time)
    if not earliest <= target <= archived_to:
        raise EngineError(f"restore_time {to_rfc3339(target)} is outside the restorable window of {source!r} "
                          f"[{to_rfc3339(earliest)}, {to_rfc3339(archived_to)}]")
    rec = creates.reserve(ctx, creates.new_record(
        ctx, name, Kind.RESTORED, src.username, Status.RESTORING, retention_hours or src.retention_hours, owner,
        source=source, restored_to=to_rfc3339(target)), port)
    with creates.creating(ctx, rec, f"restoring from {source!r} (backup repository) into") as undo:
        undo.push(shutil.rmtree, ctx.inst_dir(name), True)
        undo.push(ctx.server.kill, name)

        def own_stanza() -> None:
            single_server(ctx, ctx.pgdata(name))  # the backups are a Patroni member's
            if not is_scratch(owner):
                creates.new_stanza(ctx, name, undo)

        restore_from_repo(ctx, source, rec, target, own_stanza)
        with ctx.server.admin(name, rec.port) as conn:
            roles.set_password(conn, src.username, password)
            roles.harden(conn, src.username)
            # the HA roles came along with the data: a single server has no use for them
            for role in (patroni.REPLICATOR, patroni.REWINDER):
                if conn.execute("SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = %s", (role,)).fetchone():
                    # its grants (on functions of this database), then the role
                    conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
                    conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))
            for (slot,) in conn.execute("SELECT slot_name FROM pg_catalog.pg_replication_slots").fetchall():
                conn.execute("SELECT pg_catalog.pg_drop_replication_slot(%s)", (slot,))
            ts = conn.execute("SELECT pg_catalog.clock_timestamp()").fetchone()[0]  # type: ignore[index]
        roles.mark_hardened(ctx.inst_dir(name))
        ctx.catalog.update(name, status=Status.AVAILABLE.value, earliest=to_rfc3339(ts))
    ctx._background()
    return ctx._current(name)


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
    notes = {"instance": rec.name, "username": rec.username, "kind": rec.kind.value,
             "retention-hours": str(rec.retention_hours), "port": str(rec.port), "created-at": rec.created_at or "",
             "high-availability": "true"}
    b = ctx.repo.backup(stanza, m.pgdata, m.sockdir, m.port, full=full or rec.repo_backup_at is None,
                        annotations=notes, retention_hours=rec.retention_hours)
    ctx.catalog.update(name, repo_backup_at=to_rfc3339(b.stopped))
    return b
