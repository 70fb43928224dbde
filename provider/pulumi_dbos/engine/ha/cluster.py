"""High availability for the local engine's instances: an instance made of N members (default 3: a primary, a
synchronous standby, an asynchronous one) under Patroni over the data dir's etcd, on the engine's hosts.

An HA instance keeps its catalog row, its port and its stanza: turning HA on (:func:`enable`) is an update of
a running instance, not a new one — its server stops, its data directory becomes the first member's (Patroni
takes an existing cluster over as its leader), the endpoint (``endpoint.py``) binds the instance's port, and
the other members are cloned from the leader. Turning it off (:func:`disable`) stops the standbys and hands
the leader's data back to a plain server on the same port. The record of it is ``<instance dir>/ha.json``;
the members live under ``<instance dir>/m/<host>/`` (``patroni.Member``).

Every member archives into the instance's stanza of the shared backup repository (only the leader does:
``archive_mode = on``), so PITR works across failovers: a promotion's new timeline and its history file are
archived by the new leader, and ``pgbackrest restore --target-timeline=latest`` follows them.
"""

from __future__ import annotations

import base64
import concurrent.futures
import contextlib
import json
import logging
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from ...errors import EngineError
from ...timeutil import to_rfc3339, utcnow
from ..contract import InstanceInfo, Status
from ..files import write_atomic
from ..waits import wait_until
from . import patroni
from .hosts import Fabric
from .members import (
    DEFAULT_MEMBERS,
    HaState,
    Topology,
    _configure,
    _endpoint_dir,
    _etcd,
    _rest_port,
    _secrets,
    _try_leader,
    _write_state,
    admin,
    enabled,
    ensure_hosts,
    fabric,
    leader,
    members,
    read_state,
    require_hosts,
    single_server,
    start_endpoint,
    state_file,
    stop_endpoint,
    topology,
)
from .remote import SshHosts
from .restores import _backup, archive_now, backup, backup_info, restore_to_new, restore_window

if TYPE_CHECKING:
    import psycopg

    from ..local.catalog import InstanceRecord
    from ..local.context import LocalContext

log = logging.getLogger("pulumi_dbos.engine")

#: seconds a start of stopped members waits for the instance to be ``available`` again (~5 s measured)
RESTART_HEALTHY = 30.0

# ---------------------------------------------------------------- turning it on
def _roles(conn: psycopg.Connection[Any], s: patroni.Secrets) -> None:
    """The replication and rewind roles (passwords as SCRAM verifiers, never in SQL text)."""
    from psycopg import sql

    from ..local.roles import verifier
    for role, pw, attrs in ((patroni.REPLICATOR, s.replication, "LOGIN REPLICATION"),
                            (patroni.REWINDER, s.rewind, "LOGIN")):
        exists = conn.execute("SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = %s", (role,)).fetchone()
        verb = "ALTER" if exists else "CREATE"
        conn.execute(sql.SQL(f"{verb} ROLE {{}} WITH {attrs} PASSWORD {{}}").format(  # noqa: S608 - fixed words
            sql.Identifier(role), sql.Literal(verifier(conn, role, pw))))
    for fn in ("pg_catalog.pg_ls_dir(text, boolean, boolean)", "pg_catalog.pg_stat_file(text, boolean)",
               "pg_catalog.pg_read_binary_file(text)", "pg_catalog.pg_read_binary_file(text, bigint, bigint, boolean)"):
        conn.execute(sql.SQL(f"GRANT EXECUTE ON FUNCTION {fn} TO {{}}").format(  # noqa: S608 - fixed words
            sql.Identifier(patroni.REWINDER)))


def enable(ctx: LocalContext, name: str, count: int = DEFAULT_MEMBERS) -> None:
    """Turn HA on for a running instance (see the module's docstring); a no-op when it is on."""
    if enabled(ctx, name):
        ensure_running(ctx, name)
        return
    rec = ctx._require_local(name, "high availability is for instances this engine runs")
    if count < 2 or count > 9:
        raise EngineError(f"an HA instance has 2 to 9 members, not {count}")
    stanza = rec.stanza or ctx.layout.stanza(name)
    if not stanza:
        raise EngineError(f"instance {name!r} has no stanza in the backup repository",
                          hint="`pulumi-dbos db backup NAME` first")
    fab = fabric(ctx)
    if count > fab.count and not fab.can_grow():
        raise EngineError(f"{count} members need {count} hosts; PULUMI_DBOS_HA_HOSTS names {fab.count}")
    fab.count = max(fab.count, count)
    ensure_hosts(ctx)
    from ..local.pitr import instance_lock
    # no backup of the single server running meanwhile (the watcher's first one: it would lose its server)
    with instance_lock(ctx.layout, name, ctx.settings.ha_member_timeout) as mine:
        if not mine:
            raise EngineError(f"a backup of {name!r} is still running", hint="try again once it is done")
        _enable(ctx, name, rec, fab, count, stanza)


def _enable(ctx: LocalContext, name: str, rec: InstanceRecord, fab: Fabric | SshHosts, count: int,
            stanza: str) -> None:
    from ..local import instances
    instances.ensure_running(ctx, name)
    s = _secrets(ctx, name)
    with ctx.server.admin(name, rec.port) as conn:
        _roles(conn, s)
    ctx.pitr.archive_now(name, rec.port)  # everything before the takeover is in the repository
    st = HaState(hosts=[h.name for h in fab.hosts[:count]], pg_port=rec.port, rest_port=_rest_port(ctx, name),
                 enabled_at=to_rfc3339(utcnow()))
    ms = members(ctx, name, st)
    first = ms[0]
    ctx.server.stop(name)
    ctx.layout.mkdir(first.dir)
    os.rename(ctx.pgdata(name), first.pgdata)
    with contextlib.suppress(FileNotFoundError):
        (first.pgdata / "postmaster.opts").unlink()
    # the single server's settings (port, socket, archive_command) are Patroni's now
    write_atomic(first.pgdata / "instance.conf", "# pulumi-dbos: this instance's members are Patroni's (ha.json)\n",
                 0o600, uid=ctx.server._uid(), gid=ctx.server._gid())
    _write_state(ctx, name, st)
    pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=f"ha-backup-{name}")
    first_backup: concurrent.futures.Future[Any] | None = None
    try:
        _configure(ctx, first, stanza)
        _clear_dcs(ctx, name)
        patroni.start(ctx.layout, first, ctx.settings)
        wait_until(lambda: _try_leader(ctx, name), ctx.settings.ha_member_timeout,
                   f"{first.name} taking {name!r} over as its leader",
                   hint=f"see {first.dir}/log", interval=0.2)
        start_endpoint(ctx, name, rec.port)
        for m in ms[1:]:
            _configure(ctx, m, stanza)
            patroni.start(ctx.layout, m, ctx.settings)
        # the first repository backup of the members' cluster (restores and drills start from one) is taken from
        # the leader while the standbys clone it: ~3 s that would otherwise follow the ~5 s of the clones
        first_backup = pool.submit(_backup, ctx, name, full=True)
        wait_healthy(ctx, name)
    except BaseException:
        log.warning("turning HA on for %r failed: back to a single server", name)
        if first_backup is not None:
            concurrent.futures.wait([first_backup])
        with contextlib.suppress(Exception):
            disable(ctx, name)
        raise
    finally:
        pool.shutdown(wait=False)
    first_backup.result()
    ctx._background()  # the watcher backs the members up now (``local.autobackup``), the server it watched gone


def wait_healthy(ctx: LocalContext, name: str, timeout: float | None = None) -> Topology:
    """Every member streaming and a synchronous standby named; the leader's HA loop is woken while a standby
    streams unnamed (``patroni.wake``: it names one a loop sooner)."""
    def healthy() -> Topology | None:
        t = topology(ctx, name)
        if t.healthy:
            return t
        if t.leader and t.sync_standby is None and any(r.get("state") == "streaming" for r in t.members):
            lead = next((m for m in members(ctx, name) if m.name == t.leader), None)
            if lead is not None:
                patroni.wake(lead)
        return None

    found = wait_until(healthy,
                       ctx.settings.ha_member_timeout if timeout is None else timeout,
                       f"every member of {name!r} streaming with a synchronous standby",
                       hint=f"see {ctx.inst_dir(name)}/m/<host>/log", interval=0.25)
    assert found is not None
    return found


def ensure_running(ctx: LocalContext, name: str) -> InstanceInfo:
    """Every host up, etcd, every member and the endpoint running (after a reboot, a lost host back); then
    a leader to answer, and when members were started here, the instance ``available`` again (every member
    streaming, a synchronous standby named) within :data:`RESTART_HEALTHY` seconds — else it is returned as it
    is (``degraded``: its status says so; a member that cannot come back must not hold ``pulumi up`` for long)."""
    rec = ctx._require_local(name, "high availability is for instances this engine runs")
    st = read_state(ctx, name)
    assert st is not None
    up = ensure_hosts(ctx, tolerate_down=True)
    stanza = rec.stanza or ctx.layout.stanza(name) or ""
    started = False
    for m in members(ctx, name, st):
        if m.host in up and not m.running():
            _configure(ctx, m, stanza)
            patroni.start(ctx.layout, m, ctx.settings)
            started = True
    start_endpoint(ctx, name, rec.port)
    wait_until(lambda: _try_leader(ctx, name), ctx.settings.ha_member_timeout, f"a leader of HA instance {name!r}",
               interval=0.2)
    if started:
        with contextlib.suppress(EngineError):
            wait_healthy(ctx, name, RESTART_HEALTHY)
    ctx._background()
    return ctx._current(name)


def stop(ctx: LocalContext, name: str) -> InstanceInfo:
    stop_endpoint(ctx, name)
    ms = members(ctx, name)
    top = topology(ctx, name)
    # the standbys first (all at once: each stop is seconds of Patroni's, and on real hosts an SSH round trip), then
    # the leader: no failover on the way down
    standbys = [m for m in ms if m.name != top.leader]
    with ThreadPoolExecutor(max(1, len(standbys))) as pool:
        for f in [pool.submit(patroni.stop, m) for m in standbys]:
            f.result()
    for m in ms:
        if m.name == top.leader:
            patroni.stop(m)
    return ctx._current(name)


def info(ctx: LocalContext, rec: InstanceRecord) -> InstanceInfo:
    """The instance as etcd and its members say: ``available`` (a leader, every member streaming, a
    synchronous standby), ``degraded`` (a leader; a member down or behind), ``unreachable`` (members run, no
    leader: an election under way), ``stopped`` (no member runs)."""
    top = topology(ctx, rec.name)
    running = any(m.running() for m in members(ctx, rec.name))
    if top.leader is not None:
        status = Status.AVAILABLE if top.healthy else Status.DEGRADED
        ctx._background()  # a watcher that died (killed, OOM) is started again by any look, as a single server's
    else:
        status = Status.UNREACHABLE if running else Status.STOPPED
    hostname = ctx.listen_host or rec.hostname
    from ..local.catalog import DrillCatalog
    from ..local.drills import last_drill
    return InstanceInfo(
        name=rec.name, status=status.value, hostname=hostname, port=rec.port, username=rec.username, kind=rec.kind,
        retention_hours=rec.retention_hours, created_at=rec.created_at, earliest_restorable_time=rec.earliest,
        latest_restorable_time=to_rfc3339(utcnow()) if top.leader else None, source_instance=rec.source,
        restored_to=rec.restored_to, owner=rec.owner, last_drill=last_drill(DrillCatalog(ctx.catalog), rec.name),
        kept_after_destroy_hours=ctx._kept_hours(rec), high_availability=True, members=top.members,
        leader=top.leader, sync_standby=top.sync_standby, timeline=top.timeline)


def reset_credentials(ctx: LocalContext, name: str, username: str, password: str) -> InstanceInfo:
    """On the leader (replicated to every member with the rest of its WAL); the bound apps' password files too.
    Their sessions come through the endpoint, so PostgreSQL cannot tell them apart: they end with the others
    and the apps reconnect with the new password."""
    from ..local import roles
    rec = ctx._require_local(name, "its password is managed on its own server")
    ensure_running(ctx, name)
    with admin(ctx, name) as conn:
        roles.set_password(conn, username, password)
        ctx.apps.rekey(name, rec.port, username, password)
        roles.end_sessions(conn, username)
    return ctx._current(name)


def set_port(ctx: LocalContext, name: str, port: int) -> InstanceInfo:
    """The endpoint moves; the members keep their own port on their hosts (``HaState.pg_port``)."""
    from ..local import ports
    rec = ctx._require_local(name, "its port is its server's")
    if rec.port == port:
        return ctx._current(name)
    with ctx.catalog.locked() as db:
        ports.allocate(db, ctx.data_dir, port, name)
        ctx.catalog.update(name, db=db, port=port)
    stop_endpoint(ctx, name)
    try:
        start_endpoint(ctx, name, port)
    except BaseException:
        ctx.catalog.update(name, port=rec.port)
        ports.release(port, ctx.data_dir, name)
        start_endpoint(ctx, name, rec.port)
        raise
    ports.release(rec.port, ctx.data_dir, name)
    return ctx._current(name)


# ---------------------------------------------------------------- turning it off, destroying
def _clear_dcs(ctx: LocalContext, name: str) -> None:
    """Remove what etcd keeps of the instance's Patroni cluster (a re-enable starts afresh)."""
    import urllib.request
    key = f"/pulumi-dbos/{patroni.scope(name)}/".encode()
    end = key[:-1] + bytes([key[-1] + 1])
    body = json.dumps({"key": base64.b64encode(key).decode(), "range_end": base64.b64encode(end).decode()}).encode()
    for ep in _etcd(ctx).endpoints:
        with contextlib.suppress(OSError):
            req = urllib.request.Request(f"http://{ep}/v3/kv/deleterange", data=body, method="POST")  # noqa: S310
            with urllib.request.urlopen(req, timeout=5):  # noqa: S310 - our own etcd
                return


def disable(ctx: LocalContext, name: str) -> None:
    """Back to a single server on the instance's port with the leader's data; the standbys' data is removed."""
    st = read_state(ctx, name)
    if st is None:
        return
    rec = ctx._require_local(name, "high availability is for instances this engine runs")
    ms = members(ctx, name, st)
    top = topology(ctx, name)
    keep = next((m for m in ms if m.name == top.leader), None)
    if keep is None:  # no leader now: the member with the newest data (the last one to have led)
        keep = next((m for m in ms if (m.pgdata / "PG_VERSION").exists()), None)
    if keep is not None and top.leader == keep.name:
        with contextlib.suppress(Exception), admin(ctx, name) as conn:
            conn.execute("CHECKPOINT")
    stop_endpoint(ctx, name)
    for m in sorted(ms, key=lambda m: m is keep):
        patroni.stop(m)
    if keep is None:
        raise EngineError(f"HA instance {name!r} has no member with data left",
                          hint=f"`pulumi-dbos db recover {name}` brings it back from the backup repository")
    data = keep.pgdata
    single_server(ctx, data)
    for leftover in ("standby.signal", "recovery.signal"):
        with contextlib.suppress(FileNotFoundError):
            (data / leftover).unlink()
    if ctx.pgdata(name).exists():
        shutil.rmtree(ctx.pgdata(name))
    os.rename(data, ctx.pgdata(name))
    _clear_dcs(ctx, name)
    shutil.rmtree(ctx.inst_dir(name) / "m", ignore_errors=True)
    shutil.rmtree(_endpoint_dir(ctx, name), ignore_errors=True)
    state_file(ctx, name).unlink()
    ctx.server.write_conf(name, rec.port)
    ctx.server.start(name, rec.port)
    with ctx.server.admin(name, rec.port) as conn:
        for (slot,) in conn.execute("SELECT slot_name FROM pg_catalog.pg_replication_slots WHERE NOT active"
                                    ).fetchall():
            conn.execute("SELECT pg_catalog.pg_drop_replication_slot(%s)", (slot,))
    _maybe_stop_hosts(ctx)


def teardown(ctx: LocalContext, name: str) -> None:
    """Before a destroy: the last WAL archived, every member killed (every host: ``patroni.kill_all``), the
    endpoint gone."""
    if not enabled(ctx, name):
        return
    with contextlib.suppress(Exception):
        archive_now(ctx, name)
    stop_endpoint(ctx, name)
    patroni.kill_all(members(ctx, name))
    _clear_dcs(ctx, name)
    shutil.rmtree(ctx.inst_dir(name) / "m", ignore_errors=True)
    with contextlib.suppress(FileNotFoundError):
        state_file(ctx, name).unlink()


def _maybe_stop_hosts(ctx: LocalContext, leaving: str | None = None) -> None:
    """No HA instance left in the data dir: etcd stops and the simulated hosts go."""
    if any(enabled(ctx, r.name) and r.name != leaving for r in ctx.catalog.all()):
        return
    _etcd(ctx).remove()
    fabric(ctx).teardown()


def after_destroy(ctx: LocalContext) -> None:
    if os.geteuid() == 0 and (ctx.data_dir / "ha").exists():
        _maybe_stop_hosts(ctx)


# ---------------------------------------------------------------- operations
def switchover(ctx: LocalContext, name: str, candidate: str | None = None, timeout: float = 60) -> Topology:
    """A planned switchover to ``candidate`` (a member or host name; default the synchronous standby)."""
    if not enabled(ctx, name):
        ctx._require(name)
        raise EngineError(f"{name!r} is not a high-availability instance: there is nothing to switch over to",
                          hint=f"set dbos:instances.{name}.highAvailability: true and `pulumi up`")
    deadline = time.monotonic() + timeout
    while True:
        top = wait_healthy(ctx, name, 30)
        lead = leader(ctx, name)
        ms = members(ctx, name)
        target = None
        if candidate:
            target = next((m for m in ms if candidate in (m.name, m.host.name)), None)
            if target is None:
                raise EngineError(f"{candidate!r} is not a member of {name!r}: {[m.name for m in ms]}")
        else:
            target = next((m for m in ms if m.name == top.sync_standby), None)
        body = {"leader": lead.name, **({"candidate": target.name} if target else {})}
        status, text = patroni.post(lead, "/switchover", body, timeout=timeout)
        if status == 200:
            break
        # 412/503: the topology moved between our look and Patroni's (the synchronous standby just changed, a
        # member is catching up): look again while there is time; anything else is Patroni's final answer
        if status not in (412, 503) or time.monotonic() > deadline:
            raise EngineError(f"switchover of {name!r} refused by Patroni ({status}): {text.strip()}")
        log.info("switchover of %r: Patroni said %s (%s), looking again", name, status, text.strip())
        time.sleep(0.5)
    new = wait_until(lambda: (t if (t := topology(ctx, name)).leader not in (None, lead.name) else None), timeout,
                     f"a new leader of {name!r} after the switchover", interval=0.1)
    assert new is not None
    # returned once the new leader takes writes (its promotion ends after it took the leader key)
    wait_until(lambda: _try_leader(ctx, name), timeout, f"the new leader of {name!r} taking writes", interval=0.1)
    return new


__all__ = ["DEFAULT_MEMBERS", "HaState", "Topology", "after_destroy", "archive_now", "backup", "backup_info", "disable", "enable", "enabled", "ensure_hosts", "ensure_running", "fabric", "info", "leader", "members", "read_state", "require_hosts", "reset_credentials", "restore_to_new", "restore_window", "set_port", "single_server", "stop", "switchover", "teardown", "topology", "wait_healthy"]
