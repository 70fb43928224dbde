"""DBOS apps on the local engine: versions, environments, `dbos migrate`, processes, zero-gap switches.

Layout under ``data_dir/apps`` (the data dir and ``apps/`` are 0711 root: the apps' OS user can reach
its own app directories and nothing else)::

    proxy.py                    the stable-port proxy (copied here so the apps' user can run it)
    _envs/                      root, 0750 root:<app group>
        <requirements hash>/    a virtualenv per distinct requirements.txt (uv), built by the apps' user
        _cache/                 uv's cache of this data dir's builds (the apps' user)
    <app>/                      root, 0750 root:<app group>
        versions/<id>.zip       each deployed version's archive (immutable; DBOS Cloud's format); root 0700
        releases/<id>/          the unpacked version the process runs in (root-owned, read-only to the app)
        ctl/                    root 0750: ``target`` (the proxy's backend port), ``pgpass.<port>`` (the
                                app's 0600 password file)
        log/                    root 0700: app.log, proxy.log (root opens them; the app writes through the fd)
        home/                   the app's only writable directory (its HOME), owned by its OS user

Root never follows a path the app controls: every file root writes, reads or serves back lives in a
root-owned directory the app can at most read (``home/`` is only ever removed, with
``shutil.rmtree``, which does not follow links).

A deploy: store the version → environment → databases (app and ``<app_db_name>_dbos_sys``) →
``dbos migrate`` (DBOS's system tables, then the config's ``database.migrate``) → start the
version on a port of its own → healthy → the proxy on the app's stable port switches to it → the
previous process is stopped. Any failure before the switch leaves the previous process serving.
As root, apps, their migrations and their environment builds run in the sandbox of
:mod:`.sandbox` as an unprivileged OS user that is not the clusters' (``dbosapp``, or one per
organization under serve). The database password reaches them only through a 0600 ``PGPASSFILE``,
never their environment or argv.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pwd
import shlex
import shutil
import stat
import threading
from pathlib import Path

from ...appsource import read_config, unpack
from ...errors import DbosError, EngineError, NotFoundError, TimeoutExpired
from ...resources_util import url_for
from ...timeutil import to_rfc3339, utcnow
from .. import proc
from ..contract import AppDatabaseAccess, AppDeploy, AppInfo, AppStatus, AppVersion, Problem, taken_app
from ..files import write_atomic
from ..settings import EngineSettings
from ..undo import undoing
from ..waits import wait_until
from . import ports, runtime, sandbox
from .catalog import AppCatalog, AppRecord, Catalog
from .paths import Layout

#: the most of an app's log a read returns (its tail)
LOG_READ_LIMIT = 1024 * 1024
#: inside the sandbox: the release (read-only), its control files (read-only), the app's home (writable)
APP_INSIDE, CTL_INSIDE, HOME_INSIDE, PROXY_INSIDE = "/dbos/app", "/dbos/ctl", "/dbos/home", "/dbos/proxy.py"


def _private_dir(path: Path, mode: int, gid: int | None = None) -> None:
    """``path`` a root-owned directory (made if missing; ``gid`` its group), never a link."""
    with contextlib.suppress(FileExistsError):
        path.mkdir(mode=0o700)
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        raise EngineError(f"{path} is not a directory (a link or a file took its place)")
    if os.geteuid() == 0 and (st.st_uid != 0 or (gid is not None and st.st_gid != gid)):
        os.lchown(path, 0, 0 if gid is None else gid)
    os.chmod(path, mode)  # not a link (checked), in a directory only root writes


def _write_file(path: Path, data: bytes, mode: int, uid: int | None = None, gid: int | None = None) -> None:
    """Write ``path`` atomically and durably in its (root-owned) directory: a new file (O_EXCL, O_NOFOLLOW)
    renamed over the old one, owned by ``uid``/``gid`` when given (``files.write_atomic``)."""
    write_atomic(path, data, mode, uid=uid if os.geteuid() == 0 else None, gid=gid if os.geteuid() == 0 else None)


def read_tail(path: Path, limit: int = LOG_READ_LIMIT) -> str:
    """The last ``limit`` bytes of ``path`` (never through a link; empty when it cannot be read)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return ""
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return ""
        size = fh.seek(0, os.SEEK_END)
        fh.seek(max(0, size - limit))
        return fh.read(limit).decode(errors="replace")


class LocalApps:
    """The app half of the local engine (see the module docstring)."""

    def __init__(self, layout: Layout, catalog: Catalog | None, listen_host: str | None = None,
                 app_user: runtime.AppUser | None = None, keep_versions: int | None = None,
                 settings: EngineSettings | None = None) -> None:
        """``catalog`` None: the data dir has none yet (checks and reads only; nothing exists).
        ``listen_host``: the proxies listen there too and the apps' URLs name it. ``app_user``: the OS
        user of the apps (as root; default ``dbosapp``). ``keep_versions``: stored versions kept per app
        (older ones are pruned after a deploy; None keeps all). ``settings``: the engine's."""
        self.layout = layout
        self.settings = settings or EngineSettings.from_env()
        self.listen_host = listen_host
        self._catalog = catalog
        self.keep_versions = keep_versions
        self.user = (app_user or runtime.default_app_user(self.settings)) if os.geteuid() == 0 else None
        self.run_as = proc.RunAs(self.user.name if self.user else None)

    @property
    def catalog(self) -> Catalog:
        if self._catalog is None:
            raise EngineError(f"no engine catalog in {self.layout.data_dir}")
        return self._catalog

    @property
    def rows(self) -> AppCatalog:
        return AppCatalog(self.catalog)

    @property
    def boxed(self) -> bool:
        return sandbox.enabled() and self.user is not None

    # ---------------------------------------------------------------- places
    @property
    def root(self) -> Path:
        return self.layout.data_dir / "apps"

    def app_dir(self, name: str) -> Path:
        return self.root / name

    @property
    def _gid(self) -> int | None:
        return self.run_as.gid if self.user else None

    def _app_dirs(self, name: str) -> dict[str, Path]:
        """The app's directories (made, with the owners and modes of the module docstring)."""
        top = self.app_dir(name)
        _private_dir(top, 0o750, self._gid)
        legacy = top / "run"  # the layout before 0.5: a directory the app owned
        if os.path.lexists(legacy):
            shutil.rmtree(legacy, ignore_errors=True)
        dirs = {"versions": top / "versions", "releases": top / "releases", "ctl": top / "ctl", "log": top / "log",
                "home": top / "home"}
        _private_dir(dirs["versions"], 0o700)
        _private_dir(dirs["releases"], 0o750, self._gid)
        _private_dir(dirs["ctl"], 0o750, self._gid)
        _private_dir(dirs["log"], 0o700)
        with contextlib.suppress(FileExistsError):
            dirs["home"].mkdir(mode=0o700)
        st = os.lstat(dirs["home"])
        if not stat.S_ISDIR(st.st_mode):
            raise EngineError(f"{dirs['home']} is not a directory")
        if os.geteuid() == 0 and self.user and st.st_uid != self.run_as.uid:
            os.lchown(dirs["home"], self.run_as.uid, self.run_as.gid)
        return dirs

    def _prepare(self) -> None:
        if self.user:
            runtime.ensure_user(self.user)
            if self.boxed:
                sandbox.require()
        self.layout.prepare()
        os.chmod(self.layout.data_dir, 0o711)  # traversable by the apps' user; instances/ stays 0700
        _private_dir(self.root, 0o711)
        _private_dir(self.root / "_envs", 0o750 if self.user else 0o755, self._gid)
        script = self.root / "proxy.py"
        source = Path(__file__).with_name("proxy.py")
        if not script.exists() or script.read_bytes() != source.read_bytes():
            _write_file(script, source.read_bytes(), 0o644)

    # ---------------------------------------------------------------- checks
    def preflight(self, app_name: str, *, port: int | None, version: str | None, owner: str | None,
                  creating: bool, adopt: bool = False) -> list[Problem]:
        problems: list[Problem] = []
        if self.user and self.user.comment is None:
            try:
                pwd.getpwnam(self.user.name)
            except KeyError:
                problems.append(Problem("app_name", f"OS user {self.user.name!r} for apps does not exist: the "
                                        "set-up creates it, or set PULUMI_DBOS_APP_USER"))
        rec = self.rows.get(app_name) if self._catalog is not None else None
        taken = taken_app(app_name, "this engine", rec.owner, owner, adopt) if creating and rec is not None else None
        if taken is not None:
            problems.append(taken)
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
                           and runtime.listens(rec.backend_pid, rec.backend_port) and runtime.listens(rec.proxy_pid, rec.port)
                           and runtime.answers(runtime.http_status(rec.backend_port)))  # the app answers, not 5xx
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
        return "\n".join(read_tail(self.app_dir(name) / "log" / "app.log").splitlines()[-lines:])

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

    def _store(self, name: str, version: str, archive: bytes | None, vdir: Path) -> bytes:
        path = vdir / f"{version}.zip"
        if archive is None:
            if not path.is_file():
                known = ", ".join(v.version for v in self.versions(name)) or "none"
                raise EngineError(f"version {version!r} of app {name!r} is not stored (known: {known})")
            return path.read_bytes()  # root's own 0700 directory
        if not path.exists():
            _write_file(path, archive, 0o600)
        self.rows.add_version(name, version, to_rfc3339(utcnow()))
        return archive

    def _release(self, releases: Path, version: str, archive: bytes) -> Path:
        """The unpacked version: root-owned, readable by the app's group, made under a temporary name and
        renamed (a directory that exists is complete)."""
        rel = releases / version
        with contextlib.suppress(OSError):
            if os.lstat(rel).st_uid == 0 or os.geteuid() != 0:
                return rel
        if os.path.lexists(rel):
            shutil.rmtree(rel, ignore_errors=True)  # not root's: an older layout's, rebuilt
        tmp = releases / f".{version}.{os.getpid()}.{threading.get_ident()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(mode=0o700)
        try:
            unpack(archive, tmp)
            if os.geteuid() == 0 and self.user:
                for p in [tmp, *tmp.rglob("*")]:
                    os.lchown(p, 0, self.run_as.gid)
                    mode = os.lstat(p).st_mode
                    os.chmod(p, 0o750 if stat.S_ISDIR(mode) or mode & 0o111 else 0o640)
            os.rename(tmp, rel)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return rel

    def prune_versions(self, name: str, protect: set[str]) -> list[str]:
        """Remove the oldest stored versions beyond :attr:`keep_versions` (never one in ``protect``:
        the current and the previous serving version); the removed ids."""
        if self.keep_versions is None:
            return []
        stored = [v.version for v in self.versions(name)]
        extra = len(stored) - self.keep_versions
        removed = []
        for version in stored:
            if extra <= 0:
                break
            if version in protect:
                continue
            with contextlib.suppress(FileNotFoundError):
                (self.app_dir(name) / "versions" / f"{version}.zip").unlink()
            shutil.rmtree(self.app_dir(name) / "releases" / version, ignore_errors=True)
            self.rows.delete_version(name, version)
            removed.append(version)
            extra -= 1
        return removed

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

    def _places(self, dirs: dict[str, Path], release: Path, env_dir: Path, env_inside: str) -> dict[str, str]:
        """Where the app finds its release, control files, home and environment (inside its sandbox, or
        the real paths without one)."""
        if self.boxed:
            return {"app": APP_INSIDE, "ctl": CTL_INSIDE, "home": HOME_INSIDE, "env": env_inside}
        return {"app": str(release), "ctl": str(dirs["ctl"]), "home": str(dirs["home"]), "env": str(env_dir)}

    def _binds(self, dirs: dict[str, Path], release: Path, env_dir: Path, env_inside: str) -> list[sandbox.Bind]:
        return [sandbox.Bind(release, APP_INSIDE), sandbox.Bind(dirs["ctl"], CTL_INSIDE),
                sandbox.Bind(dirs["home"], HOME_INSIDE, writable=True), sandbox.Bind(env_dir, env_inside)]

    def _environment(self, req: AppDeploy, places: dict[str, str], port: int) -> dict[str, str]:
        db = req.database
        return {
            **req.env,
            "PATH": f"{places['env']}/bin:/usr/local/bin:/usr/bin:/bin", "VIRTUAL_ENV": places["env"],
            "HOME": places["home"], "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "PYTHONUNBUFFERED": "1",
            "PORT": str(port), "DBOS_APP_NAME": req.app_name,
            "DBOS_DATABASE_URL": url_for(db.username, None, db.hostname, db.port, req.app_db_name),
            "DBOS_SYSTEM_DATABASE_URL": url_for(db.username, None, db.hostname, db.port,
                                                f"{req.app_db_name}_dbos_sys"),
            "DBOS__APPVERSION": req.version,
            "DBOS__VMID": f"dbos-{req.app_name}",  # stable: DBOS recovers only its own executor's workflows
            "PGPASSFILE": f"{places['ctl']}/pgpass.{port}",
        }

    def _unit(self, name: str, what: str) -> str:
        # with the data dir's tag: local engines of other data dirs run apps of the same name as the same OS
        # user (`dbosapp`) at the same time, and a unit's clean-up kills whatever runs in it
        tag = hashlib.sha256(str(self.layout.data_dir.resolve()).encode()).hexdigest()[:8]
        return sandbox.unit_name(self.user.name if self.user else "self", f"{name}.{tag}.{what}")

    def _limits(self, req: AppDeploy) -> sandbox.Limits:
        return sandbox.Limits(memory_mib=req.memory_mib)

    def _backend_port(self, name: str, avoid: frozenset[int] = frozenset()) -> int:
        """A port of the app's own for a new process, claimed machine-wide (engines of other data dirs
        deploy at the same time); the claim is replaced by the next deploy's."""
        lo, hi = ports.backend_ports()
        with self.catalog.locked():
            taken = {r.backend_port for r in self.rows.all()} | avoid
            for port in range(lo, hi + 1):
                if port not in taken and ports.port_free(port) and ports.claim(port, self.layout.data_dir,
                                                                                f"appb:{name}"):
                    return port
        raise EngineError(f"no free app port in {lo}-{hi}", hint="set PULUMI_DBOS_APP_BACKEND_PORTS")

    def _fail(self, name: str, what: str, log: Path, since: int, masks: list[str]) -> DbosError:
        text = read_tail(log)
        try:
            size = log.stat().st_size
        except OSError:
            size = 0
        tail = text[max(0, len(text) - max(0, size - since)):].splitlines()[-25:] if size > since else []
        return EngineError(f"app {name!r}: {what}; the previous version keeps serving. Last log lines:\n"
                           f"{proc.mask(chr(10).join(tail), masks)}", hint=f"`pulumi-dbos app logs {name}` shows more")

    def _start(self, argv: list[str], *, req: AppDeploy, dirs: dict[str, Path], binds: list[sandbox.Bind],
               cwd: str, env: dict[str, str], log: Path, unit: str) -> int:
        if self.boxed:
            return sandbox.spawn(argv, user=self.run_as, binds=binds, cwd=cwd, env=env, host_cwd=self.app_dir(
                req.app_name), log_path=log, limits=self._limits(req), unit=unit)
        return proc.spawn(argv, run_as=self.run_as, env=env, cwd=cwd, log=log)

    def _release_backend(self, app: str, dirs: dict[str, Path], port: int) -> None:
        """(a failed deploy's revert) a backend port's password file and claim."""
        (dirs["ctl"] / f"pgpass.{port}").unlink(missing_ok=True)
        ports.release(port, self.layout.data_dir, f"appb:{app}")

    def _launch(self, req: AppDeploy, start: str, dirs: dict[str, Path], binds: list[sandbox.Bind],
                places: dict[str, str], port: int, pgpass: Path, log: Path, since: int,
                masks: list[str]) -> tuple[int, int, Path]:
        """Start the app's process on ``port`` and wait until it answers; when another process took the port
        between its choice and the app's bind, again on another one (``ports.BIND_ATTEMPTS`` in all).
        Returns (pid, port, its pgpass file); on failure nothing of it is left (process, claim, pgpass)."""
        tried: set[int] = set()
        for attempt in range(1, ports.BIND_ATTEMPTS + 1):
            tried.add(port)
            env = self._environment(req, places, port)
            unit = self._unit(req.app_name, str(port))
            pid = self._start(shlex.split(start), req=req, dirs=dirs, binds=binds, cwd=places["app"], env=env,
                              log=log, unit=unit)
            last: list[int | None] = [None]

            def healthy(pid: int = pid, port: int = port, last: list[int | None] = last) -> bool:
                if not runtime.alive(pid):
                    raise self._fail(req.app_name, f"version {req.version} exited before it was healthy", log, since,
                                     masks)
                if not runtime.listens(pid, port):  # a port that answers may be someone else's
                    return False
                last[0] = runtime.http_status(port)
                return runtime.answers(last[0])

            try:
                if not wait_until(healthy, self.settings.app_start_timeout, "", interval=0.05, raise_on_timeout=False):
                    raise TimeoutExpired(
                        f"app {req.app_name!r} version {req.version} did not answer on port {port} within "
                        f"{self.settings.app_start_timeout:.0f}s" + (f" (GET / answered HTTP {last[0]}; healthy is an answer below "
                                                       "500)" if last[0] is not None else ""))
                return pid, port, pgpass
            except BaseException as exc:
                self._stop(pid, unit, grace=2)
                self._release_backend(req.app_name, dirs, port)
                retry = (attempt < ports.BIND_ATTEMPTS and isinstance(exc, DbosError)
                         and ports.bind_failed(exc.message))
                if not retry:
                    if isinstance(exc, DbosError) and "Last log lines" not in exc.message:
                        raise self._fail(req.app_name, exc.message, log, since, masks) from None
                    raise
                log_line = f"==== port {port} was taken before the app bound it; trying another\n"
                with open(log, "ab") as fh:
                    fh.write(log_line.encode())
                port = self._backend_port(req.app_name, frozenset(tried))
                pgpass = dirs["ctl"] / f"pgpass.{port}"
                _write_file(pgpass, runtime.pgpass_line(req.database).encode(), 0o600,
                            self.run_as.uid if self.user else None, self._gid)
        raise AssertionError("unreachable")

    def deploy(self, req: AppDeploy) -> AppInfo:
        self._prepare()
        old = self._reserve(req)
        dirs = self._app_dirs(req.app_name)
        archive = self._store(req.app_name, req.version, req.archive, dirs["versions"])
        release = self._release(dirs["releases"], req.version, archive)
        cfg = read_config(release)
        env_dir, env_inside = runtime.build_env(self.root / "_envs", release, self.run_as)
        places = self._places(dirs, release, env_dir, env_inside)
        binds = self._binds(dirs, release, env_dir, env_inside)
        self._databases(req.database, [req.app_db_name, f"{req.app_db_name}_dbos_sys"])
        with undoing() as undo:  # a failed deploy leaves the previous version serving, nothing of this one
            port = self._backend_port(req.app_name)
            pgpass = dirs["ctl"] / f"pgpass.{port}"
            undo.push(self._release_backend, req.app_name, dirs, port)
            _write_file(pgpass, runtime.pgpass_line(req.database).encode(), 0o600,
                        self.run_as.uid if self.user else None, self._gid)
            env = self._environment(req, places, port)
            log = dirs["log"] / "app.log"
            masks = [req.database.password, *req.env.values()]
            with open(log, "ab") as fh:  # root's own directory
                fh.write(f"\n==== {to_rfc3339(utcnow())} deploy {req.version} on "
                         f"{req.database.instance_name}\n".encode())
                since = fh.tell()
            # `dbos migrate`: DBOS's system tables, then the config's database.migrate (run by dbos itself)
            migrate = [f"{places['env']}/bin/dbos", "migrate", "-s", env["DBOS_SYSTEM_DATABASE_URL"]]
            if self.boxed:
                cp = sandbox.run(migrate, user=self.run_as, binds=binds, cwd=places["app"], env=env,
                                 host_cwd=self.app_dir(req.app_name), limits=self._limits(req),
                                 unit=self._unit(req.app_name, "migrate"), timeout=self.settings.migrate_timeout, check=False,
                                 secrets=masks)
            else:
                cp = proc.run(migrate, run_as=self.run_as, env=env, cwd=release, timeout=self.settings.migrate_timeout,
                              check=False, secrets=masks)
            with open(log, "ab") as fh:
                fh.write(proc.mask(cp.stdout + cp.stderr, masks).encode())
            if cp.returncode != 0:
                raise self._fail(req.app_name, f"`dbos migrate` failed with exit code {cp.returncode}", log, since,
                                 masks)
            pid, port, pgpass = self._launch(req, cfg.start[0], dirs, binds, places, port, pgpass, log, since,
                                             masks)
            undo.push(self._release_backend, req.app_name, dirs, port)
            undo.push(self._stop, pid, self._unit(req.app_name, str(port)), grace=2)
            try:
                proxy_pid = self._switch(old, port, dirs)
            except EngineError:
                if req.port is not None or runtime.alive(old.proxy_pid):
                    raise
                # an allocated port someone else took while the app was not serving: take another one
                old = self._move_port(old)
                proxy_pid = self._switch(old, port, dirs)
        if old.backend_pid and old.backend_pid != pid:
            self._stop(old.backend_pid, self._unit(req.app_name, str(old.backend_port)))
            if old.backend_port:
                (dirs["ctl"] / f"pgpass.{old.backend_port}").unlink(missing_ok=True)
                ports.release(old.backend_port, self.layout.data_dir, f"appb:{req.app_name}")
        self.rows.update(req.app_name, version=req.version, backend_port=port, backend_pid=pid, proxy_pid=proxy_pid,
                         status=AppStatus.AVAILABLE.value, instance=req.database.instance_name,
                         app_db_name=req.app_db_name, owner=req.owner)
        # backend ports of deploys a killed server never finished (the one serving now is the app's only one)
        ports.release_all(self.layout.data_dir, f"appb:{req.app_name}", keep={port})
        self.prune_versions(req.app_name, {req.version, *([old.version] if old.version else [])})
        info = self.info(req.app_name)
        assert info is not None
        return info

    # ---------------------------------------------------------------- an instance's password reset
    def _password_files(self, db_port: int | None = None, username: str | None = None) -> list[tuple[Path, list[str]]]:
        """Every app's password file (those of running processes and of a deploy under way) for ``username``
        on the instance at ``db_port`` (None: any), with its fields."""
        found: list[tuple[Path, list[str]]] = []
        if not self.root.is_dir():
            return found
        port = None if db_port is None else str(db_port)
        for app in sorted(self.root.iterdir()):
            ctl = app / "ctl"
            if app.name.startswith(("_", ".")) or not ctl.is_dir() or ctl.is_symlink():
                continue
            for f in sorted(ctl.glob("pgpass.*")):  # root's own directory: the app only reads it
                try:
                    fields = runtime.pgpass_fields(f.read_text())
                except OSError:
                    continue
                if len(fields) == 5 and port in (None, fields[1]) and username in (None, fields[3]):
                    found.append((f, fields))
        return found

    def db_ports(self) -> set[int]:
        """The database ports the apps' password files name: where their processes connect (a moved
        instance's old port stays forwarded while one still does)."""
        return {int(fields[1]) for _, fields in self._password_files() if fields[1].isdigit()}

    def rekey(self, instance: str, db_port: int, username: str, password: str) -> set[int]:
        """Right after ``username``'s password changed on ``instance`` (listening on ``db_port``): each app's
        password file says the new one (rewritten atomically; libpq reads it at every new connection,
        so the running process needs no restart). Returns the client ports of the bound apps' database
        sessions (they authenticated with what is now their password file's: not to be ended)."""
        for path, fields in self._password_files(db_port, username):
            access = AppDatabaseAccess(instance, fields[0], db_port, username, password)
            st = os.lstat(path)
            _write_file(path, runtime.pgpass_line(access).encode(), 0o600, st.st_uid, st.st_gid)
        keep: set[int] = set()
        if self._catalog is not None:
            for rec in self.rows.all():
                if rec.instance == instance:
                    keep |= runtime.db_client_ports(rec.backend_pid, db_port)
        return keep

    def _stop(self, pid: int | None, unit: str, grace: float = 10) -> None:
        runtime.stop(pid, grace=grace)
        if self.boxed:
            sandbox.kill_unit(unit)
            sandbox.release_unit(unit)

    def _move_port(self, rec: AppRecord) -> AppRecord:
        with self.catalog.locked() as db:
            port = ports.allocate(db, self.layout.data_dir, None, f"app:{rec.name}")  # skips rec.port: in use
            db.execute("UPDATE apps SET port = ? WHERE name = ?", (port, rec.name))
        ports.release(rec.port, self.layout.data_dir, f"app:{rec.name}")
        moved = self.rows.get(rec.name)
        assert moved is not None
        return moved

    def _switch(self, rec: AppRecord, backend_port: int, dirs: dict[str, Path]) -> int:
        """Point the app's stable port at ``backend_port`` (starting its proxy if it is not running)."""
        _write_file(dirs["ctl"] / "target", str(backend_port).encode(), 0o644)
        ctl = CTL_INSIDE if self.boxed else str(dirs["ctl"])
        script = PROXY_INSIDE if self.boxed else str(self.root / "proxy.py")
        # the proxy listens on 127.0.0.1, and on the listen host when there is one (its 4th argument)
        args = [str(rec.port), f"{ctl}/target", "/tmp/proxy.ready" if self.boxed else str(dirs["home"] / "proxy.ready"),
                *ports.listen_hosts(self.listen_host)[1:]]
        if rec.proxy_pid and runtime.listens(rec.proxy_pid, rec.port) and runtime.runs_with(rec.proxy_pid, args):
            return rec.proxy_pid
        unit = self._unit(rec.name, "proxy")
        self._stop(rec.proxy_pid, unit, grace=2)  # none, or listening elsewhere than now wanted
        log = dirs["log"] / "proxy.log"
        env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
        argv = [runtime.app_python(), script, *args]
        if self.boxed:
            pid = sandbox.spawn(argv, user=self.run_as, binds=[
                sandbox.Bind(dirs["ctl"], CTL_INSIDE), sandbox.Bind(self.root / "proxy.py", PROXY_INSIDE)],
                cwd="/tmp", env=env, host_cwd=self.app_dir(rec.name), log_path=log, limits=sandbox.Limits(256),
                unit=unit)
        else:
            pid = proc.spawn(argv, run_as=self.run_as, env=env, cwd=dirs["home"], log=log)

        def listening() -> bool:
            if not runtime.alive(pid):
                tail = read_tail(log, 4096).strip().splitlines()[-1:]
                raise EngineError(f"the proxy of app {rec.name!r} could not listen on port {rec.port}: "
                                  f"{' '.join(tail)}", hint="another process took the port: set `port`")
            return runtime.listens(pid, rec.port)

        wait_until(listening, 10, f"the proxy of app {rec.name!r} did not listen on port {rec.port}", interval=0.02)
        return pid

    def delete(self, name: str) -> None:
        rec = self.rows.get(name) if self._catalog is not None else None
        if rec is not None:
            self._stop(rec.backend_pid, self._unit(name, str(rec.backend_port)), grace=5)
            self._stop(rec.proxy_pid, self._unit(name, "proxy"), grace=2)
        proc.kill_under(self.app_dir(name))
        if self.boxed:
            sandbox.kill_units(self._unit(name, ""))  # whatever of the app is left in its cgroups
        shutil.rmtree(self.app_dir(name), ignore_errors=True)
        if rec is not None:
            ports.release(rec.port, self.layout.data_dir, f"app:{name}")
            if rec.backend_port:
                ports.release(rec.backend_port, self.layout.data_dir, f"appb:{name}")
            self.rows.delete(name)
        for claimant in (f"app:{name}", f"appb:{name}"):  # also a deploy's that a killed server never finished
            ports.release_all(self.layout.data_dir, claimant)
        if self.user and self.user.comment is not None and self._catalog is not None and not self.rows.all():
            self.retire_user()

    def retire_user(self) -> None:
        """Once serve's organization has no app left: its environments (its user's files) and the OS user
        itself go (a later deploy makes them again)."""
        if not self.user or self.user.comment is None:
            return
        shutil.rmtree(self.root / "_envs", ignore_errors=True)
        for lock in self.root.glob("_envs.*"):
            lock.unlink(missing_ok=True)
        runtime.remove_user(self.user)
