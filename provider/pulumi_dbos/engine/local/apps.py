"""DBOS apps on the local engine: versions, environments, `dbos migrate`, processes, zero-gap switches.

Layout under ``data_dir/apps`` (the data dir becomes 0711 once an app exists, so the apps' OS user
can reach this directory and nothing else)::

    proxy.py                    the stable-port proxy (copied here so the apps' user can run it)
    _envs/<requirements hash>/  a virtualenv per distinct requirements.txt (uv), shared by versions
    <app>/versions/<id>.zip     each deployed version's archive (immutable; DBOS Cloud's format)
    <app>/releases/<id>/        the unpacked version the process runs in
    <app>/run/                  app.log, the proxy's target file, the running process's password file

A deploy: store the version → environment → databases (app and ``<app_db_name>_dbos_sys``) →
``dbos migrate`` (DBOS's system tables, then the config's ``database.migrate``) → start the
version on a port of its own → healthy → the proxy on the app's stable port switches to it → the
previous process is stopped. Any failure before the switch leaves the previous process serving.
As root, apps run as an unprivileged OS user that is not the clusters' (``dbosapp``). The database
password reaches them only through a 0600 ``PGPASSFILE``, never their environment or argv.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shlex
import shutil
from pathlib import Path

from ...appsource import read_config, unpack
from ...errors import DbosError, EngineError, NotFoundError
from ...resources_util import url_for
from ...timeutil import to_rfc3339, utcnow
from .. import proc
from ..contract import AppDatabaseAccess, AppDeploy, AppInfo, AppStatus, AppVersion, Problem
from ..waits import wait_until
from . import ports, runtime
from .catalog import AppCatalog, AppRecord, Catalog
from .paths import Layout

APP_START_TIMEOUT = float(os.environ.get("PULUMI_DBOS_APP_START_TIMEOUT", "120"))
MIGRATE_TIMEOUT = float(os.environ.get("PULUMI_DBOS_MIGRATE_TIMEOUT", "600"))
BACKEND_PORTS = tuple(int(p) for p in os.environ.get("PULUMI_DBOS_APP_BACKEND_PORTS", "61000-61999").split("-"))


class LocalApps:
    """The app half of the local engine (see the module docstring)."""

    def __init__(self, layout: Layout, catalog: Catalog | None, listen_host: str | None = None) -> None:
        """``catalog`` None: the data dir has none yet (checks and reads only; nothing exists).
        ``listen_host``: the proxies listen there too and the apps' URLs name it."""
        self.layout = layout
        self.listen_host = listen_host
        self._catalog = catalog
        user = runtime.default_app_user()
        self.run_as = proc.RunAs(user if user and os.geteuid() == 0 else None)

    @property
    def catalog(self) -> Catalog:
        if self._catalog is None:
            raise EngineError(f"no engine catalog in {self.layout.data_dir}")
        return self._catalog

    @property
    def rows(self) -> AppCatalog:
        return AppCatalog(self.catalog)

    # ---------------------------------------------------------------- places
    @property
    def root(self) -> Path:
        return self.layout.data_dir / "apps"

    def app_dir(self, name: str) -> Path:
        return self.root / name

    def _own(self, path: Path, mode: int) -> None:
        os.chmod(path, mode)
        if os.geteuid() == 0 and self.run_as.user:
            os.chown(path, self.run_as.uid, self.run_as.gid)

    def _mkdir(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        self._own(path, 0o700)

    def _prepare(self) -> None:
        if self.run_as.user:
            try:
                pwd.getpwnam(self.run_as.user)
            except KeyError:
                raise EngineError(f"OS user {self.run_as.user!r} for apps does not exist",
                                  hint="the set-up creates it (`useradd --system dbosapp`), or set "
                                  "PULUMI_DBOS_APP_USER") from None
        self.layout.prepare()
        os.chmod(self.layout.data_dir, 0o711)  # traversable by the apps' user; instances/ stays 0700
        for d in (self.root, self.root / "_envs"):
            d.mkdir(exist_ok=True)
            os.chmod(d, 0o711 if d == self.root else 0o755)
        script = self.root / "proxy.py"
        source = Path(__file__).with_name("proxy.py")
        if not script.exists() or script.read_bytes() != source.read_bytes():
            shutil.copyfile(source, script)
            os.chmod(script, 0o644)

    # ---------------------------------------------------------------- checks
    def preflight(self, app_name: str, *, port: int | None, version: str | None, owner: str | None,
                  creating: bool) -> list[Problem]:
        problems: list[Problem] = []
        if self.run_as.user:
            try:
                pwd.getpwnam(self.run_as.user)
            except KeyError:
                problems.append(Problem("app_name", f"OS user {self.run_as.user!r} for apps does not exist: the "
                                        "set-up creates it, or set PULUMI_DBOS_APP_USER"))
        rec = self.rows.get(app_name) if self._catalog is not None else None
        if creating and rec is not None and owner is not None and rec.owner not in (None, owner):
            problems.append(Problem("app_name", f"an app named {app_name!r} already exists in this engine "
                                    f"(managed by {str(rec.owner).split('#')[0]})"))
        if port is not None and (rec is None or rec.port != port):
            used = {r.port: r.name for r in self.rows.all()} if self._catalog is not None else {}
            inst = {i.port: i.name for i in self.catalog.all() if not i.linked} if self._catalog is not None else {}
            if port in used or port in inst:
                problems.append(Problem("port", f"port {port} is already used by {used.get(port) or inst.get(port)!r}"))
            elif not ports.port_free(port):
                problems.append(Problem("port", f"port {port} on 127.0.0.1 is already in use by another process"))
        if version is not None:
            known = [v.version for v in self.versions(app_name)]
            if version not in known:
                problems.append(Problem("previous_version", f"previous_version {version!r} is not a stored version of "
                                        f"{app_name!r}; known: {', '.join(known) or 'none yet'}"))
        return problems

    # ---------------------------------------------------------------- reads
    def versions(self, name: str) -> list[AppVersion]:
        if self._catalog is None:
            return []
        return [AppVersion(v, t) for v, t in self.rows.versions(name)]

    def _info(self, rec: AppRecord) -> AppInfo:
        status = rec.status
        if rec.version and status != AppStatus.DEPLOYING.value:
            healthy = bool(rec.backend_pid and rec.backend_port and rec.proxy_pid
                           and runtime.listens(rec.backend_pid, rec.backend_port) and runtime.listens(rec.proxy_pid, rec.port))
            status = AppStatus.AVAILABLE.value if healthy else AppStatus.UNHEALTHY.value
        return AppInfo(name=rec.name, status=status, version=rec.version, instance_name=rec.instance,
                       app_db_name=rec.app_db_name, app_url=f"http://{self._url_host}:{rec.port}", port=rec.port,
                       versions=self.versions(rec.name), owner=rec.owner)

    @property
    def _url_host(self) -> str:
        host = self.listen_host or ports.HOST
        return f"[{host}]" if ":" in host else host

    def info(self, name: str) -> AppInfo | None:
        rec = self.rows.get(name)
        return self._info(rec) if rec else None

    def all(self) -> list[AppInfo]:
        return [self._info(r) for r in self.rows.all()]

    def logs(self, name: str, lines: int = 100) -> str:
        if self.rows.get(name) is None:
            raise NotFoundError(f"app {name!r} does not exist", hint="`pulumi-dbos app list` shows the apps")
        log = self.app_dir(name) / "run" / "app.log"
        try:
            return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    # ---------------------------------------------------------------- deploy
    def _reserve(self, req: AppDeploy) -> AppRecord:
        with self.catalog.locked() as db:
            row = db.execute("SELECT 1 FROM apps WHERE name = ?", (req.app_name,)).fetchone()
            if row is None:
                port = ports.allocate(db, self.layout.data_dir, req.port, f"app:{req.app_name}")
                AppCatalog.insert(db, AppRecord(
                    name=req.app_name, instance=req.database.instance_name, app_db_name=req.app_db_name, port=port,
                    status=AppStatus.DEPLOYING.value, owner=req.owner, created_at=to_rfc3339(utcnow())))
        rec = self.rows.get(req.app_name)
        assert rec is not None
        return rec

    def _store(self, name: str, version: str, archive: bytes | None) -> bytes:
        vdir = self.app_dir(name) / "versions"
        self._mkdir(vdir)
        path = vdir / f"{version}.zip"
        if archive is None:
            if not path.exists():
                known = ", ".join(v.version for v in self.versions(name)) or "none"
                raise EngineError(f"version {version!r} of app {name!r} is not stored (known: {known})")
            return path.read_bytes()
        if not path.exists():
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(archive)
            os.replace(tmp, path)
            self._own(path, 0o600)
        self.rows.add_version(name, version, to_rfc3339(utcnow()))
        return archive

    def _release(self, name: str, version: str, archive: bytes) -> Path:
        rel = self.app_dir(name) / "releases" / version
        if (rel / ".ready").exists():
            return rel
        shutil.rmtree(rel, ignore_errors=True)
        self._mkdir(rel.parent)
        rel.mkdir()
        unpack(archive, rel)
        (rel / ".ready").write_text(version)
        if os.geteuid() == 0 and self.run_as.user:
            for p in [rel, *rel.rglob("*")]:
                os.chown(p, self.run_as.uid, self.run_as.gid)
        return rel

    @staticmethod
    def _databases(db: AppDatabaseAccess, names: list[str]) -> None:
        import psycopg  # on first use: a preview's checks never connect
        from psycopg import sql

        try:
            with psycopg.connect(host=db.hostname, port=db.port, user=db.username, password=db.password,
                                 dbname="postgres", connect_timeout=10, autocommit=True) as conn:
                for name in names:
                    if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is None:
                        with contextlib.suppress(psycopg.errors.DuplicateDatabase):
                            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        except psycopg.Error as exc:
            raise EngineError(f"cannot prepare the app's databases on {db.instance_name!r}: "
                              f"{str(exc).replace(db.password, '[secret]').strip()}",
                              hint="is the instance available, and does its password in the stack work?") from None

    def _environment(self, req: AppDeploy, env_dir: Path, run: Path, pgpass: Path, port: int) -> dict[str, str]:
        db = req.database
        return {
            **req.env,
            "PATH": f"{env_dir / 'bin'}:/usr/local/bin:/usr/bin:/bin", "VIRTUAL_ENV": str(env_dir),
            "HOME": str(run), "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "PYTHONUNBUFFERED": "1",
            "PORT": str(port), "DBOS_APP_NAME": req.app_name,
            "DBOS_DATABASE_URL": url_for(db.username, None, db.hostname, db.port, req.app_db_name),
            "DBOS_SYSTEM_DATABASE_URL": url_for(db.username, None, db.hostname, db.port,
                                                f"{req.app_db_name}_dbos_sys"),
            "DBOS__APPVERSION": req.version,
            "DBOS__VMID": f"dbos-{req.app_name}",  # stable: DBOS recovers only its own executor's workflows
            "PGPASSFILE": str(pgpass),
        }

    def _backend_port(self, name: str) -> int:
        """A port of the app's own for a new process, claimed machine-wide (engines of other data dirs
        deploy at the same time); the claim is replaced by the next deploy's."""
        lo, hi = BACKEND_PORTS
        with self.catalog.locked():
            taken = {r.backend_port for r in self.rows.all()}
            for port in range(lo, hi + 1):
                if port not in taken and ports.port_free(port) and ports.claim(port, self.layout.data_dir,
                                                                                f"appb:{name}"):
                    return port
        raise EngineError(f"no free app port in {lo}-{hi}", hint="set PULUMI_DBOS_APP_BACKEND_PORTS")

    def _fail(self, name: str, what: str, log: Path, since: int, masks: list[str]) -> DbosError:
        try:
            with open(log, "rb") as fh:
                fh.seek(since)
                tail = fh.read().decode(errors="replace").splitlines()[-25:]
        except OSError:
            tail = []
        text = proc.mask("\n".join(tail), masks)
        return EngineError(f"app {name!r}: {what}; the previous version keeps serving. Last log lines:\n{text}",
                           hint=f"`pulumi-dbos app logs {name}` shows more")

    def deploy(self, req: AppDeploy) -> AppInfo:
        self._prepare()
        old = self._reserve(req)
        archive = self._store(req.app_name, req.version, req.archive)
        release = self._release(req.app_name, req.version, archive)
        cfg = read_config(release)
        env_dir = runtime.build_env(self.root / "_envs", release)
        run = self.app_dir(req.app_name) / "run"
        self._mkdir(run)
        self._databases(req.database, [req.app_db_name, f"{req.app_db_name}_dbos_sys"])
        port = self._backend_port(req.app_name)
        pgpass = run / f"pgpass.{port}"
        pgpass.write_text(runtime.pgpass_line(req.database))
        self._own(pgpass, 0o600)
        env = self._environment(req, env_dir, run, pgpass, port)
        log = run / "app.log"
        masks = [req.database.password, *req.env.values()]
        with open(log, "ab") as fh:
            fh.write(f"\n==== {to_rfc3339(utcnow())} deploy {req.version} on {req.database.instance_name}\n".encode())
            since = fh.tell()
        # `dbos migrate`: DBOS's system tables, then the config's database.migrate (run by dbos itself)
        cp = proc.run([str(env_dir / "bin" / "dbos"), "migrate", "-s", env["DBOS_SYSTEM_DATABASE_URL"]],
                      run_as=self.run_as, env=env, cwd=release, timeout=MIGRATE_TIMEOUT, check=False, secrets=masks)
        with open(log, "ab") as fh:
            fh.write(proc.mask(cp.stdout + cp.stderr, masks).encode())
        if cp.returncode != 0:
            pgpass.unlink(missing_ok=True)
            ports.release(port, self.layout.data_dir, f"appb:{req.app_name}")
            raise self._fail(req.app_name, f"`dbos migrate` failed with exit code {cp.returncode}", log, since, masks)
        pid = proc.spawn(shlex.split(cfg.start[0]), run_as=self.run_as, env=env, cwd=release, log=log)

        def healthy() -> bool:
            if not runtime.alive(pid):
                raise self._fail(req.app_name, f"version {req.version} exited before it was healthy", log, since,
                                 masks)
            return runtime.listens(pid, port)

        try:
            wait_until(healthy, APP_START_TIMEOUT, f"app {req.app_name!r} version {req.version} did not answer on "
                       f"port {port}", interval=0.05)
        except BaseException as exc:
            runtime.stop(pid, grace=2)
            pgpass.unlink(missing_ok=True)
            ports.release(port, self.layout.data_dir, f"appb:{req.app_name}")
            if isinstance(exc, DbosError) and "Last log lines" not in exc.message:
                raise self._fail(req.app_name, exc.message, log, since, masks) from None
            raise
        try:
            proxy_pid = self._switch(old, port, run)
        except EngineError:
            if req.port is not None or runtime.alive(old.proxy_pid):
                runtime.stop(pid, grace=2)
                pgpass.unlink(missing_ok=True)
                ports.release(port, self.layout.data_dir, f"appb:{req.app_name}")
                raise
            # an allocated port someone else took while the app was not serving: take another one
            old = self._move_port(old)
            proxy_pid = self._switch(old, port, run)
        if old.backend_pid and old.backend_pid != pid:
            runtime.stop(old.backend_pid)
            if old.backend_port:
                (run / f"pgpass.{old.backend_port}").unlink(missing_ok=True)
                ports.release(old.backend_port, self.layout.data_dir, f"appb:{req.app_name}")
        self.rows.update(req.app_name, version=req.version, backend_port=port, backend_pid=pid, proxy_pid=proxy_pid,
                         status=AppStatus.AVAILABLE.value, instance=req.database.instance_name,
                         app_db_name=req.app_db_name, owner=req.owner)
        info = self.info(req.app_name)
        assert info is not None
        return info

    def _move_port(self, rec: AppRecord) -> AppRecord:
        with self.catalog.locked() as db:
            port = ports.allocate(db, self.layout.data_dir, None, f"app:{rec.name}")  # skips rec.port: in use
            db.execute("UPDATE apps SET port = ? WHERE name = ?", (port, rec.name))
        ports.release(rec.port, self.layout.data_dir, f"app:{rec.name}")
        moved = self.rows.get(rec.name)
        assert moved is not None
        return moved

    def _switch(self, rec: AppRecord, backend_port: int, run: Path) -> int:
        """Point the app's stable port at ``backend_port`` (starting its proxy if it is not running)."""
        target = run / "target"
        tmp = run / "target.tmp"
        tmp.write_text(str(backend_port))
        self._own(tmp, 0o600)
        os.replace(tmp, target)
        ready = run / "proxy.ready"
        # the proxy listens on 127.0.0.1, and on the listen host when there is one (its 4th argument)
        args = [str(rec.port), str(target), str(ready), *ports.listen_hosts(self.listen_host)[1:]]
        if rec.proxy_pid and runtime.listens(rec.proxy_pid, rec.port) and runtime.runs_with(rec.proxy_pid, args):
            return rec.proxy_pid
        runtime.stop(rec.proxy_pid, grace=2)  # none, or listening elsewhere than now wanted
        ready.unlink(missing_ok=True)
        pid = proc.spawn([runtime.app_python(), str(self.root / "proxy.py"), *args],
                         run_as=self.run_as, env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}, cwd=run,
                         log=run / "proxy.log")

        def listening() -> bool:
            if not runtime.alive(pid):
                tail = (run / "proxy.log").read_text(errors="replace").strip().splitlines()[-1:]
                raise EngineError(f"the proxy of app {rec.name!r} could not listen on port {rec.port}: "
                                  f"{' '.join(tail)}", hint="another process took the port: set `port`")
            return ready.exists() and ready.read_text().strip() == str(pid)

        wait_until(listening, 10, f"the proxy of app {rec.name!r} did not listen on port {rec.port}", interval=0.02)
        return pid

    def delete(self, name: str) -> None:
        rec = self.rows.get(name) if self._catalog is not None else None
        if rec is not None:
            runtime.stop(rec.backend_pid, grace=5)
            runtime.stop(rec.proxy_pid, grace=2)
        runtime.kill_under(self.app_dir(name))
        shutil.rmtree(self.app_dir(name), ignore_errors=True)
        if rec is not None:
            ports.release(rec.port, self.layout.data_dir, f"app:{name}")
            if rec.backend_port:
                ports.release(rec.backend_port, self.layout.data_dir, f"appb:{name}")
            self.rows.delete(name)
