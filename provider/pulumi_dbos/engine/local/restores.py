"""Backups and restores on the local engine: a base backup now, the restorable window, point-in-time restore
into a new instance (from the local cache, or from the backup repository alone), bringing a lost instance
back. Functions over a :class:`~.context.LocalContext`; the facade calls them.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ...errors import EngineError, NotFoundError
from ...timeutil import parse_rfc3339, to_rfc3339
from ..contract import BackupInfo, InstanceInfo, Kind, Status
from ..ha.members import drop_member_leftovers
from . import creates, durability, instances, roles
from .catalog import InstanceRecord
from .context import LocalContext
from .drills import is_scratch
from .durability import kept_stanza, repo_window, restore_from_repo
from .pool import Pool
from .template import ready_template

if TYPE_CHECKING:
    import psycopg

log = logging.getLogger("pulumi_dbos.engine")


def backup(ctx: LocalContext, name: str) -> BackupInfo:
    rec = ctx._require_local(name, "backups of linked instances are up to their own server")
    instances.ensure_running(ctx, name)
    return ctx.pitr.backup(rec)


def prune(ctx: LocalContext, name: str) -> None:
    ctx.pitr.prune(ctx._require_local(name, "it has no backups here"))


def restore_window(ctx: LocalContext, name: str) -> tuple[datetime, datetime]:
    rec = ctx.catalog.get(name)
    if rec is None or (not rec.linked and not ctx.has_data(name)):
        window = repo_window(ctx, name)  # lost or destroyed: the repository's
        if window is None:
            raise NotFoundError(f"instance {name!r} does not exist in {ctx.describe()} and the backup "
                                "repository has no restorable backup of it",
                                hint="`pulumi-dbos db list` shows the instances this engine knows")
        return window
    rec = ctx._require_local(name, "it has no WAL archive here to restore from")
    info = ctx._info(rec)
    if info.earliest_restorable_time is None or info.latest_restorable_time is None:
        raise EngineError(f"instance {name!r} has no restorable window yet (status {info.status})",
                          hint="restores need a running source with archived WAL")
    return parse_rfc3339(info.earliest_restorable_time), parse_rfc3339(info.latest_restorable_time)


def restore_to_new(ctx: LocalContext, source: str, name: str, restore_time: str, *, password: str,
                   port: int | None = None, retention_hours: int | None = None,
                   owner: str | None = None) -> InstanceInfo:
    src = ctx.catalog.get(source)
    if src is None or (not src.linked and not ctx.has_data(source)):
        return restore_from_repo_alone(ctx, source, name, restore_time, password=password, port=port,
                                       retention_hours=retention_hours, owner=owner)
    if src.linked:
        raise EngineError(f"cannot restore from {source!r}: it is a linked instance",
                          hint="point-in-time restore needs an instance this engine archives WAL for")
    if not ctx.server.running(source):
        raise EngineError(f"cannot restore from {source!r}: its server is stopped",
                          hint="run `pulumi up` (which starts it) and retry")
    earliest, _ = restore_window(ctx, source)
    archived_to = ctx.pitr.archive_now(source, src.port)
    target = archived_to if restore_time == "latest" else parse_rfc3339(restore_time)
    if target < earliest or target > archived_to:
        raise EngineError(f"restore_time {to_rfc3339(target)} is outside the restorable window of {source!r} "
                          f"[{to_rfc3339(earliest)}, {to_rfc3339(archived_to)}]")
    base = ctx.pitr.base_for(source, target, missing_ok=True)
    if base is None:  # no local base backup before the target (a recovered instance's cache is empty)
        return restore_from_repo_alone(ctx, source, name, restore_time, password=password, port=port,
                                       retention_hours=retention_hours, owner=owner, src=src)
    rec = creates.reserve(ctx, creates.new_record(ctx,
        name, Kind.RESTORED, src.username, Status.RESTORING, retention_hours or src.retention_hours, owner,
        source=source, restored_to=to_rfc3339(target)), port)
    template = ready_template(ctx.layout)
    pool = Pool(ctx.layout, template, ctx.pool_size) if template is not None else None
    with creates.creating(ctx, rec, f"restoring from {source!r} into") as undo:
        undo.push(shutil.rmtree, ctx.inst_dir(name), True)
        ctx.pitr.place_base(name, base, pool)
        if not is_scratch(owner):  # a drill's scratch copy is nobody's data: no repository of its own
            creates.new_stanza(ctx, name, undo)  # its own incarnation: pushes from its promotion on
        undo.push(ctx.server.kill, name)
        creates.on_free_port(ctx, rec, port, lambda p: ctx.pitr.recover(source, name, p, base, target))
        ctx.pitr.inherit(source, name, base)
        finish_restore(ctx, rec, src.username, password)
    if pool is not None:
        pool.spawn_refill()
    ctx._background()
    return ctx._current(name)


def restore_from_repo_alone(ctx: LocalContext, source: str, name: str, restore_time: str, *, password: str,
                       port: int | None, retention_hours: int | None, owner: str | None,
                       src: InstanceRecord | None = None, archive: Callable[[], object] | None = None) -> InstanceInfo:
    """``restore_to_new`` from the repository alone: the source is lost or destroyed, or (``src``, running)
    has no local base backup before the target, or is an HA instance (``archive``: how its newest WAL reaches
    the repository first, default its server's ``archive_now``; ``ha.restores`` passes the leader's)."""
    if src is not None:
        (archive or (lambda: ctx.pitr.archive_now(source, src.port)))()
    window = restore_window(ctx, source) if src is None else repo_window(ctx, source, live=src)
    if window is None:
        raise EngineError(f"instance {source!r} has no backup to restore from yet",
                          hint=f"take one: `pulumi-dbos db backup {source}`")
    target = None if restore_time == "latest" else parse_rfc3339(restore_time)
    if target is not None and not window[0] <= target <= window[1]:
        raise EngineError(f"restore_time {to_rfc3339(target)} is outside the restorable window of {source!r} "
                          f"[{to_rfc3339(window[0])}, {to_rfc3339(window[1])}] (from the backup repository)")
    st = kept_stanza(ctx, source)
    username = src.username if src is not None else (st.annotations.get("username") if st else None) or ""
    rec = creates.reserve(ctx, creates.new_record(ctx,
        name, Kind.RESTORED, username, Status.RESTORING,
        retention_hours or int((st.annotations.get("retention-hours") if st else None) or 24), owner,
        source=source, restored_to=to_rfc3339(target or window[1])), port)
    with creates.creating(ctx, rec, f"restoring from {source!r} (backup repository) into") as undo:
        undo.push(shutil.rmtree, ctx.inst_dir(name), True)
        undo.push(ctx.server.kill, name)

        def own_stanza() -> None:
            # before its server starts: it archives from its promotion on; its first repository backup is the
            # watcher's, as after a provision (it has no local base: its restores use the repository)
            if not is_scratch(owner):
                creates.new_stanza(ctx, name, undo)

        member = restore_from_repo(ctx, source, rec, target, own_stanza)
        finish_restore(ctx, rec, username, password, extra=drop_member_leftovers if member else None)
    ctx._background()
    return ctx._current(name)


def finish_restore(ctx: LocalContext, rec: InstanceRecord, username: str, password: str, *,
                   extra: Callable[[psycopg.Connection[Any]], None] | None = None) -> None:
    """What every restore into a new instance ends with, once its server is promoted: the user's password the
    given one (the role's as of the target may predate a reset), the source's roles as of the target repaired
    (perhaps made by older code: CREATEROLE), ``extra`` (what the data brought that this instance has no use
    for: an HA member's roles), its restorable window starting now, and the instance available."""
    with ctx.server.admin(rec.name, rec.port) as conn:
        roles.set_password(conn, username, password)
        roles.harden(conn, username)
        if extra is not None:
            extra(conn)
        ts = conn.execute("SELECT pg_catalog.clock_timestamp()").fetchone()[0]  # type: ignore[index]
    roles.mark_hardened(ctx.inst_dir(rec.name))
    ctx.catalog.update(rec.name, status=Status.AVAILABLE.value, earliest=to_rfc3339(ts))


def recover(ctx: LocalContext, name: str) -> InstanceInfo:
    """Bring a lost instance back at its newest archived point (``durability.recover``)."""
    durability.recover(ctx, name)
    instances.ensure_running(ctx, name)
    ctx._background()
    return ctx._current(name)

