"""Patroni members: one per host of an HA instance, each running that host's PostgreSQL.

Patroni from PyPI (4.1.x; Debian's 3.0.2 made an unplanned failover after a partition healed), over the data
dir's etcd (``etcd3``). The cluster's settings (``bootstrap.dcs``, written to etcd by the first member):
``synchronous_mode`` on (one synchronous standby; Patroni promotes only a member etcd lists as synchronous,
so no acknowledged commit is lost with the primary), ``use_pg_rewind`` (an old primary rejoins as a standby,
rewound), ``use_slots``, ``wal_log_hints``; archiving with ``archive_mode = on``, so only the leader archives,
into the instance's stanza of the shared backup repository; ``restore_command`` from it, so a standby that
fell behind the leader's WAL catches up from the repository.

Each member's files: ``<instance dir>/m/<host>/`` (``data``, ``s`` its socket, ``patroni.yml`` 0600 with the
replication and rewind passwords, ``log``, ``pid``).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...errors import EngineError
from .. import pgbin, proc
from ..files import write_atomic
from ..local.paths import Layout
from ..settings import EngineSettings
from . import procs
from .hosts import Host

REAPER = Path(__file__).with_name("reaper.py")
REPLICATOR = "dbos_replicator"
REWINDER = "dbos_rewind"
#: seconds: the leader lock's life in etcd (a dead primary's host is replaced after about ttl + loop_wait + the
#: time to give up on its REST API: ~22 s measured), Patroni's loop, and how long it retries etcd and PostgreSQL
#: before demoting (loop_wait + 2 * retry_timeout <= ttl). 20 is the least ttl Patroni 4 accepts (a lower one
#: is raised to 20).
TTL, LOOP_WAIT, RETRY_TIMEOUT = 20, 2, 3


@dataclass(frozen=True)
class Secrets:
    replication: str
    rewind: str


@dataclass(frozen=True)
class Member:
    """One member of an HA instance: where it runs and its files."""

    instance: str
    host: Host
    dir: Path
    port: int  #: PostgreSQL's, the same on every host
    rest_port: int  #: Patroni's REST API

    @property
    def name(self) -> str:
        return f"{self.instance}-{self.host.name}"

    @property
    def pgdata(self) -> Path:
        return self.dir / "data"

    @property
    def sockdir(self) -> Path:
        return self.dir / "s"

    @property
    def config(self) -> Path:
        return self.dir / "patroni.yml"

    @property
    def api(self) -> str:
        return f"http://{self.host.address}:{self.rest_port}"

    def running(self) -> bool:
        return procs.running(self.dir / "pid", "patroni", self.host)


def scope(instance: str) -> str:
    return f"dbos-{instance}"


def render(m: Member, *, etcd: list[str], networks: list[str], secrets: Secrets, archive_command: str,
           restore_command: str, archive_timeout: int) -> dict[str, Any]:
    """The member's Patroni configuration (as a dict: JSON is YAML)."""
    hba = [
        "local   all          postgres  peer map=dbos",
        "local   replication  postgres  peer map=dbos",
        "local   all          all       scram-sha-256",
        "host    all          postgres  all  reject",
        *(f"host    replication  {REPLICATOR}  {net}  scram-sha-256" for net in networks),
        # Patroni reads its own member's timeline and LSN over a local replication connection
        f"host    replication  {REPLICATOR}  127.0.0.1/32  scram-sha-256",
        *(f"host    all          {REWINDER}  {net}  scram-sha-256" for net in networks),
        "host    all          all       0.0.0.0/0     scram-sha-256",
    ]
    return {
        "scope": scope(m.instance),
        "namespace": "/pulumi-dbos/",
        "name": m.name,
        "log": {"level": "INFO"},
        "restapi": {"listen": f"{m.host.address}:{m.rest_port}", "connect_address": f"{m.host.address}:{m.rest_port}"},
        "etcd3": {"hosts": etcd, "protocol": "http"},
        "bootstrap": {"dcs": {
            "ttl": TTL, "loop_wait": LOOP_WAIT, "retry_timeout": RETRY_TIMEOUT,
            "maximum_lag_on_failover": 16 * 1024 * 1024,
            "synchronous_mode": True,
            "postgresql": {
                "use_pg_rewind": True, "use_slots": True,
                "parameters": {
                    "wal_level": "replica", "wal_log_hints": "on", "hot_standby": "on",
                    "max_wal_senders": 10, "max_replication_slots": 10, "wal_keep_size": "64MB",
                    "archive_mode": "on", "archive_timeout": archive_timeout,
                },
            },
        }},
        "postgresql": {
            "listen": f"{m.host.address},127.0.0.1:{m.port}",
            "connect_address": f"{m.host.address}:{m.port}",
            "data_dir": str(m.pgdata),
            "bin_dir": str(pgbin.bindir()),
            "pgpass": str(m.dir / "pgpass"),
            "use_unix_socket": True,
            "use_unix_socket_repl": False,
            "authentication": {
                "superuser": {"username": "postgres"},
                "replication": {"username": REPLICATOR, "password": secrets.replication},
                "rewind": {"username": REWINDER, "password": secrets.rewind},
            },
            # the member's own (local settings win over etcd's): pgBackRest checks that pg1-path is the server's
            # data directory, which differs per member
            "parameters": {"unix_socket_directories": str(m.sockdir), "unix_socket_permissions": "0700",
                           "cluster_name": m.name, "archive_command": archive_command},
            "recovery_conf": {"restore_command": restore_command},
            "pg_hba": hba,
            "basebackup": [{"checkpoint": "fast"}],
            "remove_data_directory_on_rewind_failure": True,
            "remove_data_directory_on_diverged_timelines": True,
        },
        "tags": {"nofailover": False, "noloadbalance": False, "clonefrom": False, "nosync": False},
    }


def write_config(layout: Layout, m: Member, config: dict[str, Any]) -> None:
    layout.mkdir(m.dir)
    layout.mkdir(m.sockdir)
    uid = layout.run_as.uid if layout.run_as.user else None
    gid = layout.run_as.gid if layout.run_as.user else None
    write_atomic(m.config, json.dumps(config, indent=1) + "\n", 0o600, uid=uid, gid=gid)


#: what the engine installs when it builds Patroni's environment itself
PATRONI_REQUIREMENTS = ("patroni[etcd3]>=4.1.5,<5", "psycopg[binary]>=3.2,<4")
_env_lock = threading.Lock()


def python(layout: Layout, settings: EngineSettings) -> str:
    """An interpreter with Patroni that the cluster user can run: ``$PULUMI_DBOS_PATRONI_PYTHON`` (scripts/setup.sh
    builds one, ``.state/patroni``), else an environment the engine builds once per data dir with uv
    (``<data_dir>/ha/patroni-env``, Debian's python3: the engine's own interpreter may live where the cluster
    user cannot reach, e.g. under /root)."""
    if settings.patroni_python:
        return settings.patroni_python
    env = layout.data_dir / "ha" / "patroni-env"
    py = env / "bin" / "python"
    with _env_lock:
        if not (env / "READY").exists():
            from uv import find_uv_bin
            base = settings.app_python or "/usr/bin/python3"
            layout.mkdir(env.parent)
            # as the apps' environments are built (runtime.py): the machine's index, proxy, CA and uv cache
            uv_env = proc.clean_env({"UV_PYTHON_DOWNLOADS": "never", "UV_NO_PROGRESS": "1", "VIRTUAL_ENV": str(env)})
            for k in ("PIP_INDEX_URL", "UV_INDEX_URL", "UV_DEFAULT_INDEX", "PIP_CERT", "SSL_CERT_FILE",
                      "REQUESTS_CA_BUNDLE", "HTTPS_PROXY", "https_proxy", "NO_PROXY", "no_proxy", "UV_CACHE_DIR",
                      "XDG_CACHE_HOME"):
                if k in os.environ:
                    uv_env[k] = os.environ[k]
            proc.run([str(find_uv_bin()), "venv", "-q", "-p", base, str(env)], timeout=300, env=uv_env)
            proc.run([str(find_uv_bin()), "pip", "install", "-q", "--compile-bytecode", "-p", str(py),
                      *PATRONI_REQUIREMENTS], timeout=600, env=uv_env,
                     hint="Patroni's environment is built from PyPI once per data dir")
            os.chmod(env.parent, 0o711)
            (env / "READY").write_text("\n".join(PATRONI_REQUIREMENTS))
    return str(py)


def start(layout: Layout, m: Member, settings: EngineSettings) -> None:
    if m.running():
        return
    py = python(layout, settings)
    # a simulated host under reaper.py: the orphaned postmaster reaped as soon as it exits (see there why); a real
    # host's init (systemd) does that, and the engine's own files need not be installed there
    reaper = [py, str(REAPER)] if m.host.netns is not None else []
    procs.start(m.host, [*reaper, py, "-m", "patroni", str(m.config)], layout.run_as, m.dir,
                env={"PATH": f"{pgbin.bindir()}:/usr/local/bin:/usr/bin:/bin"})


def stop(m: Member, timeout: float = 60) -> None:
    procs.stop(m.dir / "pid", timeout, m.host, "patroni")


def kill_all(ms: list[Member]) -> None:
    """Every member gone at once, for a destroy, whose members' data is thrown away: each Patroni killed
    (SIGKILL, all of them first, so that none restarts its PostgreSQL or takes the lead), then each PostgreSQL
    stopped in immediate mode (SIGQUIT to its postmaster). A graceful stop takes 3-5 s a member (a synchronous
    standby waits two Patroni loops to be released; Patroni lingers after its PostgreSQL is down) only to write
    checkpoints into files about to be removed: what must outlive the instance is in the repository
    (``cluster.teardown`` archives the leader's WAL first)."""
    for m in ms:
        procs.kill(m.dir / "pid", "patroni")
    for m in ms:
        procs.kill(m.pgdata / "postmaster.pid", "postgres", signal.SIGQUIT)
    for m in ms:
        with contextlib.suppress(FileNotFoundError):
            (m.dir / "pid").unlink()


# ---------------------------------------------------------------- the REST API
def get(m: Member, path: str, timeout: float = 2) -> tuple[int, dict[str, Any]]:
    """``GET`` on the member's API: (status, JSON body); (0, {}) when it does not answer."""
    try:
        with urllib.request.urlopen(f"{m.api}{path}", timeout=timeout) as r:  # noqa: S310 - our own member
            return r.status, json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as exc:
        with contextlib.suppress(ValueError):
            return exc.code, json.loads(exc.read() or b"{}")
        return exc.code, {}
    except (OSError, ValueError):
        return 0, {}


def post(m: Member, path: str, body: dict[str, Any], timeout: float = 30, method: str = "POST") -> tuple[int, str]:
    req = urllib.request.Request(f"{m.api}{path}", data=json.dumps(body).encode(), method=method,  # noqa: S310
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:  # noqa: S310 - our own member
            return r.status, r.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")
    except OSError as exc:
        raise EngineError(f"Patroni member {m.name} did not answer: {exc}") from None


def wake(m: Member) -> None:
    """Run ``m``'s HA loop now rather than at its next ``loop_wait``: a ``PATCH /config`` that changes nothing
    (``loop_wait`` to its own value: no write to etcd) wakes the loop, as any change of the cluster's settings
    does. A leader assigns a new synchronous standby over two loops (named, then confirmed): woken as soon as a
    standby streams, turning HA on is ~3 s shorter. Best effort: an unwoken loop runs at its time anyway."""
    with contextlib.suppress(EngineError):
        post(m, "/config", {"loop_wait": LOOP_WAIT}, timeout=2, method="PATCH")


def cluster(members: list[Member]) -> dict[str, Any] | None:
    """``GET /cluster`` (etcd's view: members, roles, lag, timeline) from the first member that answers."""
    for m in members:
        status, body = get(m, "/cluster")
        if status == 200 and "members" in body:
            return body
    return None
