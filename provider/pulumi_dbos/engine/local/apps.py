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

import os
import pwd
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from ...config.rules import env_name_problem
from ...dbos_config import read_app
from ...errors import EngineError, NotFoundError, ValidationError
from ...timeutil import to_rfc3339, utcnow
from .. import proc
from ..contract import AppDatabaseAccess, AppDeploy, AppInfo, AppStatus, AppVersion, Problem, taken_app
from ..files import read_tail, write_owned
from ..undo import undoing
from . import app_launch, app_store, ports, runtime, sandbox
from .catalog import AppCatalog, AppRecord, Catalog
from .paths import check_data_dir

if TYPE_CHECKING:
    from .context import LocalContext


class LocalApps:
    """The app half of the local engine, the contract's :class:`~..contract.AppEngine` (``engine.apps``; see
    the module docstring). Checks and reads create nothing: on a data dir without a catalog there are no apps.

    From the engine's context it takes the layout and catalog, the listen host (the proxies listen there too and
    the apps' URLs name it), the apps' OS user (as root; default ``dbosapp``; serve: one per organization),
    ``keep_versions`` (stored versions kept per app; older ones are pruned after a deploy; None keeps all) and
    the settings."""

    def __init__(self, ctx: LocalContext) -> None:
        self.ctx = ctx
        self.layout, self.settings, self.listen_host = ctx.layout, ctx.settings, ctx.listen_host
        self.keep_versions = ctx.keep_versions
        self.user = (ctx.app_user or runtime.default_app_user(self.settings)) if os.geteuid() == 0 else None
        self.run_as = proc.RunAs(self.user.name if self.user else None)

    @property
    def _catalog(self) -> Catalog | None:
        """The data dir's catalog if it has one (reads and checks create nothing)."""
        return self.ctx.existing_catalog()

    @property
    def catalog(self) -> Catalog:
        """The data dir's catalog, made when missing (a deploy)."""
        return self.ctx.catalog

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
    def gid(self) -> int | None:
        return self.run_as.gid if self.user else None



    # ---------------------------------------------------------------- checks
    def preflight(self, app_name: str, *, port: int | None, version: str | None, owner: str | None,
                  creating: bool, adopt: bool = False) -> list[Problem]:
        """Problems a deploy would meet (the contract's); creates nothing."""
        problems = [Problem("data_dir", p) for p in check_data_dir(self.layout.data_dir, self.ctx.run_as.user)]
        if problems:
            return problems
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
        if version is not None and self._catalog is None:
            problems.append(Problem("previous_version", (
                f"previous_version {version!r} cannot be redeployed: the engine's data in {self.layout.data_dir} is "
                "missing (no catalog there, so no stored version of any app): it was moved, removed or is not "
                "mounted. Bring it back (or point dbos:dataDir at it), then preview again; without it, remove "
                "previous_version to deploy the source")))
        elif version is not None:
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
        rec = self.rows.get(name) if self._catalog is not None else None
        return self._info(rec) if rec else None

    def all(self) -> list[AppInfo]:
        return [self._info(r) for r in self.rows.all()] if self._catalog is not None else []

    def logs(self, name: str, lines: int = 100) -> str:
        if self._catalog is None or self.rows.get(name) is None:
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

    # ---------------------------------------------------------------- deploy (``app_store``, ``app_launch``)
    def deploy(self, req: AppDeploy) -> AppInfo:
        """Deploy ``req``; when it fails, an archive it uploaded is removed again, with its release: a refused
        upload (a config or requirements the engine refuses, a build, migration or start that fails) leaves
        nothing on disk (a version stored before stays)."""
        problems = [p for p in (env_name_problem(k) for k in req.env) if p]  # also secrets stored before the rule
        if problems:
            raise ValidationError([("env", p) for p in problems])
        app_store.prepare(self)
        old = self._reserve(req)
        dirs = app_store.app_dirs(self, req.app_name)
        uploaded = req.archive is not None and not os.path.lexists(dirs["versions"] / f"{req.version}.zip")
        try:
            return self._deploy(req, old, dirs)
        except BaseException:
            if uploaded:
                app_store.forget_version(self, req.app_name, req.version)
            raise

    def _deploy(self, req: AppDeploy, old: AppRecord, dirs: dict[str, Path]) -> AppInfo:
        archive = app_store.store(self, req.app_name, req.version, req.archive, dirs["versions"])
        release = app_store.release(self, dirs["releases"], req.version, archive)
        cfg = read_app(release)
        env_dir, env_inside = runtime.build_env(self.root / "_envs", release, self.run_as)
        places = app_launch.places_for(self, dirs, release, env_dir, env_inside)
        binds = app_launch.binds_for(self, dirs, release, env_dir, env_inside)
        app_store.databases(req.database, [req.app_db_name, f"{req.app_db_name}_dbos_sys"])
        with undoing() as undo:  # a failed deploy leaves the previous version serving, nothing of this one
            port = app_launch.backend_port(self, req.app_name)
            pgpass = dirs["ctl"] / f"pgpass.{port}"
            undo.push(app_launch.release_backend, self, req.app_name, dirs, port)
            write_owned(pgpass, runtime.pgpass_line(app_launch.inside_db(self, req.database)).encode(), 0o600,
                        self.run_as.uid if self.user else None, self.gid)
            env = app_launch.environment_for(self, req, places, port)
            log = dirs["log"] / "app.log"
            masks = [req.database.password, *req.env.values()]
            with open(log, "ab") as fh:  # root's own directory
                fh.write(f"\n==== {to_rfc3339(utcnow())} deploy {req.version} on "
                         f"{req.database.instance_name}\n".encode())
                since = fh.tell()
            app_launch.migrate(self, req, binds, places, release, env, log, since, masks)
            pid, port, pgpass = app_launch.launch(self, req, cfg.start[0], dirs, binds, places, port, pgpass, log,
                                                  since, masks)
            undo.push(app_launch.release_backend, self, req.app_name, dirs, port)
            undo.push(app_launch.stop, self, pid, app_launch.unit_name(self, req.app_name, str(port)), grace=2)
            moved_from = None
            if req.port is not None and req.port != old.port:  # a port change: the stable port moves in place
                moved_from, old = old, self._claim_port(old, req.port)
                undo.push(self._unmove_port, old.port, moved_from, dirs)
            try:
                proxy_pid = app_launch.switch(self, old, port, dirs)
            except EngineError:
                if req.port is not None or runtime.alive(old.proxy_pid):
                    raise
                # an allocated port someone else took while the app was not serving: take another one
                old = self._move_port(old)
                proxy_pid = app_launch.switch(self, old, port, dirs)
        if moved_from is not None:
            ports.release(moved_from.port, self.layout.data_dir, f"app:{req.app_name}")
        if old.backend_pid and old.backend_pid != pid:
            app_launch.stop(self, old.backend_pid, app_launch.unit_name(self, req.app_name, str(old.backend_port)))
            if old.backend_port:
                (dirs["ctl"] / f"pgpass.{old.backend_port}").unlink(missing_ok=True)
                ports.release(old.backend_port, self.layout.data_dir, f"appb:{req.app_name}")
        self.rows.update(req.app_name, version=req.version, backend_port=port, backend_pid=pid, proxy_pid=proxy_pid,
                         status=AppStatus.AVAILABLE.value, instance=req.database.instance_name,
                         app_db_name=req.app_db_name, owner=req.owner)
        # backend ports of deploys a killed server never finished (the one serving now is the app's only one)
        ports.release_all(self.layout.data_dir, f"appb:{req.app_name}", keep={port})
        app_store.prune_versions(self, req.app_name, {req.version, *([old.version] if old.version else [])})
        self.ctx._sweep_forwards()  # the app left a moved instance's old port
        info = self.info(req.app_name)
        assert info is not None
        return info

    # ---------------------------------------------------------------- an instance's password reset

    def db_ports(self) -> set[int]:
        """The database ports the apps' password files name: where their processes connect (a moved
        instance's old port stays forwarded while one still does)."""
        return {int(fields[1]) for _, fields in app_store.password_files(self) if fields[1].isdigit()}

    def rekey(self, instance: str, db_port: int, username: str, password: str) -> set[int]:
        """Right after ``username``'s password changed on ``instance`` (listening on ``db_port``): each app's
        password file says the new one (rewritten atomically; libpq reads it at every new connection,
        so the running process needs no restart). Returns the client ports of the bound apps' database
        sessions (they authenticated with what is now their password file's: not to be ended)."""
        for path, fields in app_store.password_files(self, db_port, username):
            access = AppDatabaseAccess(instance, fields[0], db_port, username, password)
            st = os.lstat(path)
            write_owned(path, runtime.pgpass_line(access).encode(), 0o600, st.st_uid, st.st_gid)
        keep: set[int] = set()
        if self._catalog is not None:
            for rec in self.rows.all():
                if rec.instance == instance:
                    keep |= runtime.db_client_ports(rec.backend_pid, db_port)
        return keep


    def _claim_port(self, rec: AppRecord, wanted: int | None) -> AppRecord:
        """The app's stable port in the catalog becomes ``wanted`` (None: a free one), claimed; the old
        claim is kept (the caller releases it, or :meth:`_unmove_port` goes back to it)."""
        with self.catalog.locked() as db:
            port = ports.allocate(db, self.layout.data_dir, wanted, f"app:{rec.name}")  # never rec.port: in use
            db.execute("UPDATE apps SET port = ? WHERE name = ?", (port, rec.name))
        moved = self.rows.get(rec.name)
        assert moved is not None
        return moved

    def _move_port(self, rec: AppRecord) -> AppRecord:
        moved = self._claim_port(rec, None)
        ports.release(rec.port, self.layout.data_dir, f"app:{rec.name}")
        return moved

    def _unmove_port(self, port: int, before: AppRecord, dirs: dict[str, Path]) -> None:
        """(a failed port change's revert) the app back on its old stable port, its proxy there pointing at
        the process that served before (the one ``app_launch.switch`` may have stopped is started again)."""
        with self.catalog.locked() as db:
            db.execute("UPDATE apps SET port = ? WHERE name = ?", (before.port, before.name))
        ports.release(port, self.layout.data_dir, f"app:{before.name}")
        current = self.rows.get(before.name)
        if current is not None and before.backend_port and runtime.alive(before.backend_pid):
            proxy_pid = app_launch.switch(self, current, before.backend_port, dirs)
            self.rows.update(before.name, proxy_pid=proxy_pid)

    def delete(self, name: str) -> None:
        """Stop the app and remove what the engine keeps of it (its databases are the caller's)."""
        if self._catalog is None:
            return  # no catalog: no apps
        rec = self.rows.get(name)
        if rec is not None:
            app_launch.stop(self, rec.backend_pid, app_launch.unit_name(self, name, str(rec.backend_port)), grace=5)
            app_launch.stop(self, rec.proxy_pid, app_launch.unit_name(self, name, "proxy"), grace=2)
        proc.kill_under(self.app_dir(name))
        if self.boxed:
            sandbox.kill_units(app_launch.unit_name(self, name, ""))  # whatever of the app is left in its cgroups
        shutil.rmtree(self.app_dir(name), ignore_errors=True)
        if rec is not None:
            ports.release(rec.port, self.layout.data_dir, f"app:{name}")
            if rec.backend_port:
                ports.release(rec.backend_port, self.layout.data_dir, f"appb:{name}")
            self.rows.delete(name)
        for claimant in (f"app:{name}", f"appb:{name}"):  # also a deploy's that a killed server never finished
            ports.release_all(self.layout.data_dir, claimant)
        if self.user and self.user.comment is not None and not self.rows.all():
            self.retire_user()
        self.ctx._sweep_forwards()

    def retire_user(self) -> None:
        """Once serve's organization has no app left: its environments (its user's files) and the OS user
        itself go (a later deploy makes them again)."""
        if not self.user or self.user.comment is None:
            return
        shutil.rmtree(self.root / "_envs", ignore_errors=True)
        for lock in self.root.glob("_envs.*"):
            lock.unlink(missing_ok=True)
        runtime.remove_user(self.user)
