"""The instances' lifecycle on the local engine: provision, take over, start/stop, credentials, retention,
port moves, destroy, linked servers. Functions over a :class:`~.context.LocalContext`; the facade calls them.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import sqlite3
import time

from ...errors import AlreadyExistsError, DbosError, EngineError
from ...timeutil import to_rfc3339, utcnow
from .. import proc
from ..contract import InstanceInfo, Kind, Status
from ..undo import undoing
from . import creates, forward, ports, roles
from .catalog import BackupRecord
from .context import LIFECYCLE_BUSY, LocalContext
from .drills import is_scratch
from .durability import reconcile, retire
from .pitr import instance_lock
from .pool import Pool
from .template import template_wal

log = logging.getLogger("pulumi_dbos.engine")


def provision(ctx: LocalContext, name: str, username: str, password: str, *, port: int | None = None,
              retention_hours: int = 24, owner: str | None = None) -> InstanceInfo:
    lost = ctx._lost_record(name)
    if lost is not None:
        raise ctx._lost_error(lost)
    try:
        template = ctx.template()
        rec = creates.reserve(ctx, creates.new_record(ctx, name, Kind.PROVISIONED, username, Status.CREATING,
                                             retention_hours, owner), port)
    except (OSError, sqlite3.Error) as exc:
        raise EngineError(f"cannot register instance {name!r} in {ctx.data_dir}: {exc}",
                          hint="is the data dir's file system writable and not full?") from None
    pool = Pool(ctx.layout, template, ctx.pool_size)
    with creates.creating(ctx, rec, "provisioning instance") as undo:
        started = to_rfc3339(utcnow())
        backup_dir = ctx.layout.backups(name) / "base-000"
        undo.push(shutil.rmtree, ctx.inst_dir(name), True)
        if not pool.take(ctx.inst_dir(name)):  # a warm entry is exactly what follows, made ahead
            ctx.layout.make_instance_dirs(name)
            # The cluster is a copy of the template; the template itself, hard-linked, is the
            # instance's first (cold) base backup: it is never started, so its files never change.
            proc.run(["cp", "-a", str(template), str(ctx.pgdata(name))], run_as=ctx.run_as, timeout=120)
            proc.run(["cp", "-al", str(template), str(backup_dir)], run_as=ctx.run_as, timeout=120)
        creates.new_stanza(ctx, name, undo)

        def start(p: int) -> None:
            ctx.server.write_conf(name, p)
            ctx.server.start(name, p)

        undo.push(ctx.server.kill, name)
        creates.on_free_port(ctx, rec, port, start)
        with ctx.server.admin(name, rec.port) as conn:
            roles.create_user(conn, username, password)  # hardened too
            earliest = conn.execute("SELECT pg_catalog.clock_timestamp()").fetchone()[0]  # type: ignore[index]
        roles.mark_hardened(ctx.inst_dir(name))
        ctx.catalog.add_backup(BackupRecord(name, "base-000", started, started, str(backup_dir),
                                             template_wal(ctx.layout, template)))
        ctx.catalog.update(name, status=Status.AVAILABLE.value, earliest=to_rfc3339(earliest))
    pool.spawn_refill()  # after, not during: on a small machine its copies would slow this start
    ctx._background()
    return ctx._current(name)


def takeover(ctx: LocalContext, name: str, owner: str | None, *, adopt: bool = False) -> InstanceInfo | None:
    catalog = ctx.existing_catalog()
    rec = catalog.get(name) if catalog else None
    if rec is None:
        return None
    ours = owner is not None and rec.owner == owner
    if ours and rec.status in LIFECYCLE_BUSY:
        log.warning("removing half-made instance %r left by an interrupted create", name)
        creates.abort(ctx, name)
        return None
    if not rec.linked and not ctx.has_data(name):
        raise ctx._lost_error(rec)  # lost, never half-made: its backups are kept
    if not ours and not adopt:
        return None
    if not ours:
        ctx.catalog.update(name, owner=owner)
    from ..ha import cluster as ha  # ha -> local: imported when used
    return ha.ensure_running(ctx, name) if ha.enabled(ctx, name) else ensure_running(ctx, name)


def list_instances(ctx: LocalContext) -> list[InstanceInfo]:
    known = [r for r in ctx.catalog.all() if not is_scratch(r.owner)]  # a drill's: nobody's
    reconcile(ctx, ctx.catalog)
    names = {r.name for r in known}
    lost = [r for r in ctx.catalog.lost() if r.name not in names]
    return sorted([ctx._info(r) for r in known] + [ctx._lost_info(r) for r in lost], key=lambda i: i.name)


def ensure_running(ctx: LocalContext, name: str) -> InstanceInfo:
    rec = ctx._require(name)
    if not rec.linked and not ctx.pgdata(name).is_dir():
        raise ctx._lost_error(rec)
    if not rec.linked and not ctx.server.running(name):
        ctx.server.clear_after_crash(name)
        ctx.server.start(name, rec.port)
    if not rec.linked:
        ctx._background()
        ctx._sweep_forwards()  # after a crash or a reboot: a needed forwarder starts again
    ctx._harden(rec)
    return ctx._current(name)


def stop(ctx: LocalContext, name: str) -> InstanceInfo:
    rec = ctx._require(name)
    if not rec.linked and ctx.server.running(name):
        ctx.server.stop(name)
    return ctx._current(name)


def reset_credentials(ctx: LocalContext, name: str, username: str, password: str) -> InstanceInfo:
    rec = ctx._require(name)
    if rec.linked:
        raise EngineError(f"{name!r} is a linked instance: its password is managed on its own server",
                          hint="change it there, then update the LinkedInstance's password")
    ensure_running(ctx, name)
    with ctx.server.admin(name, rec.port) as conn:
        roles.set_password(conn, username, password)
        # in the same step, the apps bound to it: their password files say the new password (their
        # processes keep running), and their sessions are not among those ended
        apps, keep = ctx.apps, set()
        for db_port in (rec.port, *forward.ports_of(ctx.layout, name)):  # also apps still on a forwarded port
            keep |= apps.rekey(name, db_port, username, password)
        roles.end_sessions(conn, username, keep)
    return ctx._current(name)


def check_credentials(ctx: LocalContext, name: str, username: str, password: str) -> bool:
    rec = ctx._require(name)
    return roles.credentials_work(rec.hostname, rec.port, username, password)


def set_retention(ctx: LocalContext, name: str, retention_hours: int) -> InstanceInfo:
    ctx._require(name)
    ctx.catalog.update(name, retention_hours=retention_hours)
    rec = ctx._require(name)
    if not rec.linked:
        ctx.pitr.prune(rec)
    return ctx._current(name)


def set_port(ctx: LocalContext, name: str, port: int) -> InstanceInfo:
    """Move the instance's server to ``port``: a restart (Postgres listens on one port). When a bound app
    still connects to the old port (its password file names it), the old port does not go dark: a
    forwarder (``forward.py``) starts before the server stops, binds the old port as soon as the server
    lets go of it and holds each connection until the server is ready on the new port, then pipes
    it; it lives until no app uses the old port (the App's redeploy in the same `pulumi up`, the
    app's deletion, the instance's destroy: ``forward.sweep``). The apps see their pooled
    connections end with the old server and their next ones wait out the restart instead of being
    refused. Chosen over moving the apps first (a redeploy onto a port nothing listens on yet) and
    over keeping both ports (one server, one port)."""
    rec = ctx._require_local(name, "its port is its server's")
    if rec.port == port:
        return ctx._current(name)
    for held in forward.existing(ctx.layout):  # moving back onto a port still forwarded for it
        if held.port == port and held.instance == name:
            held.stop(ctx.layout)
    was_running = ctx.server.running(name)
    with undoing() as undo:  # a failure leaves the old instance working: back on the old port
        with ctx.catalog.locked() as db:
            ports.allocate(db, ctx.data_dir, port, name)
            ctx.catalog.update(name, db=db, port=port)
        undo.push(ports.release, port, ctx.data_dir, name)
        undo.push(ctx.catalog.update, name, port=rec.port)
        undo.push(_back_on, ctx, name, rec.port, was_running)  # runs after the forwarder let go of the port
        fwd: forward.Forward | None = None
        if was_running and rec.port in ctx.apps.db_ports():
            with contextlib.suppress(DbosError), ctx.server.admin(name, rec.port) as conn:
                conn.execute("CHECKPOINT")  # a short shutdown checkpoint: the old port is free sooner
            fwd = forward.start(ctx.layout, name, rec.port, ctx.listen_host)
            undo.push(fwd.stop, ctx.layout)
        else:
            ports.release(rec.port, ctx.data_dir, name)
            undo.push(ports.claim, rec.port, ctx.data_dir, name)
        if was_running:
            ctx.server.stop(name)
        if fwd is not None:
            forward.wait_bound(fwd)
        ctx.server.write_conf(name, port)
        ctx.server.start(name, port)
    if fwd is not None:
        fwd.point(port)
    return ctx._current(name)


def set_owner(ctx: LocalContext, name: str, owner: str | None) -> InstanceInfo:
    ctx._require(name)
    ctx.catalog.update(name, owner=owner)
    return ctx._current(name)


def recover_interrupted(ctx: LocalContext) -> list[str]:
    """After a crash of whatever ran this engine (nothing else in flight): creates and restores it cut short
    and restore drills' scratch instances are removed, and apps whose first deploy it cut short. Returns
    the names removed."""
    removed: list[str] = []
    catalog = ctx.existing_catalog()
    if catalog is None:
        return removed
    for rec in catalog.all():
        if rec.status in LIFECYCLE_BUSY or is_scratch(rec.owner):
            log.warning("removing %s, left %s by an interrupted run", rec.name,
                        "as a restore drill's scratch instance" if is_scratch(rec.owner) else rec.status)
            _remove_half_made(ctx, rec.name)
            removed.append(rec.name)
    apps = ctx.apps
    for app in apps.all():
        if not app.version:
            log.warning("removing app %s, whose first deploy was interrupted", app.name)
            apps.delete(app.name)
            removed.append(app.name)
    return removed


def _remove_half_made(ctx: LocalContext, name: str) -> None:
    for attempt in range(5):
        proc.kill_under(ctx.inst_dir(name))
        try:
            destroy(ctx, name)
            return
        except (DbosError, OSError) as exc:  # a server's last children may still be writing: again
            if attempt == 4:
                log.error("could not remove half-made %s: %s", name, exc.message if isinstance(exc, DbosError) else exc)
            time.sleep(0.5 * (attempt + 1))


def _back_on(ctx: LocalContext, name: str, port: int, was_running: bool) -> None:
    """(a failed port move's revert) the server configured for ``port`` again, and running there if it was."""
    ctx.server.write_conf(name, port)
    if was_running:
        ctx.server.stop_or_kill(name)
        ctx.server.start(name, port)


def destroy(ctx: LocalContext, name: str) -> None:
    rec = ctx.catalog.get(name)
    if rec is not None and rec.linked:
        ctx.catalog.delete(name)
        return
    if ctx.inst_dir(name).exists():
        # no base backup writing into it, none starting: a backup finishing after the stanza was found
        # empty would leave a destroyed instance's backups looking live
        with instance_lock(ctx.layout, name, ctx.settings.recovery_timeout):
            if rec is not None:
                retire(ctx, rec)  # the repository keeps its backups for the deleted retention
            ctx.server.stop_or_kill(name)
            # a postmaster killed moments ago is not "running" while it exits, but its children may still write
            # into the directory (rmtree: "Directory not empty"): whatever works there is gone first
            proc.kill_under(ctx.inst_dir(name))
            shutil.rmtree(ctx.inst_dir(name))
    elif rec is not None:
        retire(ctx, rec)  # a lost instance destroyed: its backups are kept all the same
    if rec is not None:
        ports.release(rec.port, ctx.data_dir, name)
        ctx.catalog.delete(name)
    ctx._sweep_forwards()
    ctx._stop_workers_if_idle()


def link(ctx: LocalContext, name: str, hostname: str, port: int, username: str, password: str, *,
         owner: str | None = None) -> InstanceInfo:
    roles.verify_connection(hostname, port, username, password)
    rec = ctx.catalog.get(name)
    if rec is None:
        new = creates.new_record(ctx, name, Kind.LINKED, username, Status.AVAILABLE, 0, owner, hostname=hostname)
        new.port = port
        creates.reserve(ctx, new, None)
    elif not rec.linked:
        raise AlreadyExistsError(f"an instance named {name!r} already exists and is not linked")
    else:
        ctx.catalog.update(name, hostname=hostname, port=port, username=username,
                            status=Status.AVAILABLE.value)
    return ctx._current(name)


def unlink(ctx: LocalContext, name: str) -> None:
    rec = ctx.catalog.get(name)
    if rec is not None and not rec.linked:
        raise EngineError(f"{name!r} is not a linked instance", hint="destroy it instead")
    ctx.catalog.delete(name)

