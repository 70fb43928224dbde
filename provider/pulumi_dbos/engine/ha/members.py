"""An HA instance's record and members, the hosts they run on (``require_hosts``/``ensure_hosts``: what HA needs
here, the simulated hosts made or the real ones checked, etcd on them), what they look like now (the leader, the
synchronous standby, lag, timeline), and its endpoint (``endpoint.py``, on the instance's own port).
Functions over the local engine's context; the lifecycle (on, off, failover's aftermath, destroy) is
``cluster``'s.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets as secrets_mod
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...errors import EngineError
from .. import pgbin
from ..files import write_atomic
from ..local.server import ADMIN_OPTIONS
from ..locks import file_lock
from ..waits import wait_until
from . import etcd as etcd_mod
from . import patroni, procs
from .hosts import Fabric, Host
from .remote import SshHosts

if TYPE_CHECKING:
    import psycopg

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


def fabric(ctx: LocalContext) -> Fabric | SshHosts:
    """The engine's hosts: the operator's real ones when ``PULUMI_DBOS_HA_HOSTS`` names them, else the data dir's
    simulated ones (network namespaces of this machine)."""
    if ctx.settings.ha_hosts:
        return SshHosts(ctx.data_dir, ctx.settings.ha_hosts, ctx.settings.ha_ssh_config, ctx.layout.run_as.user)
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
    config = patroni.render(m, etcd=_etcd(ctx).endpoints, networks=fab.networks, secrets=_secrets(ctx, m.instance),
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
                      hint="after a lost host a failover takes ~21-25 s (Patroni's lock ttl); "
                           "`pulumi-dbos db status NAME` shows its members")


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
    """The leader once it is a running primary: the leader key moves to a new member before its promotion ends
    (PostgreSQL still in recovery: a write there fails with "cannot execute ... during recovery")."""
    with contextlib.suppress(EngineError):
        m = leader(ctx, name)
        status, body = patroni.get(m, "/patroni")
        if status == 200 and body.get("state") == "running" and body.get("role") in ("primary", "master"):
            return m
    return None


# ---------------------------------------------------------------- the hosts
def require_hosts(ctx: LocalContext) -> list[str]:
    """Problems that would stop HA here (empty: go). Creates nothing; asks no host (real hosts are checked by
    ``ensure_hosts``)."""
    problems = []
    if ctx.settings.ha_hosts:
        if shutil.which("ssh") is None:
            problems.append("real hosts (PULUMI_DBOS_HA_HOSTS) are reached with `ssh` (Debian's openssh-client)")
        return problems
    if os.geteuid() != 0:
        problems.append("high availability on one machine runs its hosts as network namespaces: the engine must "
                        "run as root")
    if shutil.which("etcd") is None:
        problems.append("etcd is not installed (`apt-get install etcd-server`; scripts/setup.sh does it)")
    if shutil.which("nsenter") is None or shutil.which("ip") is None:
        problems.append("`ip` (iproute2) and `nsenter` (util-linux) are needed for the simulated hosts")
    return problems


def ensure_hosts(ctx: LocalContext, hosts: list[Host] | None = None, *, tolerate_down: bool = False) -> list[Host]:
    """The hosts ready (simulated ones made; real ones checked) and etcd on them; returns the hosts that are up.
    ``tolerate_down``: real hosts that do not answer over SSH are left out when a majority does (an instance
    that has lost a host keeps being started on the others); otherwise every host must answer."""
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
        up = fab.hosts
        if isinstance(fab, SshHosts):
            up = fab.ensure(ctx.layout.run_as, _shared_dirs(ctx), _programs(ctx), tolerate_down=tolerate_down)
        else:
            fab.ensure()
        _etcd(ctx).ensure([h for h in hosts or fab.hosts if h in up])
        return up


def _shared_dirs(ctx: LocalContext) -> list[Path]:
    """What every real host must see as this machine does: the data dir (members' files) and a posix repository
    (every member archives into it when it leads: one host's own disk would be lost with that host)."""
    dirs = [ctx.data_dir / "ha"]
    if ctx.repo.has_posix and ctx.repo.posix_path.is_dir():  # it is, once an instance has a stanza (HA needs one)
        dirs.append(ctx.repo.posix_path)
    return dirs


def _programs(ctx: LocalContext) -> list[str]:
    """The programs the members run on every host, at the paths they have here."""
    return [shutil.which("etcd") or "/usr/bin/etcd", patroni.python(ctx.layout, ctx.settings),
            str(pgbin.bindir() / "postgres"), shutil.which(ctx.settings.pgbackrest) or ctx.settings.pgbackrest,
            "/usr/bin/setsid", "/usr/bin/pgrep", "/usr/bin/pkill"]


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
    assert pid is not None  # this machine's

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


def is_member_data(data: Path) -> bool:
    """Whether ``data`` is a Patroni member's cluster (restored from an HA instance's backups)."""
    return (data / "postgresql.base.conf").exists() or (data / "patroni.dynamic.json").exists()


def drop_member_leftovers(conn: psycopg.Connection[Any]) -> None:
    """What a member's data brings that a single server has no use for: the replication and rewind roles (their
    grants first), the replication slots."""
    from psycopg import sql
    for role in (patroni.REPLICATOR, patroni.REWINDER):
        if conn.execute("SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = %s", (role,)).fetchone():
            conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))
    for (slot,) in conn.execute("SELECT slot_name FROM pg_catalog.pg_replication_slots").fetchall():
        conn.execute("SELECT pg_catalog.pg_drop_replication_slot(%s)", (slot,))
