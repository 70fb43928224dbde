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
import contextlib
import json
import logging
import os
import secrets as secrets_mod
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...errors import EngineError
from ...timeutil import parse_rfc3339, to_rfc3339, utcnow
from ..contract import BackupInfo, InstanceInfo, Kind, Status
from ..files import write_atomic
from ..local.server import ADMIN_OPTIONS
from ..locks import file_lock
from ..waits import wait_until
from . import etcd as etcd_mod
from . import patroni, procs
from .hosts import Fabric, Host

if TYPE_CHECKING:
    import psycopg

    from ..local.catalog import InstanceRecord
    from ..local.context import LocalContext

log = logging.getLogger("pulumi_dbos.engine")

DEFAULT_MEMBERS = 3
ENDPOINT = Path(__file__).with_name("endpoint.py")
FIRST_REST_PORT = 8008


@dataclass
class HaState:
    """``<instance dir>/ha.json``."""

    hosts: list[str]
    pg_port: int  #: the members' PostgreSQL port (on their hosts); the instance's own port is the endpoint's
    rest_port: int
    enabled_at: str
    extra: dict[str, Any] = field(default_factory=dict)


def state_file(ctx: LocalContext, name: str) -> Path:
    return ctx.inst_dir(name) / "ha.json"


def read_state(ctx: LocalContext, name: str) -> HaState | None:
    try:
        raw = json.loads(state_file(ctx, name).read_text())
    except (OSError, ValueError):
        return None
    return HaState(hosts=list(raw["hosts"]), pg_port=int(raw["pg_port"]), rest_port=int(raw["rest_port"]),
                   enabled_at=str(raw["enabled_at"]), extra=dict(raw.get("extra") or {}))


def enabled(ctx: LocalContext, name: str) -> bool:
    return state_file(ctx, name).exists()


def _write_state(ctx: LocalContext, name: str, st: HaState) -> None:
    write_atomic(state_file(ctx, name), json.dumps(st.__dict__, indent=1) + "\n", 0o600)


def fabric(ctx: LocalContext) -> Fabric:
    return Fabric(ctx.data_dir)


def _etcd(ctx: LocalContext) -> etcd_mod.Etcd:
    fab = fabric(ctx)
    return etcd_mod.Etcd(ctx.layout, fab.hosts, fab.tag)


def members(ctx: LocalContext, name: str, st: HaState | None = None) -> list[patroni.Member]:
    st = st or read_state(ctx, name)
    if st is None:
        return []
    fab = fabric(ctx)
    return [patroni.Member(name, fab.by_name(h), ctx.inst_dir(name) / "m" / h, st.pg_port, st.rest_port)
            for h in st.hosts]


def _secrets(ctx: LocalContext, name: str) -> patroni.Secrets:
    path = ctx.inst_dir(name) / "ha.secrets"
    try:
        raw = json.loads(path.read_text())
        return patroni.Secrets(raw["replication"], raw["rewind"])
    except (OSError, ValueError, KeyError):
        s = patroni.Secrets(secrets_mod.token_urlsafe(24), secrets_mod.token_urlsafe(24))
        write_atomic(path, json.dumps(s.__dict__), 0o600)
        return s


def _rest_port(ctx: LocalContext, name: str) -> int:
    """A Patroni API port no other HA instance of this data dir uses (on the same hosts)."""
    used: set[int] = set()
    for rec in ctx.catalog.all():
        other = read_state(ctx, rec.name) if rec.name != name else None
        if other is not None:
            used |= {other.rest_port, other.pg_port}
    port = FIRST_REST_PORT
    while port in used:
        port += 1
    return port


def _configure(ctx: LocalContext, m: patroni.Member, stanza: str) -> None:
    fab = fabric(ctx)
    archive = ctx.repo.archive_command(stanza, m.pgdata)
    restore = ctx.repo.archive_get_command(stanza, m.pgdata)
    config = patroni.render(m, etcd=_etcd(ctx).endpoints, subnet=fab.subnet, secrets=_secrets(ctx, m.instance),
                            archive_command=archive, restore_command=restore,
                            archive_timeout=ctx.repo.settings.archive_timeout)
    patroni.write_config(ctx.layout, m, config)


# ---------------------------------------------------------------- looks
@dataclass(frozen=True)
class Topology:
    """What etcd says of an HA instance right now."""

    members: list[dict[str, Any]]
    leader: str | None
    sync_standby: str | None
    timeline: int | None
    expected: int

    @property
    def healthy(self) -> bool:
        up = [m for m in self.members if m.get("state") in ("running", "streaming")]
        return self.leader is not None and len(up) == self.expected and self.sync_standby is not None


def topology(ctx: LocalContext, name: str) -> Topology:
    st = read_state(ctx, name)
    ms = members(ctx, name, st)
    body = (patroni.cluster(ms) if fabric(ctx).present() else None) or {}  # no hosts (a reboot): ask nobody
    rows, leader, sync, tl = [], None, None, None
    by_name = {m.name: m for m in ms}
    for raw in body.get("members") or []:
        role = str(raw.get("role") or "")
        member = by_name.get(str(raw.get("name")))
        row = {"name": raw.get("name"), "host": member.host.name if member else None, "role": role,
               "state": raw.get("state"), "timeline": raw.get("timeline"), "lag": raw.get("lag")}
        rows.append(row)
        if role in ("leader", "primary", "master"):
            leader, tl = str(raw.get("name")), raw.get("timeline")
        if role in ("sync_standby", "quorum_standby"):
            sync = str(raw.get("name"))
    return Topology(sorted(rows, key=lambda r: str(r["name"])), leader, sync, int(tl) if tl is not None else None,
                    len(ms))


def leader(ctx: LocalContext, name: str) -> patroni.Member:
    top = topology(ctx, name)
    for m in members(ctx, name):
        if m.name == top.leader:
            return m
    raise EngineError(f"HA instance {name!r} has no leader right now",
                      hint="a failover takes up to ~15 s; `pulumi-dbos db status NAME` shows its members")


@contextlib.contextmanager
def admin(ctx: LocalContext, name: str, dbname: str = "postgres") -> Iterator[psycopg.Connection[Any]]:
    """The superuser's connection to the current leader, over its Unix socket (sockets are files: the engine
    reaches every simulated host's socket from the root namespace). Its search path, role and the rest are pinned
    whatever the tenant's database says (``local.server.ADMIN_OPTIONS``)."""
    import psycopg
    m = wait_until(lambda: _try_leader(ctx, name), 30, f"a leader of HA instance {name!r}", interval=0.2)
    assert m is not None
    try:
        conn = psycopg.connect(host=str(m.sockdir), port=m.port, user="postgres", dbname=dbname, connect_timeout=10,
                               autocommit=True, sslmode="disable", options=ADMIN_OPTIONS)
    except psycopg.Error as exc:
        raise EngineError(f"cannot reach the leader of {name!r} ({m.name}): {exc}") from None
    try:
        yield conn
    finally:
        conn.close()


def _try_leader(ctx: LocalContext, name: str) -> patroni.Member | None:
    with contextlib.suppress(EngineError):
        m = leader(ctx, name)
        status, body = patroni.get(m, "/patroni")
        if status == 200 and body.get("state") == "running":
            return m
    return None


# ---------------------------------------------------------------- the endpoint
def _endpoint_dir(ctx: LocalContext, name: str) -> Path:
    return ctx.inst_dir(name) / "endpoint"


def _write_endpoint_members(ctx: LocalContext, name: str) -> None:
    d = _endpoint_dir(ctx, name)
    ctx.layout.mkdir(d)
    rows = [[m.host.address, m.port, m.api] for m in members(ctx, name)]
    write_atomic(d / "members.json", json.dumps(rows), 0o600, uid=ctx.layout.run_as.uid if ctx.layout.run_as.user
                 else None, gid=ctx.layout.run_as.gid if ctx.layout.run_as.user else None)


def endpoint_running(ctx: LocalContext, name: str) -> bool:
    return procs.running(_endpoint_dir(ctx, name) / "pid", "endpoint.py")


def start_endpoint(ctx: LocalContext, name: str, port: int) -> None:
    """The instance's port answering for its current primary (``endpoint.py``)."""
    if endpoint_running(ctx, name):
        return
    _write_endpoint_members(ctx, name)
    d = _endpoint_dir(ctx, name)
    ready = d / "ready"
    with contextlib.suppress(FileNotFoundError):
        ready.unlink()
    argv = [sys_python(), str(ENDPOINT), str(port), str(d / "members.json"), str(ready),
            *([ctx.listen_host] if ctx.listen_host else [])]
    pid = procs.start(Host("local", "127.0.0.1"), argv, ctx.layout.run_as, d)

    def up() -> bool:
        if ready.exists():
            return True
        if not procs.alive(pid):
            raise EngineError(f"the endpoint of {name!r} failed to start on port {port} (pid {pid} exited): "
                              f"{(d / 'log').read_text(errors='replace')[-2000:]}",
                              hint="is the port taken by another process? `ss -ltnp`")
        return False

    wait_until(up, 30, f"the endpoint of {name!r} listening on port {port}", interval=0.02)


def stop_endpoint(ctx: LocalContext, name: str) -> None:
    procs.stop(_endpoint_dir(ctx, name) / "pid", 10)


def sys_python() -> str:
    import sys
    return sys.executable


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


def require_hosts(ctx: LocalContext) -> list[str]:
    """Problems that would stop HA here (empty: go). Creates nothing."""
    problems = []
    if os.geteuid() != 0:
        problems.append("high availability on one machine runs its hosts as network namespaces: the engine must "
                        "run as root")
    if shutil.which("etcd") is None:
        problems.append("etcd is not installed (`apt-get install etcd-server`; scripts/setup.sh does it)")
    if shutil.which("nsenter") is None or shutil.which("ip") is None:
        problems.append("`ip` (iproute2) and `nsenter` (util-linux) are needed for the simulated hosts")
    return problems


def ensure_hosts(ctx: LocalContext, hosts: list[Host] | None = None) -> None:
    problems = require_hosts(ctx)
    if problems:
        raise EngineError("; ".join(problems))
    fab = fabric(ctx)
    ctx.layout.prepare()
    (ctx.data_dir / "ha").mkdir(mode=0o711, exist_ok=True)
    # one provider runs up to 4 calls at once, and other processes may share the data dir: one maker of hosts
    with file_lock(ctx.data_dir / "ha" / "hosts.lock", wait=ctx.settings.ha_member_timeout) as mine:
        if not mine:
            raise EngineError("another process is setting up the simulated hosts", hint="try again")
        fab.ensure()
        _etcd(ctx).ensure(hosts)


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
    fab.count = max(fab.count, count)
    ensure_hosts(ctx)
    from ..local.pitr import instance_lock
    # no backup of the single server running meanwhile (the watcher's first one: it would lose its server)
    with instance_lock(ctx.layout, name, ctx.settings.ha_member_timeout) as mine:
        if not mine:
            raise EngineError(f"a backup of {name!r} is still running", hint="try again once it is done")
        _enable(ctx, name, rec, fab, count, stanza)


def _enable(ctx: LocalContext, name: str, rec: InstanceRecord, fab: Fabric, count: int, stanza: str) -> None:
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
        wait_healthy(ctx, name)
    except BaseException:
        log.warning("turning HA on for %r failed: back to a single server", name)
        with contextlib.suppress(Exception):
            disable(ctx, name)
        raise
    _backup(ctx, name, full=True)


def wait_healthy(ctx: LocalContext, name: str, timeout: float | None = None) -> Topology:
    found = wait_until(lambda: (t if (t := topology(ctx, name)).healthy else None),
                       ctx.settings.ha_member_timeout if timeout is None else timeout,
                       f"every member of {name!r} streaming with a synchronous standby",
                       hint=f"see {ctx.inst_dir(name)}/m/<host>/log", interval=0.25)
    assert found is not None
    return found


def ensure_running(ctx: LocalContext, name: str) -> InstanceInfo:
    """Every host up, etcd, every member and the endpoint running (after a reboot, a lost host back); then
    a leader to answer."""
    rec = ctx._require_local(name, "high availability is for instances this engine runs")
    st = read_state(ctx, name)
    assert st is not None
    ensure_hosts(ctx)
    stanza = rec.stanza or ctx.layout.stanza(name) or ""
    for m in members(ctx, name, st):
        if not m.running():
            _configure(ctx, m, stanza)
            patroni.start(ctx.layout, m, ctx.settings)
    start_endpoint(ctx, name, rec.port)
    wait_until(lambda: _try_leader(ctx, name), ctx.settings.ha_member_timeout, f"a leader of HA instance {name!r}",
               interval=0.2)
    return ctx._current(name)


def stop(ctx: LocalContext, name: str) -> InstanceInfo:
    stop_endpoint(ctx, name)
    ms = members(ctx, name)
    top = topology(ctx, name)
    for m in sorted(ms, key=lambda m: m.name == top.leader):  # standbys first: no failover on the way down
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
                    conn.execute(f"DROP OWNED BY {role}")  # its grants (on functions of this database)
                    conn.execute(f"DROP ROLE {role}")
            for (slot,) in conn.execute("SELECT slot_name FROM pg_catalog.pg_replication_slots").fetchall():
                conn.execute("SELECT pg_catalog.pg_drop_replication_slot(%s)", (slot,))
            ts = conn.execute("SELECT pg_catalog.clock_timestamp()").fetchone()[0]  # type: ignore[index]
        roles.mark_hardened(ctx.inst_dir(name))
        ctx.catalog.update(name, status=Status.AVAILABLE.value, earliest=to_rfc3339(ts))
    ctx._background()
    return ctx._current(name)


def no_drills(ctx: LocalContext, name: str) -> None:
    if enabled(ctx, name):
        raise EngineError(f"{name!r} is a high-availability instance: drills of HA instances are not built yet",
                          hint=f"restore it into a new instance instead (RestoredInstance(source={name!r}))")


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
        for (slot,) in conn.execute("SELECT slot_name FROM pg_catalog.pg_replication_slots WHERE NOT active").fetchall():
            conn.execute("SELECT pg_catalog.pg_drop_replication_slot(%s)", (slot,))
    _maybe_stop_hosts(ctx)


def single_server(ctx: LocalContext, data: Path) -> None:
    """A member's data directory made a single server's again: the configuration Patroni set aside
    (``postgresql.base.conf``, which includes ``instance.conf``) back in place of Patroni's (its listen address
    on a host, its socket, its archive_command into the HA stanza), the engine's pg_hba.conf."""
    from ..local.template import _HBA
    base = data / "postgresql.base.conf"
    if base.exists():
        os.replace(base, data / "postgresql.conf")
    write_atomic(data / "pg_hba.conf", _HBA, 0o600, uid=ctx.server._uid(), gid=ctx.server._gid())
    for leftover in ("patroni.dynamic.json", "postmaster.opts", "postmaster.pid"):
        with contextlib.suppress(FileNotFoundError):
            (data / leftover).unlink()


def teardown(ctx: LocalContext, name: str) -> None:
    """Before a destroy: the last WAL archived, every member stopped (every host), the endpoint gone."""
    if not enabled(ctx, name):
        return
    with contextlib.suppress(Exception):
        archive_now(ctx, name)
    stop(ctx, name)
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
    if status != 200:
        raise EngineError(f"switchover of {name!r} refused by Patroni ({status}): {text.strip()}")
    new = wait_until(lambda: (t if (t := topology(ctx, name)).leader not in (None, lead.name) else None), timeout,
                     f"a new leader of {name!r} after the switchover", interval=0.1)
    assert new is not None
    return new


def archive_now(ctx: LocalContext, name: str) -> datetime:
    """A commit stamped now, a WAL switch on the leader, and that segment in the repository."""
    with admin(ctx, name) as conn:
        with conn.transaction():
            conn.execute("SELECT pg_catalog.pg_current_xact_id()")
        now: datetime = conn.execute("SELECT pg_catalog.clock_timestamp()").fetchone()[0]  # type: ignore[index]
        with conn.transaction():
            conn.execute("SELECT pg_catalog.pg_current_xact_id()")
        seg: str = conn.execute("SELECT pg_catalog.pg_walfile_name(pg_catalog.pg_switch_wal() - 1)").fetchone()[0]  # type: ignore[index]

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
