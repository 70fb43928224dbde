"""The ``local`` engine: each instance is a real PostgreSQL cluster on this machine.

Layout under ``data_dir`` (0700, owned by the OS user that runs the clusters)::

    catalog.db                  control-plane catalog (SQLite)
    templates/pg<ver>/data      a prepared, never-started cluster (made once)
    instances/<name>/data       the cluster (PGDATA)
    instances/<name>/archive    its WAL archive
    instances/<name>/backups/   its base backups
    instances/<name>/s/         its Unix socket (admin access only)
    instances/<name>/server.log

Provisioning clones the template cluster instead of running ``initdb`` each
time, then sets the user's credentials; that is why it is faster than raw
``initdb`` + ``pg_ctl start``. Isolation is not weakened: each clone is its own
cluster, own port, own 0700 directory, and TCP accepts only scram-sha-256.

Administration (creating the user's role, password resets, backups) goes
through the instance's Unix socket as the internal bootstrap superuser
``postgres`` with ``peer`` authentication, mapped only from the OS user running
the cluster and from root. ``postgres`` is rejected over TCP, which is why it is
a reserved username. Passwords never appear in argv or SQL text: the role's
password is set from a SCRAM verifier computed client-side.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
import re
import shutil
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from ..errors import AlreadyExistsError, DbosError, EngineError, NotFoundError, TimeoutExpired
from ..timeutil import parse_rfc3339, to_pg, to_rfc3339, utcnow
from . import pgbin, proc
from .base import (
    STATUS_AVAILABLE,
    STATUS_CREATING,
    STATUS_RESTORING,
    STATUS_STOPPED,
    STATUS_UNREACHABLE,
    BackupInfo,
    Engine,
    InstanceInfo,
)
from .catalog import Catalog

log = logging.getLogger("pulumi_dbos.engine")

ADMIN_ROLE = "postgres"
HOST = "127.0.0.1"
DEFAULT_PORT_RANGE = (54320, 59999)
START_TIMEOUT = float(os.environ.get("PULUMI_DBOS_START_TIMEOUT", "60"))
RECOVERY_TIMEOUT = float(os.environ.get("PULUMI_DBOS_RECOVERY_TIMEOUT", "900"))
_SOCKET_MAX = 107
# 4 MB WAL segments (default 16): a clone copies 4 MB of WAL instead of 16, and every forced switch before
# a restore archives 4 MB instead of 16; 1 MB would clone faster still but restore slower
# (one restore_command per segment). PITR granularity is per commit either way.
WAL_SEGMENT_MB = int(os.environ.get("PULUMI_DBOS_WAL_SEGMENT_MB", "4"))
_SAFE_PATH = re.compile(r"^[A-Za-z0-9_./+-]+$")

_template_lock = threading.Lock()


def default_data_dir() -> Path:
    """``$PULUMI_DBOS_DATA_DIR``, else a place the cluster user can reach.

    As root, root's home is 0700 and the ``postgres`` user could not reach it,
    so the default is ``/var/lib/pulumi-dbos``; otherwise
    ``~/.local/share/pulumi-dbos``.
    """
    env = os.environ.get("PULUMI_DBOS_DATA_DIR")
    if env:
        return Path(env).expanduser()
    if os.geteuid() == 0:
        return Path("/var/lib/pulumi-dbos")
    return Path("~/.local/share/pulumi-dbos").expanduser()


def default_run_as() -> str | None:
    env = os.environ.get("PULUMI_DBOS_RUN_AS")
    if env:
        return env
    return "postgres" if os.geteuid() == 0 else None


def check_data_dir(data_dir: Path, run_as: str | None) -> list[str]:
    """Problems that would stop ``run_as`` from using ``data_dir`` (empty list = fine).

    Used at preview time, so nothing is created here.
    """
    problems: list[str] = []
    if not data_dir.is_absolute():
        problems.append(f"{data_dir} must be an absolute path")
        return problems
    if not _SAFE_PATH.match(str(data_dir)):
        problems.append(f"{data_dir} may contain only letters, digits and _ . / + -")
    # instances/<16 chars>/s/.s.PGSQL.65535
    if len(str(data_dir)) + len("/instances/") + 16 + len("/s/.s.PGSQL.65535") > _SOCKET_MAX:
        problems.append(f"{data_dir} is too long for a Unix socket path (keep it under 60 characters)")
    if run_as is not None:
        try:
            pw = pwd.getpwnam(run_as)
        except KeyError:
            problems.append(
                f"OS user {run_as!r} does not exist; PostgreSQL refuses to run as root, so the local engine runs "
                "clusters as an unprivileged user: create it (Debian's postgresql package creates 'postgres') "
                "or set dbos:runAs / PULUMI_DBOS_RUN_AS"
            )
            return problems
        groups = {g for g in os.getgrouplist(run_as, pw.pw_gid)}
        # every existing ancestor must be searchable by run_as
        p = data_dir
        ancestors = []
        while True:
            ancestors.append(p)
            if p.parent == p:
                break
            p = p.parent
        for anc in reversed(ancestors):
            if not anc.exists():
                break
            st = anc.stat()
            if st.st_uid == pw.pw_uid:
                ok = bool(st.st_mode & 0o100)
            elif st.st_gid in groups:
                ok = bool(st.st_mode & 0o010)
            else:
                ok = bool(st.st_mode & 0o001)
            if not ok and anc != data_dir:
                problems.append(
                    f"OS user {run_as!r} cannot reach {data_dir}: {anc} is not searchable by it "
                    f"(mode {oct(st.st_mode & 0o777)}); choose a dataDir under /var/lib or /tmp, or chmod o+x {anc}"
                )
                break
    return problems


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


def _ports_dir() -> Path:
    return Path(os.environ.get("PULUMI_DBOS_PORTS_DIR", "/var/tmp/pulumi-dbos-ports"))


def _claim_port(port: int, data_dir: Path, name: str) -> bool:
    """Machine-wide reservation of ``port`` for (data_dir, name), so that engines in other data dirs
    never take the port of a *stopped* instance. Stale claims (their instance is gone) are reclaimed."""
    d = _ports_dir()
    if not d.exists():
        d.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(OSError):
            os.chmod(d, 0o1777)
    path = d / str(port)
    mine = f"{data_dir}\n{name}\n"
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                owner = path.read_text()
            except OSError:
                continue
            if owner == mine:
                return True
            if _claim_is_live(owner, port):
                return False
            with contextlib.suppress(OSError):
                path.unlink()
            continue
        with os.fdopen(fd, "w") as fh:
            fh.write(mine)
        return True
    return False


def _claim_is_live(owner: str, port: int) -> bool:
    parts = owner.split("\n")
    if len(parts) < 2:
        return False
    catalog = Path(parts[0]) / "catalog.db"
    if not catalog.exists():
        return False
    try:
        db = sqlite3.connect(f"file:{catalog}?mode=ro", uri=True, timeout=10)
        try:
            row = db.execute("SELECT port FROM instances WHERE name = ?", (parts[1],)).fetchone()
        finally:
            db.close()
    except sqlite3.Error:
        return True  # cannot tell: leave it alone
    return bool(row) and int(row[0]) == port


def _release_port(port: int, data_dir: Path, name: str) -> None:
    path = _ports_dir() / str(port)
    with contextlib.suppress(OSError):
        if path.read_text() == f"{data_dir}\n{name}\n":
            path.unlink()


def _port_range() -> tuple[int, int]:
    env = os.environ.get("PULUMI_DBOS_PORT_RANGE")
    if env:
        lo, hi = env.split("-")
        return int(lo), int(hi)
    return DEFAULT_PORT_RANGE


class LocalEngine(Engine):
    """Instances as local PostgreSQL clusters. Thread-safe; holds no open connections."""

    def __init__(self, data_dir: str | Path | None = None, run_as: str | None | bool = True) -> None:
        self.data_dir = Path(data_dir).expanduser() if data_dir else default_data_dir()
        if run_as is True:
            run_as = default_run_as()
        self.run_as = proc.RunAs(run_as if isinstance(run_as, str) and os.geteuid() == 0 else None)
        self._catalog: Catalog | None = None

    # ------------------------------------------------------------------ paths & setup
    @property
    def catalog(self) -> Catalog:
        if self._catalog is None:
            self._prepare()
            self._catalog = Catalog(self.data_dir)
        return self._catalog

    def inst_dir(self, name: str) -> Path:
        return self.data_dir / "instances" / name

    def pgdata(self, name: str) -> Path:
        return self.inst_dir(name) / "data"

    def _sockdir(self, name: str) -> Path:
        return self.inst_dir(name) / "s"

    def _mkdir(self, path: Path) -> None:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(path, 0o700)
        if os.geteuid() == 0 and self.run_as.user:
            os.chown(path, self.run_as.uid, self.run_as.gid)

    def _prepare(self) -> None:
        problems = check_data_dir(self.data_dir, self.run_as.user)
        if problems:
            raise EngineError("; ".join(problems))
        self._mkdir(self.data_dir)
        self._mkdir(self.data_dir / "instances")
        self._mkdir(self.data_dir / "templates")

    # ------------------------------------------------------------------ template
    def template(self) -> Path:
        """The prepared cluster clones are made from (created once per data dir and PG version)."""
        version = pgbin.server_version().split(".")[0]
        tdir = self.data_dir / "templates" / f"pg{version}-wal{WAL_SEGMENT_MB}"
        ready = tdir / "READY"
        if ready.exists():
            return tdir / "data"
        with _template_lock, self.catalog.locked():
            if ready.exists():
                return tdir / "data"
            if tdir.exists():
                shutil.rmtree(tdir)
            self._mkdir(tdir)
            data = tdir / "data"
            proc.run(
                [pgbin.tool("initdb"), "-D", str(data), "-U", ADMIN_ROLE, "-E", "UTF8", "--no-locale",
                 "--auth-local=peer", "--auth-host=scram-sha-256", "--no-instructions",
                 f"--wal-segsize={WAL_SEGMENT_MB}"],
                run_as=self.run_as, timeout=300, hint="initdb of the template cluster failed",
            )
            users = sorted({"root", self.run_as.name, pwd.getpwuid(os.getuid()).pw_name})
            (data / "pg_ident.conf").write_text(
                "# pulumi-dbos: OS users allowed to administer this cluster over its private socket\n"
                + "".join(f"dbos {u} {ADMIN_ROLE}\n" for u in users)
            )
            (data / "pg_hba.conf").write_text(
                "# pulumi-dbos: admin only over the instance's private socket; TCP only with scram-sha-256\n"
                f"local   all          {ADMIN_ROLE}  peer map=dbos\n"
                f"local   replication  {ADMIN_ROLE}  peer map=dbos\n"
                "local   all          all       scram-sha-256\n"
                f"host    all          {ADMIN_ROLE}  all  reject\n"
                "host    all          all       127.0.0.1/32  scram-sha-256\n"
                "host    all          all       ::1/128       scram-sha-256\n"
                "host    all          all       0.0.0.0/0     scram-sha-256\n"
            )
            with open(data / "postgresql.conf", "a") as fh:
                fh.write(
                    "\n# ---- pulumi-dbos ----\n"
                    "password_encryption = 'scram-sha-256'\n"
                    "wal_level = replica\n"
                    "archive_mode = on\n"
                    "archive_timeout = 300\n"
                    "shared_buffers = 32MB\n"
                    "log_statement = 'none'\n"
                    "log_min_error_statement = 'panic'\n"
                    "log_line_prefix = '%m [%p] '\n"
                    "include_if_exists = 'instance.conf'\n"
                )
            for f in ("pg_ident.conf", "pg_hba.conf", "postgresql.conf"):
                self._own(data / f, 0o600)
            (tdir / "CHECKPOINT_WAL").write_text(self._checkpoint_wal(data))
            ready.write_text(pgbin.server_version())
            return data

    def _own(self, path: Path, mode: int) -> None:
        os.chmod(path, mode)
        if os.geteuid() == 0 and self.run_as.user:
            os.chown(path, self.run_as.uid, self.run_as.gid)

    # ------------------------------------------------------------------ ports
    def _allocate_port(self, db: Any, wanted: int | None, name: str) -> int:
        used = self.catalog.used_ports(db)
        if wanted is not None:
            if wanted in used:
                raise EngineError(f"port {wanted} is already used by another instance",
                                  hint="leave port unset to get a free one")
            if not _port_free(wanted):
                raise EngineError(f"port {wanted} on {HOST} is already in use by another process",
                                  hint="choose another port or leave port unset")
            if not _claim_port(wanted, self.data_dir, name):
                raise EngineError(f"port {wanted} belongs to a (stopped) instance of another pulumi-dbos data dir",
                                  hint="choose another port or leave port unset")
            return wanted
        lo, hi = _port_range()
        for port in range(lo, hi + 1):
            if port not in used and _port_free(port) and _claim_port(port, self.data_dir, name):
                return port
        raise EngineError(f"no free port in {lo}-{hi}", hint="set PULUMI_DBOS_PORT_RANGE")

    # ------------------------------------------------------------------ server control
    def _write_instance_conf(self, name: str, port: int, extra: str = "") -> None:
        data = self.pgdata(name)
        archive = self.inst_dir(name) / "archive"
        conf = (
            "# written by pulumi-dbos; do not edit\n"
            f"port = {port}\n"
            f"listen_addresses = '{HOST}'\n"
            f"unix_socket_directories = '{self._sockdir(name)}'\n"
            "unix_socket_permissions = 0700\n"
            f"cluster_name = 'dbos-{name}'\n"
            f"archive_command = 'test ! -f {archive}/%f && cp %p {archive}/%f.part && mv {archive}/%f.part {archive}/%f'\n"
            + extra
        )
        (data / "instance.conf").write_text(conf)
        self._own(data / "instance.conf", 0o600)

    def _server_pid(self, name: str) -> int | None:
        pidfile = self.pgdata(name) / "postmaster.pid"
        try:
            pid = int(pidfile.read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return None
        return pid if b"postgres" in cmd else None

    def _log_tail(self, name: str, lines: int = 15) -> str:
        try:
            text = (self.inst_dir(name) / "server.log").read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def _pg_ctl_start(self, name: str, timeout: float = START_TIMEOUT, wait_ready: bool = True) -> None:
        """Start the server; wait (polling its socket every 10 ms, pg_ctl -w polls every 100 ms) until ready."""
        try:
            proc.run(
                [pgbin.tool("pg_ctl"), "start", "-D", str(self.pgdata(name)), "-W", "-s",
                 "-l", str(self.inst_dir(name) / "server.log")],
                run_as=self.run_as, timeout=60,
            )
        except EngineError as exc:
            raise EngineError(
                f"the server of instance {name!r} failed to start: {exc.message}\nserver log:\n{self._log_tail(name)}",
                hint="see the server log above") from None
        if not wait_ready:
            return
        port = int(self.catalog.get(name)["port"]) if self.catalog.get(name) else 0  # type: ignore[index]
        sock = self._sockdir(name) / f".s.PGSQL.{port}"
        deadline = time.monotonic() + timeout
        started = time.monotonic()
        while True:
            if sock.exists():
                try:
                    with psycopg.connect(host=str(self._sockdir(name)), port=port, user=ADMIN_ROLE,
                                         dbname="postgres", connect_timeout=5, sslmode="disable"):
                        return
                except psycopg.OperationalError as exc:
                    if "starting up" not in str(exc) and "recovery" not in str(exc) and "shutting down" not in str(exc):
                        if time.monotonic() - started > 1 and self._server_pid(name) is None:
                            raise self._start_failed(name, timeout) from None
            elif time.monotonic() - started > 0.5 and self._server_pid(name) is None:
                raise self._start_failed(name, timeout) from None
            if time.monotonic() > deadline:
                raise TimeoutExpired(
                    f"the server of instance {name!r} did not accept connections within {timeout:.0f}s\n"
                    f"server log:\n{self._log_tail(name)}",
                    hint="set PULUMI_DBOS_START_TIMEOUT to wait longer")
            time.sleep(0.01)

    def _start_failed(self, name: str, timeout: float) -> EngineError:
        time.sleep(0.05)
        return EngineError(
            f"the server of instance {name!r} failed to start (deadline {timeout:.0f}s)\n"
            f"server log:\n{self._log_tail(name)}",
            hint="see the server log above; if the port is taken by another process, set a different port")

    def _pg_ctl_stop(self, name: str, mode: str = "fast", timeout: float = 60) -> None:
        pid = self._server_pid(name)
        proc.run([pgbin.tool("pg_ctl"), "stop", "-D", str(self.pgdata(name)), "-m", mode, "-w",
                  "-t", str(int(timeout)), "-s"], run_as=self.run_as, timeout=timeout + 15)
        # pg_ctl returns once the pid file is gone; wait for the process itself too
        deadline = time.monotonic() + 10
        while pid and _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.02)

    def _kill_server(self, name: str) -> None:
        """Stop the server if one runs, however it is (used in clean-ups)."""
        if self._server_pid(name) is None:
            return
        try:
            self._pg_ctl_stop(name, "immediate", 30)
        except DbosError:
            pid = self._server_pid(name)
            if pid:
                with contextlib.suppress(OSError):
                    os.kill(pid, 9)

    @contextlib.contextmanager
    def admin(self, name: str, port: int, dbname: str = "postgres") -> Iterator[psycopg.Connection[Any]]:
        """An admin connection over the instance's private Unix socket (peer auth, no password)."""
        try:
            conn = psycopg.connect(host=str(self._sockdir(name)), port=port, user=ADMIN_ROLE, dbname=dbname,
                                   connect_timeout=10, autocommit=True, sslmode="disable")
        except psycopg.Error as exc:
            raise EngineError(f"cannot reach instance {name!r} over its admin socket: {exc}",
                              hint="is it running? `pulumi-dbos db status NAME`; `pulumi up` starts it") from None
        try:
            yield conn
        finally:
            conn.close()

    @staticmethod
    def _set_password(conn: psycopg.Connection[Any], username: str, password: str, create: bool) -> None:
        verifier = conn.pgconn.encrypt_password(password.encode(), username.encode(), b"scram-sha-256").decode()
        if create:
            conn.execute(sql.SQL("CREATE ROLE {} WITH LOGIN CREATEDB CREATEROLE PASSWORD {}").format(
                sql.Identifier(username), sql.Literal(verifier)))
            conn.execute(sql.SQL("GRANT pg_monitor, pg_signal_backend TO {}").format(sql.Identifier(username)))
            conn.execute(sql.SQL("ALTER DATABASE postgres OWNER TO {}").format(sql.Identifier(username)))
        else:
            conn.execute(sql.SQL("ALTER ROLE {} WITH LOGIN PASSWORD {}").format(
                sql.Identifier(username), sql.Literal(verifier)))

    # ------------------------------------------------------------------ catalog → info
    def _info(self, row: dict[str, Any]) -> InstanceInfo:
        linked = row["kind"] == "linked"
        status = row["status"]
        latest: str | None = None
        if not linked and not self.pgdata(row["name"]).is_dir() and status not in (STATUS_CREATING,
                                                                                    STATUS_RESTORING):
            status = "missing"  # its directory was removed out of band; `pulumi refresh` drops it
        elif not linked and status not in (STATUS_CREATING, STATUS_RESTORING):
            running = self._server_pid(row["name"]) is not None
            status = STATUS_AVAILABLE if running else STATUS_STOPPED
            latest = to_rfc3339(utcnow()) if running else self._last_archived_time(row["name"])
        earliest = None if linked else self._earliest(row)
        return InstanceInfo(
            name=row["name"], status=status, hostname=row["hostname"], port=row["port"],
            username=row["username"], is_linked=linked, retention_hours=row["retention_hours"],
            created_at=row["created_at"], earliest_restorable_time=earliest, latest_restorable_time=latest,
            source_instance=row["source"], restored_to=row["restored_to"],
        )

    def _earliest(self, row: dict[str, Any]) -> str | None:
        backups = self.catalog.backups(row["name"])
        candidates = [row["earliest"]] if row["earliest"] else []
        if backups:
            candidates.append(backups[0]["finished_at"])
        return max(candidates) if candidates else None

    def _last_archived_time(self, name: str) -> str | None:
        archive = self.inst_dir(name) / "archive"
        try:
            mtimes = [p.stat().st_mtime for p in archive.iterdir() if not p.name.endswith(".part")]
        except OSError:
            return None
        if not mtimes:
            return None
        return to_rfc3339(datetime.fromtimestamp(max(mtimes)).astimezone())

    # ------------------------------------------------------------------ public API
    def info(self, name: str) -> InstanceInfo | None:
        row = self.catalog.get(name)
        if row is None:
            return None
        if row["kind"] != "linked" and not self.pgdata(name).is_dir():
            return None  # deleted out of band: the catalog row is stale
        return self._info(row)

    def list(self) -> list[InstanceInfo]:
        return [self._info(r) for r in self.catalog.all()]

    def port_problem(self, port: int, name: str) -> str | None:
        """Why ``port`` cannot be used by instance ``name`` (None = usable). Creates nothing."""
        if self.data_dir.joinpath("catalog.db").exists():
            for other in self.catalog.all():
                if other["port"] == port and other["name"] != name and other["kind"] != "linked":
                    return f"port {port} is already used by instance {other['name']!r}"
        row = self.catalog.get(name) if self.data_dir.joinpath("catalog.db").exists() else None
        if (row is None or row["port"] != port) and not _port_free(port):
            return f"port {port} on {HOST} is already in use by another process"
        return None

    def change_port(self, name: str, port: int) -> InstanceInfo:
        row = self._require(name)
        if row["port"] != port:
            with self.catalog.locked() as db:
                self._allocate_port(db, port, name)
                db.execute("UPDATE instances SET port = ? WHERE name = ?", (port, name))
            _release_port(row["port"], self.data_dir, name)
            was_running = self._server_pid(name) is not None
            if was_running:
                self._pg_ctl_stop(name)
            self._write_instance_conf(name, port)
            try:
                self._pg_ctl_start(name)
            except DbosError:
                # leave the old instance working: back to the old port
                self.catalog.update(name, port=row["port"])
                self._write_instance_conf(name, row["port"])
                if was_running:
                    self._pg_ctl_start(name)
                raise
        info = self.info(name)
        assert info is not None
        return info

    def exists(self, name: str) -> bool:
        return self.catalog.get(name) is not None or self.inst_dir(name).exists()

    def _require(self, name: str) -> dict[str, Any]:
        row = self.catalog.get(name)
        if row is None:
            raise NotFoundError(f"instance {name!r} does not exist in {self.data_dir}",
                                hint="`pulumi-dbos db list` shows the instances this engine knows")
        return row

    def _reserve(self, name: str, kind: str, username: str, port: int | None, retention_hours: int,
                 status: str, **extra: Any) -> int:
        # defence in depth: names become paths and SQL identifiers (the resources validate them too)
        if not re.match(r"^[a-z0-9_]{3,16}$", name) or not re.match(r"^[a-z0-9_]{1,63}$", username):
            raise EngineError(f"invalid instance name or username: {name!r}, {username!r}",
                              hint="names are 3-16 characters of [a-z0-9_]")
        with self.catalog.locked() as db:
            if db.execute("SELECT 1 FROM instances WHERE name = ?", (name,)).fetchone():
                raise AlreadyExistsError(
                    f"an instance named {name!r} already exists in {self.data_dir}",
                    hint="choose another instance_name, or set adopt=True to take it over")
            if self.inst_dir(name).exists():
                # A directory without a catalog row is debris of a crashed create: ours to remove.
                log.warning("removing leftover directory %s of a failed create", self.inst_dir(name))
                shutil.rmtree(self.inst_dir(name))
            chosen = self._allocate_port(db, port, name) if kind != "linked" else (port or 5432)
            row = dict(name=name, kind=kind, status=status, hostname=extra.pop("hostname", HOST), port=chosen,
                       username=username, retention_hours=retention_hours, created_at=to_rfc3339(utcnow()),
                       pg_version=pgbin.server_version() if kind != "linked" else None, **extra)
            self.catalog.insert(db, row)
            return chosen

    def _abort_create(self, name: str) -> None:
        """Undo a failed create: server, directory, port claim, catalog row (each best effort)."""
        with contextlib.suppress(Exception):
            row = self.catalog.get(name)
            if row is not None and row["kind"] != "linked":
                _release_port(row["port"], self.data_dir, name)
        with contextlib.suppress(Exception):
            self._kill_server(name)
        with contextlib.suppress(OSError):
            shutil.rmtree(self.inst_dir(name))
        with contextlib.suppress(Exception):
            self.catalog.delete(name)

    def provision(self, name: str, username: str, password: str, *, port: int | None = None,
                  retention_hours: int = 24, owner: str | None = None) -> InstanceInfo:
        try:
            template = self.template()
            port = self._reserve(name, "local", username, port, retention_hours, STATUS_CREATING, owner=owner)
        except (OSError, sqlite3.Error) as exc:
            raise EngineError(f"cannot register instance {name!r} in {self.data_dir}: {exc}",
                              hint="is the data dir's file system writable and not full?") from None
        try:
            idir = self.inst_dir(name)
            for sub in ("", "archive", "backups", "s"):
                self._mkdir(idir / sub)
            started = to_rfc3339(utcnow())
            # The cluster is a copy of the template; the template itself, hard-linked, is the
            # instance's first (cold) base backup: it is never started, so its files never change.
            proc.run(["cp", "-a", str(template), str(self.pgdata(name))], run_as=self.run_as, timeout=120)
            backup_dir = idir / "backups" / "base-000"
            proc.run(["cp", "-al", str(template), str(backup_dir)], run_as=self.run_as, timeout=120)
            self._write_instance_conf(name, port)
            self._pg_ctl_start(name)
            with self.admin(name, port) as conn:
                self._set_password(conn, username, password, create=True)
                earliest = conn.execute("SELECT clock_timestamp()").fetchone()[0]  # type: ignore[index]
            self.catalog.add_backup(name, "base-000", started, started, str(backup_dir),
                                    self._template_wal(template))
            self.catalog.update(name, status=STATUS_AVAILABLE, earliest=to_rfc3339(earliest))
        except BaseException as exc:
            self._abort_create(name)
            if isinstance(exc, DbosError):
                raise EngineError(f"provisioning instance {name!r} failed and was rolled back: {exc.message}",
                                  hint=exc.hint) from None
            if isinstance(exc, (OSError, sqlite3.Error)):
                raise EngineError(f"provisioning instance {name!r} failed and was rolled back: {exc}",
                                  hint="is the data dir's file system writable and not full?") from None
            raise
        info = self.info(name)
        assert info is not None
        return info

    def settle_retry(self, name: str, owner: str | None) -> bool:
        """Before a (re)create by ``owner``: clean up its own half-made instance of that name.

        Returns True when a complete instance of this owner already exists (a create that
        finished after the caller was killed): the caller takes it over instead of failing.
        """
        row = self.catalog.get(name)
        if row is None or owner is None or row.get("owner") != owner:
            return False
        if row["status"] in (STATUS_CREATING, STATUS_RESTORING) or not self.pgdata(name).is_dir():
            log.warning("removing half-made instance %r left by an interrupted create", name)
            self.destroy(name)
            return False
        return True

    def adopt(self, name: str) -> InstanceInfo:
        self._require(name)
        info = self.start(name)
        return info

    def _template_wal(self, template: Path) -> str:
        cached = template.parent / "CHECKPOINT_WAL"
        if not cached.exists():
            cached.write_text(self._checkpoint_wal(template))
        return cached.read_text().strip()

    def _checkpoint_wal(self, pgdata: Path) -> str:
        out = proc.run([pgbin.tool("pg_controldata"), str(pgdata)], run_as=self.run_as, timeout=30).stdout
        m = re.search(r"Latest checkpoint's REDO WAL file:\s*(\S+)", out)
        if not m:
            raise EngineError(f"cannot read the checkpoint WAL file of {pgdata}")
        return m.group(1)

    def _clear_after_crash(self, name: str) -> None:
        """After a postmaster was killed: wait for (or kill) its orphaned children, remove the stale pid file.

        Postgres processes run with the data dir as their working directory, which identifies them
        without confusing instances of the same name in other data dirs.
        """
        pidfile = self.pgdata(name) / "postmaster.pid"
        try:
            pid = int(pidfile.read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            pid = 0
        if pid and _alive(pid):
            return
        pgdata = str(self.pgdata(name).resolve())

        def orphans() -> list[int]:
            found = []
            for p in Path("/proc").glob("[0-9]*/cwd"):
                with contextlib.suppress(OSError):
                    if os.readlink(p) == pgdata and _alive(int(p.parent.name)):
                        found.append(int(p.parent.name))
            return found

        deadline = time.monotonic() + 10
        while orphans() and time.monotonic() < deadline:
            time.sleep(0.05)
        for opid in orphans():
            with contextlib.suppress(OSError):
                os.kill(opid, 9)
        time.sleep(0.05)
        with contextlib.suppress(FileNotFoundError):
            pidfile.unlink()
        # the killed postmaster's socket and its lock file (Postgres trusts a lock whose pid
        # still exists, e.g. as an unreaped zombie)
        for stale in self._sockdir(name).glob(".s.PGSQL.*"):
            with contextlib.suppress(FileNotFoundError):
                stale.unlink()

    def start(self, name: str) -> InstanceInfo:
        row = self._require(name)
        if row["kind"] != "linked" and self._server_pid(name) is None:
            self._clear_after_crash(name)
            self._pg_ctl_start(name)
        info = self.info(name)
        assert info is not None
        return info

    def stop(self, name: str) -> InstanceInfo:
        row = self._require(name)
        if row["kind"] != "linked" and self._server_pid(name) is not None:
            self._pg_ctl_stop(name)
        info = self.info(name)
        assert info is not None
        return info

    def reset_credentials(self, name: str, username: str, password: str) -> InstanceInfo:
        row = self._require(name)
        if row["kind"] == "linked":
            raise EngineError(f"{name!r} is a linked instance: its password is managed on its own server",
                              hint="change it there, then update the LinkedInstance's password")
        self.start(name)
        with self.admin(name, row["port"]) as conn:
            self._set_password(conn, username, password, create=False)
            for _ in conn.execute(sql.SQL(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = {} "
                    "AND pid <> pg_backend_pid()").format(sql.Literal(username))):
                pass
        info = self.info(name)
        assert info is not None
        return info

    def set_retention(self, name: str, retention_hours: int) -> InstanceInfo:
        self._require(name)
        self.catalog.update(name, retention_hours=retention_hours)
        self.prune(name)
        info = self.info(name)
        assert info is not None
        return info

    def destroy(self, name: str) -> None:
        row = self.catalog.get(name)
        if row is not None and row["kind"] == "linked":
            self.catalog.delete(name)
            return
        if self.inst_dir(name).exists():
            if self._server_pid(name) is not None:
                try:
                    self._pg_ctl_stop(name, "fast", 30)
                except DbosError:
                    self._kill_server(name)
            shutil.rmtree(self.inst_dir(name))
        if row is not None:
            _release_port(row["port"], self.data_dir, name)
            self.catalog.delete(name)

    # ------------------------------------------------------------------ backups & retention
    def backup(self, name: str) -> BackupInfo:
        row = self._require(name)
        if row["kind"] == "linked":
            raise EngineError(f"{name!r} is linked: backups of linked instances are up to their own server")
        self.start(name)
        backup_id = "base-" + utcnow().strftime("%Y%m%dT%H%M%S%f")
        bdir = self.inst_dir(name) / "backups" / backup_id
        with self.admin(name, row["port"]) as conn:
            started = conn.execute("SELECT clock_timestamp()").fetchone()[0]  # type: ignore[index]
        try:
            proc.run([pgbin.tool("pg_basebackup"), "-h", str(self._sockdir(name)), "-p", str(row["port"]),
                      "-U", ADMIN_ROLE, "-D", str(bdir), "-Fp", "-X", "none", "-c", "fast", "--no-sync"],
                     run_as=self.run_as, timeout=RECOVERY_TIMEOUT, env=proc.clean_env(run_as=self.run_as))
        except BaseException:
            shutil.rmtree(bdir, ignore_errors=True)
            raise
        label = (bdir / "backup_label").read_text()
        m = re.search(r"START WAL LOCATION: \S+ \(file (\S+)\)", label)
        start_wal = m.group(1) if m else ""
        with self.admin(name, row["port"]) as conn:
            # The backup is consistent once the WAL up to its end is archived (pg_basebackup waited for it).
            finished = conn.execute("SELECT clock_timestamp()").fetchone()[0]  # type: ignore[index]
        info = BackupInfo(name, backup_id, to_rfc3339(started), to_rfc3339(finished), str(bdir))
        self.catalog.add_backup(name, backup_id, info.started_at, info.finished_at, str(bdir), start_wal)
        self.prune(name)
        return info

    def prune(self, name: str) -> None:
        """Drop base backups and WAL no longer needed to restore anywhere in the retention window."""
        row = self._require(name)
        backups = self.catalog.backups(name)
        if not backups:
            return
        window_start = to_rfc3339(utcnow() - timedelta(hours=row["retention_hours"]))
        # keep the newest backup finished at or before the window start, and everything after
        keep_from = 0
        for i, b in enumerate(backups):
            if b["finished_at"] <= window_start:
                keep_from = i
        for b in backups[:keep_from]:
            shutil.rmtree(b["path"], ignore_errors=True)
            self.catalog.delete_backup(name, b["backup_id"])
        oldest = backups[keep_from]
        if keep_from and oldest["start_wal"]:
            proc.run([pgbin.tool("pg_archivecleanup"), str(self.inst_dir(name) / "archive"), oldest["start_wal"]],
                     run_as=self.run_as, timeout=120)

    # ------------------------------------------------------------------ restore
    def restore_window(self, name: str) -> tuple[datetime, datetime]:
        row = self._require(name)
        if row["kind"] == "linked":
            raise EngineError(f"{name!r} is a linked instance: it has no WAL archive here to restore from")
        info = self._info(row)
        if info.earliest_restorable_time is None or info.latest_restorable_time is None:
            raise EngineError(f"instance {name!r} has no restorable window yet (status {info.status})",
                              hint="restores need a running source with archived WAL")
        return parse_rfc3339(info.earliest_restorable_time), parse_rfc3339(info.latest_restorable_time)

    def _archive_now(self, name: str, port: int) -> datetime:
        """Write a commit record stamped now, switch WAL, wait until the segment is archived."""
        with self.admin(name, port) as conn:
            with conn.transaction():
                conn.execute("SELECT pg_current_xact_id()")
            now = conn.execute("SELECT clock_timestamp()").fetchone()[0]  # type: ignore[index]
            with conn.transaction():
                conn.execute("SELECT pg_current_xact_id()")
            seg = conn.execute(
                "SELECT pg_walfile_name(pg_switch_wal() - 1)").fetchone()[0]  # type: ignore[index]
        target = self.inst_dir(name) / "archive" / seg
        deadline = time.monotonic() + START_TIMEOUT
        while not target.exists():
            if time.monotonic() > deadline:
                raise TimeoutExpired(f"WAL segment {seg} of {name!r} was not archived within {START_TIMEOUT:.0f}s",
                                     hint="check archive_command errors in the source's server.log")
            time.sleep(0.05)
        return now  # type: ignore[no-any-return]

    def restore_to_new(self, source: str, name: str, restore_time: str, *, port: int | None = None,
                       retention_hours: int | None = None, owner: str | None = None) -> InstanceInfo:
        src = self._require(source)
        if src["kind"] == "linked":
            raise EngineError(f"cannot restore from {source!r}: it is a linked instance",
                              hint="point-in-time restore needs an instance this engine archives WAL for")
        if self._server_pid(source) is None:
            raise EngineError(f"cannot restore from {source!r}: its server is stopped",
                              hint="run `pulumi up` (which starts it) and retry")
        earliest, _ = self.restore_window(source)
        archived_to = self._archive_now(source, src["port"])
        target = archived_to if restore_time == "latest" else parse_rfc3339(restore_time)
        if target < earliest or target > archived_to:
            raise EngineError(
                f"restore_time {to_rfc3339(target)} is outside {source!r}'s restorable window "
                f"[{to_rfc3339(earliest)}, {to_rfc3339(archived_to)}]")
        base = None
        for b in self.catalog.backups(source):
            if parse_rfc3339(b["finished_at"]) <= target:
                base = b
        if base is None:
            raise EngineError(f"no base backup of {source!r} finished before {to_rfc3339(target)}")
        port = self._reserve(name, "restored", src["username"], port,
                             retention_hours or src["retention_hours"], STATUS_RESTORING,
                             source=source, restored_to=to_rfc3339(target), owner=owner)
        try:
            idir = self.inst_dir(name)
            for sub in ("", "archive", "backups", "s"):
                self._mkdir(idir / sub)
            proc.run(["cp", "-a", base["path"], str(self.pgdata(name))], run_as=self.run_as,
                     timeout=RECOVERY_TIMEOUT)
            for stale in ("postmaster.pid", "instance.conf", "postmaster.opts"):
                with contextlib.suppress(FileNotFoundError):
                    (self.pgdata(name) / stale).unlink()
            src_archive = self.inst_dir(source) / "archive"
            self._write_instance_conf(name, port, (
                f"restore_command = 'cp {src_archive}/%f %p'\n"
                f"recovery_target_time = '{to_pg(target)}'\n"
                "recovery_target_action = 'promote'\n"
                "recovery_target_timeline = 'latest'\n"
            ))
            signal = self.pgdata(name) / "recovery.signal"
            signal.touch()
            self._own(signal, 0o600)
            self._pg_ctl_start(name, RECOVERY_TIMEOUT)
            self._wait_promoted(name, port)
            # Recovery is over: drop the recovery settings, keep archiving to our own archive.
            self._write_instance_conf(name, port)
            with self.admin(name, port) as conn:
                conn.execute("SELECT pg_reload_conf()")
            with self.admin(name, port) as conn:
                ts = conn.execute("SELECT clock_timestamp()").fetchone()[0]  # type: ignore[index]
            self._inherit_backup(source, name, base)
            self.catalog.update(name, status=STATUS_AVAILABLE, earliest=to_rfc3339(ts))
        except BaseException as exc:
            self._abort_create(name)
            if isinstance(exc, DbosError):
                raise EngineError(f"restoring {name!r} from {source!r} failed and was rolled back: {exc.message}",
                                  hint=exc.hint) from None
            raise
        info = self.info(name)
        assert info is not None
        return info

    def _inherit_backup(self, source: str, name: str, base: dict[str, Any]) -> None:
        """Give a restored instance its own base backup and archive without copying data.

        The source's base backup and WAL files are immutable once written, so hard links are
        a complete, independent copy: with the new timeline's history file (archived at
        promotion) they restore any time after the promotion. Later ``db backup`` calls and
        pruning work on the restored instance's own copies only.
        """
        dest = self.inst_dir(name) / "backups" / f"{base['backup_id']}-inherited"
        proc.run(["cp", "-al", base["path"], str(dest)], run_as=self.run_as, timeout=RECOVERY_TIMEOUT)
        src_archive = self.inst_dir(source) / "archive"
        own_archive = self.inst_dir(name) / "archive"
        for f in sorted(src_archive.iterdir()):
            target = own_archive / f.name
            if f.name.endswith(".part") or target.exists():
                continue
            with contextlib.suppress(FileExistsError):
                os.link(f, target)
        self.catalog.add_backup(name, dest.name, base["started_at"], base["finished_at"], str(dest),
                                base["start_wal"])

    def _wait_promoted(self, name: str, port: int) -> None:
        deadline = time.monotonic() + RECOVERY_TIMEOUT
        while True:
            if self._server_pid(name) is None:
                raise EngineError(f"recovery of {name!r} stopped:\n{self._log_tail(name)}",
                                  hint="the WAL needed to reach the target may be missing from the source's archive")
            with contextlib.suppress(EngineError):
                with self.admin(name, port) as conn:
                    if not conn.execute("SELECT pg_is_in_recovery()").fetchone()[0]:  # type: ignore[index]
                        return
            if time.monotonic() > deadline:
                raise TimeoutExpired(f"recovery of {name!r} did not finish within {RECOVERY_TIMEOUT:.0f}s",
                                     hint="set PULUMI_DBOS_RECOVERY_TIMEOUT for very large restores")
            time.sleep(0.05)

    # ------------------------------------------------------------------ linked instances
    def owner(self, name: str) -> str | None:
        row = self.catalog.get(name)
        return row.get("owner") if row else None

    def link(self, name: str, hostname: str, port: int, username: str, password: str,
             owner: str | None = None) -> InstanceInfo:
        verify_connection(hostname, port, username, password)
        if self.catalog.get(name) is not None:
            row = self._require(name)
            if row["kind"] != "linked":
                raise AlreadyExistsError(f"an instance named {name!r} already exists and is not linked")
            self.catalog.update(name, hostname=hostname, port=port, username=username, status=STATUS_AVAILABLE)
        else:
            self._reserve(name, "linked", username, port, 0, STATUS_AVAILABLE, hostname=hostname, owner=owner)
        info = self.info(name)
        assert info is not None
        return info

    def unlink(self, name: str) -> None:
        row = self.catalog.get(name)
        if row is not None and row["kind"] != "linked":
            raise EngineError(f"{name!r} is not a linked instance")
        self.catalog.delete(name)

    def linked_status(self, name: str, password: str) -> InstanceInfo | None:
        info = self.info(name)
        if info is None:
            return None
        try:
            verify_connection(info.hostname, info.port, info.username, password)
            info.status = STATUS_AVAILABLE
        except EngineError:
            info.status = STATUS_UNREACHABLE
        return info


def verify_connection(hostname: str, port: int, username: str, password: str, dbname: str = "postgres") -> None:
    try:
        with psycopg.connect(host=hostname, port=port, user=username, password=password, dbname=dbname,
                             connect_timeout=10, sslmode="prefer") as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        msg = str(exc).replace(password, "[secret]") if password else str(exc)
        raise EngineError(f"cannot connect to {hostname}:{port} as {username!r}: {msg.strip()}",
                          hint="check hostname, port, username and password, and that the server accepts TCP") from None
