"""The engines' settings: every ``PULUMI_DBOS_*`` variable the engines read, declared once.

Each setting is a field of :class:`EngineSettings` with its variable, default, bounds and meaning; the
docs' table of environment variables (docs/settings.md) is generated from these declarations
(``python -m pulumi_dbos.engine.settings``; a unit test keeps it fresh). :meth:`EngineSettings.from_env`
reads and checks them all at once: a bad value is one error naming the variable and its rule, never a
silent default.

An engine builds its settings once (``LocalEngine(settings=...)``, else ``from_env()`` at construction)
and hands them to what it runs (server control, apps, restores, drills); tests pass settings instead of
patching module constants. A few functions are called where no engine exists (the port claims shared by
every engine of the machine, the background workers, which inherit the variables below through their
environment) and read :func:`from_env` at call time, as the engine they serve would have.

Variables that are not engine settings stay where they belong: the CLI's (``PULUMI_DBOS_ENGINE``,
``PULUMI_DBOS_DEBUG``, ``PULUMI_DBOS_CLOUD_CA_CERT``), the set-up's and the tests' (docs/development.md),
serve's limits (``PULUMI_DBOS_SERVE_<FLAG>``, each the default of a ``serve`` flag: docs/serve.md).
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from ..errors import DbosError

Range = tuple[int, int]


def _setting(env: str, default: Any, doc: str, *, minimum: float | None = None, worker: bool = False) -> Any:
    """A field read from ``env``; ``worker``: the engine's background workers need it too (passed on in
    their environment)."""
    return field(default=default, metadata={"env": env, "doc": doc, "minimum": minimum, "worker": worker})


@dataclass(frozen=True)
class EngineSettings:
    """What an engine may be told by its environment (see the module docstring). Frozen: derive another
    with :meth:`replace`."""

    # -- where and as whom
    data_dir: Path | None = _setting(
        "PULUMI_DBOS_DATA_DIR", None, "the local engine's data dir (default `/var/lib/pulumi-dbos` as root, "
        "else `~/.local/share/pulumi-dbos`); a stack's `dbos:dataDir` wins")
    run_as: str | None = _setting(
        "PULUMI_DBOS_RUN_AS", None, "OS user of the clusters when run as root (default `postgres`)")
    app_user: str | None = _setting(
        "PULUMI_DBOS_APP_USER", None, "OS user of the apps when run as root (default `dbosapp`; serve makes one per "
        "organization)")
    app_python: str | None = _setting(
        "PULUMI_DBOS_APP_PYTHON", None, "interpreter of the apps' environments (default `/usr/bin/python3`)")
    pg_bindir: str | None = _setting(
        "PULUMI_DBOS_PG_BINDIR", None, "PostgreSQL's server binaries (default `pg_config --bindir`, else the newest "
        "`/usr/lib/postgresql/*/bin`)", worker=True)
    pgbackrest: str = _setting("PULUMI_DBOS_PGBACKREST", "pgbackrest", "the pgBackRest command", worker=True)
    backup_repo: str | None = _setting(
        "PULUMI_DBOS_BACKUP_REPO", None, "the backup repository as JSON with `dbos:backupRepo`'s keys (for "
        "`pulumi-dbos db recover` outside a stack); a stack's `dbos:backupRepo` wins")
    lock_dir: Path | None = _setting(
        "PULUMI_DBOS_LOCK_DIR", None, "where the host-wide locks of scheduled backups and drills live (default "
        "`$TMPDIR`)", worker=True)
    ports_dir: Path | None = _setting(
        "PULUMI_DBOS_PORTS_DIR", None, "the machine's port claims, shared by every engine (default "
        "`/var/tmp/pulumi-dbos-ports`, per user when not root)")
    # -- ports
    port_range: Range | None = _setting(
        "PULUMI_DBOS_PORT_RANGE", None, "`LO-HI`: instances' ports and apps' stable ports (default 15432-19999, "
        "narrowed to lie outside the kernel's ephemeral range)")
    app_backend_ports: Range | None = _setting(
        "PULUMI_DBOS_APP_BACKEND_PORTS", None, "`LO-HI`: ports of the apps' serving processes behind their stable "
        "ports (default 20000-22999, narrowed likewise)")
    # -- clusters
    wal_segment_mb: int = _setting(
        "PULUMI_DBOS_WAL_SEGMENT_MB", 4, "WAL segment size of new clusters (MiB; a power of 2)", minimum=1,
        worker=True)
    template_cache: Path | None = _setting(
        "PULUMI_DBOS_TEMPLATE_CACHE", None, "a directory where the template cluster (`initdb`'s output: no password, "
        "no data) is kept for every data dir of this machine: a new data dir copies it instead of running `initdb` "
        "(default: none, one `initdb` per data dir); must be the engine user's, not writable by others",
        worker=True)
    pool_size: int = _setting(
        "PULUMI_DBOS_POOL_SIZE", 2, "stopped copies of the template kept ready for provisions (0: none)", minimum=0,
        worker=True)
    start_timeout: float = _setting(
        "PULUMI_DBOS_START_TIMEOUT", 60.0, "seconds a cluster may take to start", minimum=1, worker=True)
    recovery_timeout: float = _setting(
        "PULUMI_DBOS_RECOVERY_TIMEOUT", 900.0, "seconds a restore's recovery may take", minimum=1, worker=True)
    # -- high availability (engine/ha)
    patroni_python: str | None = _setting(
        "PULUMI_DBOS_PATRONI_PYTHON", None, "an interpreter with Patroni that the clusters' OS user can run "
        "(scripts/setup.sh builds `.state/patroni`; default: the engine builds one per data dir with uv)")
    ha_member_timeout: float = _setting(
        "PULUMI_DBOS_HA_MEMBER_TIMEOUT", 180.0, "seconds a high-availability member may take to clone, start or "
        "take an instance over", minimum=1)
    ha_hosts: str | None = _setting(
        "PULUMI_DBOS_HA_HOSTS", None, "real hosts of high-availability instances, reached over SSH: "
        "`[user@]address` separated by commas, named h1, h2, ... in that order (default: network namespaces of "
        "this machine; docs/engines.md, \"Real hosts\")")
    ha_ssh_config: Path | None = _setting(
        "PULUMI_DBOS_HA_SSH_CONFIG", None, "an ssh_config file for the hosts of `PULUMI_DBOS_HA_HOSTS` (`ssh -F`: "
        "keys, known hosts, port; default: the engine's user's ~/.ssh/config)")
    ha_members: int = _setting(
        "PULUMI_DBOS_HA_MEMBERS", 0, "new instances the engine provisions or restores are high-availability with this "
        "many members (2-9; 0: single servers). For operators whose every database should survive a host's loss "
        "(e.g. a `pulumi-dbos serve`, whose API has no such field); a stack's `highAvailability` decides for its own "
        "instances", minimum=0)
    # -- scheduled backups and drills
    wal_backup_mb: int = _setting(
        "PULUMI_DBOS_WAL_BACKUP_MB", 128, "WAL written since the newest backup that triggers a new one (MiB; 0: "
        "never)", minimum=0, worker=True)
    wal_check_seconds: float = _setting(
        "PULUMI_DBOS_WAL_CHECK_SECONDS", 2.0, "how often the backup watcher looks", minimum=0.2, worker=True)
    drills_kept: int = _setting(
        "PULUMI_DBOS_DRILLS_KEPT", 20, "drill results kept per instance", minimum=1)
    drill_max_load: float = _setting(
        "PULUMI_DBOS_DRILL_MAX_LOAD", 1.0, "scheduled drills skip a round above this 1-minute load average per CPU "
        "(negative: always skip)")
    # -- apps
    app_start_timeout: float = _setting(
        "PULUMI_DBOS_APP_START_TIMEOUT", 120.0, "seconds a new app version may take to answer", minimum=1)
    app_answer_timeout: float = _setting(
        "PULUMI_DBOS_APP_ANSWER_TIMEOUT", 2.0, "seconds one health request to an app may take", minimum=0.1)
    migrate_timeout: float = _setting(
        "PULUMI_DBOS_MIGRATE_TIMEOUT", 600.0, "seconds `dbos migrate` may take", minimum=1)
    env_timeout: float = _setting(
        "PULUMI_DBOS_ENV_TIMEOUT", 900.0, "seconds building an app's virtualenv may take", minimum=1)
    build_memory_mib: int = _setting(
        "PULUMI_DBOS_BUILD_MEMORY_MIB", 2048, "memory limit of an environment build (MiB)", minimum=64)
    app_max_tasks: int = _setting(
        "PULUMI_DBOS_APP_MAX_TASKS", 512, "processes and threads per app (its cgroup's pids.max)", minimum=8)
    app_max_procs: int = _setting(
        "PULUMI_DBOS_APP_MAX_PROCS", 2048, "processes of the apps' OS user (RLIMIT_NPROC)", minimum=8)
    cgroup_root: Path = _setting(
        "PULUMI_DBOS_CGROUP_ROOT", Path("/sys/fs/cgroup"), "where cgroups are mounted")
    # -- the dbos-cloud engine
    cloud_deadline: float = _setting(
        "PULUMI_DBOS_CLOUD_DEADLINE", 600.0, "seconds DBOS Cloud may take to make an instance available", minimum=1)
    cloud_app_deadline: float = _setting(
        "PULUMI_DBOS_CLOUD_APP_DEADLINE", 600.0, "seconds DBOS Cloud may take to deploy an app", minimum=1)
    cloud_connect_timeout: float = _setting(
        "PULUMI_DBOS_CLOUD_CONNECT_TIMEOUT", 10.0, "seconds DBOS Cloud may take to accept a connection and finish "
        "the TLS handshake (not retried: a stuck server)", minimum=0.1)
    cloud_unreachable_memo: float = _setting(
        "PULUMI_DBOS_CLOUD_UNREACHABLE_MEMO", 30.0, "seconds a process remembers that DBOS Cloud did not answer "
        "(later calls fail at once)", minimum=0)
    # -- serve
    serve_keep_versions: int = _setting(
        "PULUMI_DBOS_SERVE_KEEP_VERSIONS", 10, "stored versions serve keeps per app", minimum=1)

    # ------------------------------------------------------------------------------------------ reading
    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> EngineSettings:
        """Every setting from ``environ`` (default ``os.environ``); unset or empty: the default."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(f.metadata["env"], "").strip()
            if raw:
                values[f.name] = _parse(f, raw)
        return cls(**values)

    def replace(self, **changes: Any) -> EngineSettings:
        return dataclasses.replace(self, **changes)

    def worker_env(self) -> dict[str, str]:
        """What the background workers must see of these settings, as variables (they run as other processes)."""
        out: dict[str, str] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.metadata["worker"] and value is not None and value != f.default:
                out[f.metadata["env"]] = f"{value[0]}-{value[1]}" if isinstance(value, tuple) else str(value)
        return out


def from_env() -> EngineSettings:
    """The settings of this process's environment now (for code that runs without an engine)."""
    return EngineSettings.from_env()


def _parse(f: dataclasses.Field[Any], raw: str) -> Any:
    var, kind, minimum = f.metadata["env"], str(f.type), f.metadata["minimum"]
    if "Range" in kind:
        try:
            lo, hi = (int(x) for x in raw.split("-"))
        except ValueError:
            raise DbosError(f"{var}={raw!r} is not LO-HI (e.g. 15432-19999)") from None
        if not 0 < lo <= hi < 65536:
            raise DbosError(f"{var}={raw!r}: need 0 < LO <= HI < 65536")
        return lo, hi
    if "Path" in kind:
        return Path(raw).expanduser()
    if kind.startswith(("int", "float")):
        number: float
        try:
            number = int(raw) if kind.startswith("int") else float(raw)
        except ValueError:
            raise DbosError(f"{var}={raw!r} is not {'an integer' if kind.startswith('int') else 'a number'}") \
                from None
        if minimum is not None and number < minimum:
            raise DbosError(f"{var}={raw!r}: must be at least {minimum:g}")
        return number
    return raw


def markdown_table() -> str:
    """docs/settings.md's table (generated: see the module docstring)."""
    rows = ["| variable | default | what it sets |", "|---|---|---|"]
    for f in fields(EngineSettings):
        default = f.default
        shown = "—" if default is None else f"`{default}`"
        rows.append(f"| `{f.metadata['env']}` | {shown} | {f.metadata['doc']} |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":  # pragma: no cover - the docs' generator
    sys.stdout.write(markdown_table())
