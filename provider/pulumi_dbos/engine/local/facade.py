"""The ``local`` engine's facade: each instance is a real PostgreSQL cluster on this machine.

A thin facade implementing :class:`~pulumi_dbos.engine.contract.Engine` over modules by domain:
``paths`` (layout, data-dir checks), ``ports`` (machine-wide claims), ``server`` (pg_ctl,
readiness, crash leftovers), ``template`` (the cluster instances are cloned from), ``roles``
(the user's role, SCRAM verifiers), ``pitr`` (backups, retention, restore) and ``catalog``
(typed records in SQLite). Thread-safe; holds no open connections.
"""

from __future__ import annotations

import builtins
import contextlib
import logging
import os
import re
import shutil
import sqlite3
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

from ...errors import AlreadyExistsError, DbosError, EngineError, NotFoundError
from ...timeutil import parse_rfc3339, to_rfc3339, utcnow
from .. import pgbin, proc
from ..contract import (
    AppDeploy,
    AppInfo,
    AppVersion,
    BackupInfo,
    DrillResult,
    InstanceInfo,
    Kind,
    Preflight,
    Problem,
    Status,
)
from ..files import write_atomic
from . import checks, forward, ports, roles
from .apps import LocalApps
from .autobackup import spawn_watcher
from .catalog import BackupRecord, Catalog, InstanceRecord
from .drills import Drills, is_scratch
from .durability import kept_stanza, lost_error, reconcile, recover, repo_window, restore_from_repo, retire
from .paths import Layout, check_data_dir, default_data_dir, default_run_as
from .pitr import Pitr, instance_lock
from .pool import Pool, pool_size
from .ports import HOST
from .repo import RepoSettings, Repository, new_stanza
from .runtime import AppUser
from .server import RECOVERY_TIMEOUT, Server
from .template import ensure_template, ready_template, template_wal
from .workers import stop_workers

log = logging.getLogger("pulumi_dbos.engine")

_LIFECYCLE_BUSY = (Status.CREATING.value, Status.RESTORING.value)


class LocalEngine:
    """Instances as local PostgreSQL clusters under ``data_dir`` (see ``paths`` for the layout)."""

    kind = "local"

    def __init__(self, data_dir: str | Path | None = None, run_as: str | None | bool = True,
                 listen_host: str | None = None, *, app_user: AppUser | None = None,
                 keep_versions: int | None = None, pool: int | None = None,
                 repo: RepoSettings | None = None) -> None:
        """``listen_host``: instances and app proxies listen there too (besides 127.0.0.1) and report it
        as their address, pg_hba.conf then accepting scram-sha-256 from any address (``pulumi-dbos serve
        --advertise-host``); existing instances pick it up at their next start. ``pool``: stopped copies of
        the template kept ready for provisions (``pool``; default ``$PULUMI_DBOS_POOL_SIZE``, else 2; 0: none).
        ``repo``: the backup repository (``repo.RepoSettings``; None: ``$PULUMI_DBOS_BACKUP_REPO``, else what
        the data dir's repository configuration says, else a posix repository at ``<data_dir>/repo``)."""
        self.listen_host = ports.check_listen_host(listen_host) if listen_host else None
        self.data_dir = Path(data_dir).expanduser() if data_dir else default_data_dir()
        if run_as is True:
            run_as = default_run_as()
        user = run_as if isinstance(run_as, str) and os.geteuid() == 0 else None
        self.layout = Layout(self.data_dir, proc.RunAs(user))
        self.repo = Repository(self.layout, repo)
        self.server = Server(self.layout, self.listen_host, self.repo.settings)
        self._catalog: Catalog | None = None
        self.app_user = app_user  # serve: one OS user per organization (None: dbosapp)
        self.keep_versions = keep_versions
        self.pool_size = pool_size(pool)

    # ---------------------------------------------------------------- plumbing
    @property
    def run_as(self) -> proc.RunAs:
        return self.layout.run_as

    @property
    def catalog(self) -> Catalog:
        if self._catalog is None:
            self.layout.prepare()
            self._catalog = Catalog(self.data_dir)
        return self._catalog

    @property
    def pitr(self) -> Pitr:
        return Pitr(self.layout, self.catalog, self.server)

    def existing_catalog(self) -> Catalog | None:
        """The catalog when the data dir has one (checks create nothing)."""
        return self.catalog if self.layout.catalog_file.exists() else None

    def inst_dir(self, name: str) -> Path:
        return self.layout.inst_dir(name)

    def pgdata(self, name: str) -> Path:
        return self.layout.pgdata(name)

    def template(self) -> Path:
        return ensure_template(self.layout, self.catalog.locked())

    def pool(self) -> Pool:
        return Pool(self.layout, self.template(), self.pool_size)

    def _background(self) -> None:
        """After a server was started: the workers that keep things ready (``pool``, ``autobackup``)."""
        spawn_watcher(self.layout)

    def _stop_workers_if_idle(self) -> None:
        """None of the data dir's instances runs any more (its last one destroyed): nothing of the engine is
        left working there (``workers.stop_workers``)."""
        if not any(not r.linked and self.server.running(r.name) for r in self.catalog.all()):
            stop_workers(self.layout)

    def describe(self) -> str:
        return f"the local engine at {self.data_dir}"

    def _require(self, name: str) -> InstanceRecord:
        rec = self.catalog.get(name)
        if rec is None and (lost := self._lost_record(name)) is not None:
            raise self._lost_error(lost)
        if rec is None:
            raise NotFoundError(f"instance {name!r} does not exist in {self.describe()}",
                                hint="`pulumi-dbos db list` shows the instances this engine knows")
        return rec

    def _require_local(self, name: str, why: str) -> InstanceRecord:
        rec = self._require(name)
        if rec.linked:
            raise EngineError(f"{name!r} is a linked instance: {why}")
        return rec

    def _info(self, rec: InstanceRecord) -> InstanceInfo:
        status, latest, earliest = rec.status, None, None
        if not rec.linked:
            earliest = self.pitr.earliest(rec)
            if status in _LIFECYCLE_BUSY:
                pass
            elif not self.pgdata(rec.name).is_dir():
                # removed out of band: lost, not gone (its backups are in the repository)
                status, latest = Status.LOST.value, self._repo_latest(rec)
            elif self.server.running(rec.name):
                status, latest = Status.AVAILABLE.value, to_rfc3339(utcnow())
                self._harden(rec, strict=False)
                self._background()  # a watcher that died (killed, OOM) is started again by any look
            else:
                status, latest = Status.STOPPED.value, self.pitr.last_archived_time(rec.name)
        hostname = self.listen_host if self.listen_host and not rec.linked else rec.hostname
        return InstanceInfo(
            name=rec.name, status=status, hostname=hostname, port=rec.port, username=rec.username,
            kind=rec.kind, retention_hours=rec.retention_hours, created_at=rec.created_at,
            earliest_restorable_time=earliest, latest_restorable_time=latest, source_instance=rec.source,
            restored_to=rec.restored_to, owner=rec.owner,
            last_drill=None if rec.linked else Drills(self).last(rec.name),
            kept_after_destroy_hours=None if rec.linked else self._kept_hours(rec))

    def _kept_hours(self, rec: InstanceRecord) -> int:
        return int(self.repo.settings.keep_deleted(rec.retention_hours).total_seconds() // 3600)

    def _harden(self, rec: InstanceRecord, *, strict: bool = True) -> None:
        """Once per instance (a marker in its directory): no way to the server's OS user for its roles
        (``roles.harden``). Instances made by older code gave their user CREATEROLE on PostgreSQL < 16: the
        first time this engine sees one running (it starts it, or only lists it) it takes that away. Not
        ``strict`` (from ``info``/``list``): a failure is logged and tried again next time."""
        inst_dir = self.inst_dir(rec.name)
        if rec.linked or roles.hardened(inst_dir):
            return
        try:
            with self.server.admin(rec.name, rec.port) as conn:
                roles.harden(conn, rec.username)
            roles.mark_hardened(inst_dir)
        except (DbosError, OSError, ImportError) as exc:
            if strict:
                raise
            log.warning("instance %r: could not revoke its roles' ways to the server's OS user yet: %s",
                        rec.name, exc)
        except Exception as exc:  # psycopg.Error, without importing psycopg here
            if strict:
                raise EngineError(f"instance {rec.name!r}: could not check its roles: {exc}",
                                  hint="is it running? `pulumi-dbos db status NAME`; `pulumi up` starts it") from None
            log.warning("instance %r: could not revoke its roles' ways to the server's OS user yet: %s",
                        rec.name, exc)

    def _current(self, name: str) -> InstanceInfo:
        info = self.info(name)
        if info is None:
            raise NotFoundError(f"instance {name!r} disappeared from {self.describe()}",
                                hint="run `pulumi refresh`, then `pulumi up` to recreate it")
        return info

    # ---------------------------------------------------------------- create skeleton
    def _reserve(self, rec: InstanceRecord, wanted_port: int | None) -> InstanceRecord:
        """Register ``rec`` (status creating/restoring) with a claimed port, or raise AlreadyExistsError."""
        # defence in depth: names become paths and SQL identifiers (the resources validate them too)
        if not re.match(r"^[a-z0-9_]{3,16}$", rec.name) or not re.match(r"^[a-z0-9_]{1,63}$", rec.username):
            raise EngineError(f"invalid instance name or username: {rec.name!r}, {rec.username!r}",
                              hint="names are 3-16 characters of [a-z0-9_]")
        with self.catalog.locked() as db:
            if Catalog.exists(db, rec.name):
                raise AlreadyExistsError(f"an instance named {rec.name!r} already exists in {self.describe()}",
                                         hint="choose another instance_name, or set adopt=True to take it over")
            if self.inst_dir(rec.name).exists():
                if (self.pgdata(rec.name) / "PG_VERSION").exists() or self.layout.stanza(rec.name):
                    # a cluster without a catalog row: the catalog was lost, not a create that failed
                    raise EngineError(
                        f"instance {rec.name!r} has a cluster in {self.inst_dir(rec.name)} but no catalog row "
                        "(a lost catalog): it is not removed nor re-created",
                        hint=f"`pulumi-dbos db recover {rec.name}` registers it again")
                # an empty directory (no cluster, no stanza) left by a crashed create: debris, ours to remove
                log.warning("removing leftover directory %s of a failed create (it holds no cluster)",
                            self.inst_dir(rec.name))
                shutil.rmtree(self.inst_dir(rec.name))
            if not rec.linked:
                rec.port = ports.allocate(db, self.data_dir, wanted_port, rec.name)
                rec.pg_version = pgbin.server_version()
            Catalog.insert(db, rec)
        return rec

    def _abort_create(self, name: str) -> None:
        """Undo a half-made create: server, directory, port claim, catalog row, its stanza when it holds no
        backup (each best effort; a create that failed has no repository backup: nothing kept is lost)."""
        with contextlib.suppress(Exception):
            rec = self.catalog.get(name)
            if rec is not None and not rec.linked:
                ports.release(rec.port, self.data_dir, name)
            stanza = (rec.stanza if rec else None) or self.layout.stanza(name)
            if stanza:
                self.repo.remove_empty(stanza)
        with contextlib.suppress(Exception):
            self.server.kill(name)
        with contextlib.suppress(OSError):
            shutil.rmtree(self.inst_dir(name))
        with contextlib.suppress(Exception):
            self.catalog.delete(name)

    @contextlib.contextmanager
    def _creating(self, name: str, what: str) -> Iterator[None]:
        """Around the steps after :meth:`_reserve`: any failure removes everything made, then says so."""
        try:
            yield
        except BaseException as exc:
            self._abort_create(name)
            if isinstance(exc, DbosError):
                raise EngineError(f"{what} {name!r} failed and was rolled back: {exc.message}",
                                  hint=exc.hint) from None
            if isinstance(exc, (OSError, sqlite3.Error)):
                raise EngineError(f"{what} {name!r} failed and was rolled back: {exc}",
                                  hint="is the data dir's file system writable and not full?") from None
            raise

    def _on_free_port(self, rec: InstanceRecord, wanted: int | None, start: Callable[[int], None]) -> None:
        """``start(rec.port)``; when the port was chosen here (``wanted`` None) and another process took it
        between the choice and the server's bind, again on another port (``ports.BIND_ATTEMPTS`` in all)."""
        for attempt in range(1, ports.BIND_ATTEMPTS + 1):
            try:
                start(rec.port)
                return
            except EngineError as exc:
                if wanted is not None or attempt == ports.BIND_ATTEMPTS or not ports.bind_failed(exc.message):
                    raise
                self.server.kill(rec.name)
                taken = rec.port
                try:
                    with self.catalog.locked() as db:  # the row still names the taken port: never chosen again
                        rec.port = ports.allocate(db, self.data_dir, None, rec.name)
                        self.catalog.update(rec.name, db=db, port=rec.port)
                except EngineError:
                    raise exc from None  # no other port: the start's own failure says the most
                ports.release(taken, self.data_dir, rec.name)
                log.warning("instance %r: port %d was taken before its server bound it; trying port %d",
                            rec.name, taken, rec.port)

    def _new_record(self, name: str, kind: Kind, username: str, status: Status, retention_hours: int,
                    owner: str | None, **fields: str | None) -> InstanceRecord:
        return InstanceRecord(name=name, kind=kind, status=status.value, hostname=fields.pop("hostname", None) or HOST,
                              port=0, username=username, retention_hours=retention_hours,
                              created_at=to_rfc3339(utcnow()), owner=owner, **fields)

    # ---------------------------------------------------------------- contract: checks
    def preflight(self, req: Preflight) -> list[Problem]:
        return checks.preflight(self, req)

    # ---------------------------------------------------------------- contract: instances
    def provision(self, name: str, username: str, password: str, *, port: int | None = None,
                  retention_hours: int = 24, owner: str | None = None) -> InstanceInfo:
        lost = self._lost_record(name)
        if lost is not None:
            raise self._lost_error(lost)
        try:
            template = self.template()
            rec = self._reserve(self._new_record(name, Kind.PROVISIONED, username, Status.CREATING,
                                                 retention_hours, owner), port)
        except (OSError, sqlite3.Error) as exc:
            raise EngineError(f"cannot register instance {name!r} in {self.data_dir}: {exc}",
                              hint="is the data dir's file system writable and not full?") from None
        pool = Pool(self.layout, template, self.pool_size)
        with self._creating(name, "provisioning instance"):
            started = to_rfc3339(utcnow())
            backup_dir = self.layout.backups(name) / "base-000"
            if not pool.take(self.inst_dir(name)):  # a warm entry is exactly what follows, made ahead
                self.layout.make_instance_dirs(name)
                # The cluster is a copy of the template; the template itself, hard-linked, is the
                # instance's first (cold) base backup: it is never started, so its files never change.
                proc.run(["cp", "-a", str(template), str(self.pgdata(name))], run_as=self.run_as, timeout=120)
                proc.run(["cp", "-al", str(template), str(backup_dir)], run_as=self.run_as, timeout=120)
            self._new_stanza(name)

            def start(p: int) -> None:
                self.server.write_conf(name, p)
                self.server.start(name, p)

            self._on_free_port(rec, port, start)
            with self.server.admin(name, rec.port) as conn:
                roles.create_user(conn, username, password)  # hardened too
                earliest = conn.execute("SELECT clock_timestamp()").fetchone()[0]  # type: ignore[index]
            roles.mark_hardened(self.inst_dir(name))
            self.catalog.add_backup(BackupRecord(name, "base-000", started, started, str(backup_dir),
                                                 template_wal(self.layout, template)))
            self.catalog.update(name, status=Status.AVAILABLE.value, earliest=to_rfc3339(earliest))
        pool.spawn_refill()  # after, not during: on a small machine its copies would slow this start
        self._background()
        return self._current(name)

    def takeover(self, name: str, owner: str | None, *, adopt: bool = False) -> InstanceInfo | None:
        catalog = self.existing_catalog()
        rec = catalog.get(name) if catalog else None
        if rec is None:
            return None
        ours = owner is not None and rec.owner == owner
        if ours and rec.status in _LIFECYCLE_BUSY:
            log.warning("removing half-made instance %r left by an interrupted create", name)
            self._abort_create(name)
            return None
        if not rec.linked and not self.pgdata(name).is_dir():
            raise self._lost_error(rec)  # lost, never half-made: its backups are kept
        if not ours and not adopt:
            return None
        if not ours:
            self.catalog.update(name, owner=owner)
        return self.ensure_running(name)

    def info(self, name: str) -> InstanceInfo | None:
        rec = self.catalog.get(name)
        if rec is None:
            rec = self._lost_record(name)  # its catalog row (or the whole data dir) lost: the repository knows
            if rec is None:
                return None  # never made, or destroyed
            return self._lost_info(rec)
        return self._info(rec)

    def _lost_info(self, rec: InstanceRecord) -> InstanceInfo:
        """A lost instance the catalog does not know (its cluster may even run: ``recover`` registers it)."""
        window = repo_window(self, rec.name)
        return InstanceInfo(
            name=rec.name, status=Status.LOST.value, hostname=rec.hostname, port=rec.port, username=rec.username,
            kind=rec.kind, retention_hours=rec.retention_hours, created_at=rec.created_at,
            earliest_restorable_time=to_rfc3339(window[0]) if window else None,
            latest_restorable_time=to_rfc3339(window[1]) if window else None, source_instance=rec.source,
            kept_after_destroy_hours=self._kept_hours(rec))

    def list(self) -> builtins.list[InstanceInfo]:
        known = [r for r in self.catalog.all() if not is_scratch(r.owner)]  # a drill's: nobody's
        reconcile(self, self.catalog)
        names = {r.name for r in known}
        lost = [r for r in self.catalog.lost() if r.name not in names]
        return sorted([self._info(r) for r in known] + [self._lost_info(r) for r in lost], key=lambda i: i.name)

    def ensure_running(self, name: str) -> InstanceInfo:
        rec = self._require(name)
        if not rec.linked and not self.pgdata(name).is_dir():
            raise self._lost_error(rec)
        if not rec.linked and not self.server.running(name):
            self.server.clear_after_crash(name)
            self.server.start(name, rec.port)
        if not rec.linked:
            self._background()
            self._sweep_forwards()  # after a crash or a reboot: a needed forwarder starts again
        self._harden(rec)
        return self._current(name)

    start = ensure_running  # the CLI's and tests' name

    def stop(self, name: str) -> InstanceInfo:
        rec = self._require(name)
        if not rec.linked and self.server.running(name):
            self.server.stop(name)
        return self._current(name)

    def reset_credentials(self, name: str, username: str, password: str) -> InstanceInfo:
        rec = self._require(name)
        if rec.linked:
            raise EngineError(f"{name!r} is a linked instance: its password is managed on its own server",
                              hint="change it there, then update the LinkedInstance's password")
        self.ensure_running(name)
        with self.server.admin(name, rec.port) as conn:
            roles.set_password(conn, username, password)
            # in the same step, the apps bound to it: their password files say the new password (their
            # processes keep running), and their sessions are not among those ended
            apps, keep = self._apps_over(self.existing_catalog()), set()
            for db_port in (rec.port, *forward.ports_of(self.layout, name)):  # also apps still on a forwarded port
                keep |= apps.rekey(name, db_port, username, password)
            roles.end_sessions(conn, username, keep)
        return self._current(name)

    def check_credentials(self, name: str, username: str, password: str) -> bool:
        rec = self._require(name)
        return roles.credentials_work(rec.hostname, rec.port, username, password)

    def set_retention(self, name: str, retention_hours: int) -> InstanceInfo:
        self._require(name)
        self.catalog.update(name, retention_hours=retention_hours)
        rec = self._require(name)
        if not rec.linked:
            self.pitr.prune(rec)
        return self._current(name)

    def set_port(self, name: str, port: int) -> InstanceInfo:
        """Move the instance's server to ``port``: a restart (Postgres listens on one port). When a bound app
        still connects to the old port (its password file names it), the old port does not go dark: a
        forwarder (``forward.py``) starts before the server stops, binds the old port as soon as the server
        lets go of it and holds each connection until the server is ready on the new port, then pipes
        it; it lives until no app uses the old port (the App's redeploy in the same `pulumi up`, the
        app's deletion, the instance's destroy: ``forward.sweep``). The apps see their pooled
        connections end with the old server and their next ones wait out the restart instead of being
        refused. Chosen over moving the apps first (a redeploy onto a port nothing listens on yet) and
        over keeping both ports (one server, one port)."""
        rec = self._require_local(name, "its port is its server's")
        if rec.port == port:
            return self._current(name)
        for held in forward.existing(self.layout):  # moving back onto a port still forwarded for it
            if held.port == port and held.instance == name:
                held.stop(self.layout)
        with self.catalog.locked() as db:
            ports.allocate(db, self.data_dir, port, name)
            self.catalog.update(name, db=db, port=port)
        was_running = self.server.running(name)
        fwd: forward.Forward | None = None
        if was_running and rec.port in self._apps_over(self.existing_catalog()).db_ports():
            with contextlib.suppress(DbosError), self.server.admin(name, rec.port) as conn:
                conn.execute("CHECKPOINT")  # a short shutdown checkpoint: the old port is free sooner
            fwd = forward.start(self.layout, name, rec.port, self.listen_host)
        else:
            ports.release(rec.port, self.data_dir, name)
        try:
            if was_running:
                self.server.stop(name)
            if fwd is not None:
                forward.wait_bound(fwd)
            self.server.write_conf(name, port)
            self.server.start(name, port)
        except DbosError:
            # leave the old instance working: back to the old port
            if fwd is not None:
                fwd.stop(self.layout)
            self.catalog.update(name, port=rec.port)
            ports.claim(rec.port, self.data_dir, name)
            ports.release(port, self.data_dir, name)
            self.server.write_conf(name, rec.port)
            if was_running:
                self.server.stop_or_kill(name)
                self.server.start(name, rec.port)
            raise
        if fwd is not None:
            fwd.point(port)
        return self._current(name)

    def _sweep_forwards(self) -> None:
        """The forwarders of moved instances' old ports that no app uses any more end (``forward.sweep``)."""
        if not forward.root(self.layout).is_dir():
            return
        catalog = self.existing_catalog()

        def port_of(instance: str) -> int | None:
            rec = catalog.get(instance) if catalog is not None else None
            return rec.port if rec is not None else None

        forward.sweep(self.layout, self.listen_host, port_of, self._apps_over(catalog).db_ports())

    def destroy(self, name: str) -> None:
        rec = self.catalog.get(name)
        if rec is not None and rec.linked:
            self.catalog.delete(name)
            return
        if self.inst_dir(name).exists():
            # no base backup writing into it, none starting: a backup finishing after the stanza was found
            # empty would leave a destroyed instance's backups looking live
            with instance_lock(self.layout, name, RECOVERY_TIMEOUT):
                if rec is not None:
                    retire(self, rec)  # the repository keeps its backups for the deleted retention
                self.server.stop_or_kill(name)
                shutil.rmtree(self.inst_dir(name))
        elif rec is not None:
            retire(self, rec)  # a lost instance destroyed: its backups are kept all the same
        if rec is not None:
            ports.release(rec.port, self.data_dir, name)
            self.catalog.delete(name)
        self._sweep_forwards()
        self._stop_workers_if_idle()

    # ---------------------------------------------------------------- contract: backups and restores
    def backup(self, name: str) -> BackupInfo:
        rec = self._require_local(name, "backups of linked instances are up to their own server")
        self.ensure_running(name)
        return self.pitr.backup(rec)

    def prune(self, name: str) -> None:
        self.pitr.prune(self._require_local(name, "it has no backups here"))

    def restore_window(self, name: str) -> tuple[datetime, datetime]:
        rec = self.catalog.get(name)
        if rec is None or (not rec.linked and not self.pgdata(name).is_dir()):
            window = repo_window(self, name)  # lost or destroyed: the repository's
            if window is None:
                raise NotFoundError(f"instance {name!r} does not exist in {self.describe()} and the backup "
                                    "repository has no restorable backup of it",
                                    hint="`pulumi-dbos db list` shows the instances this engine knows")
            return window
        rec = self._require_local(name, "it has no WAL archive here to restore from")
        info = self._info(rec)
        if info.earliest_restorable_time is None or info.latest_restorable_time is None:
            raise EngineError(f"instance {name!r} has no restorable window yet (status {info.status})",
                              hint="restores need a running source with archived WAL")
        return parse_rfc3339(info.earliest_restorable_time), parse_rfc3339(info.latest_restorable_time)

    def restore_to_new(self, source: str, name: str, restore_time: str, *, password: str,
                       port: int | None = None, retention_hours: int | None = None,
                       owner: str | None = None) -> InstanceInfo:
        src = self.catalog.get(source)
        if src is None or (not src.linked and not self.pgdata(source).is_dir()):
            return self._restore_from_repo(source, name, restore_time, password=password, port=port,
                                           retention_hours=retention_hours, owner=owner)
        if src.linked:
            raise EngineError(f"cannot restore from {source!r}: it is a linked instance",
                              hint="point-in-time restore needs an instance this engine archives WAL for")
        if not self.server.running(source):
            raise EngineError(f"cannot restore from {source!r}: its server is stopped",
                              hint="run `pulumi up` (which starts it) and retry")
        earliest, _ = self.restore_window(source)
        archived_to = self.pitr.archive_now(source, src.port)
        target = archived_to if restore_time == "latest" else parse_rfc3339(restore_time)
        if target < earliest or target > archived_to:
            raise EngineError(f"restore_time {to_rfc3339(target)} is outside the restorable window of {source!r} "
                              f"[{to_rfc3339(earliest)}, {to_rfc3339(archived_to)}]")
        base = self.pitr.base_for(source, target, missing_ok=True)
        if base is None:  # no local base backup before the target (a recovered instance's cache is empty)
            return self._restore_from_repo(source, name, restore_time, password=password, port=port,
                                           retention_hours=retention_hours, owner=owner, src=src)
        rec = self._reserve(self._new_record(
            name, Kind.RESTORED, src.username, Status.RESTORING, retention_hours or src.retention_hours, owner,
            source=source, restored_to=to_rfc3339(target)), port)
        template = ready_template(self.layout)
        pool = Pool(self.layout, template, self.pool_size) if template is not None else None
        with self._creating(name, f"restoring from {source!r} into"):
            self.pitr.place_base(name, base, pool)
            if not is_scratch(owner):  # a drill's scratch copy is nobody's data: no repository of its own
                self._new_stanza(name)  # its own incarnation: pushes from its promotion on
            self._on_free_port(rec, port, lambda p: self.pitr.recover(source, name, p, base, target))
            with self.server.admin(name, rec.port) as conn:
                # the role's password as of the target may predate a reset: the restore's is the given one
                roles.set_password(conn, src.username, password)
                # the source's roles as of the target: perhaps made by older code (CREATEROLE), repaired here
                roles.harden(conn, src.username)
                ts = conn.execute("SELECT clock_timestamp()").fetchone()[0]  # type: ignore[index]
            roles.mark_hardened(self.inst_dir(name))
            self.pitr.inherit(source, name, base)
            self.catalog.update(name, status=Status.AVAILABLE.value, earliest=to_rfc3339(ts))
        if pool is not None:
            pool.spawn_refill()
        self._background()
        return self._current(name)

    # ---------------------------------------------------------------- the backup repository (``durability``)
    def _new_stanza(self, name: str) -> None:
        """Give ``name``'s cluster (placed, not started) a stanza of its own in the repository."""
        stanza = new_stanza(name)
        self.repo.create_stanza(stanza, self.pgdata(name))
        write_atomic(self.layout.stanza_file(name), stanza + "\n", 0o600)
        self.catalog.update(name, stanza=stanza, repo_backup_at=None)

    def _lost_record(self, name: str) -> InstanceRecord | None:
        """A lost instance the catalog has no row of (``durability.reconcile``: the repository is asked once per
        catalog, so looks stay free of pgBackRest calls)."""
        catalog = self.existing_catalog() if not self.repo.explicit else self.catalog
        if catalog is None:
            return None
        reconcile(self, catalog)
        found = catalog.lost(name)
        return found[0] if found else None

    @staticmethod
    def _lost_error(rec: InstanceRecord) -> EngineError:
        return lost_error(rec)

    def _repo_latest(self, rec: InstanceRecord) -> str | None:
        window = repo_window(self, rec.name)
        return to_rfc3339(window[1]) if window else None

    def register_lost(self, rec: InstanceRecord) -> None:
        """(``durability.recover``) the catalog row of a lost instance again, on its old port when free."""
        with self.catalog.locked() as db:
            if Catalog.exists(db, rec.name):
                self.catalog.update(rec.name, db=db, status=Status.AVAILABLE.value)
                return
            if self.server.running(rec.name):  # its server never stopped: it keeps the port it listens on
                ports.claim(rec.port, self.data_dir, rec.name)
            else:
                try:
                    rec.port = ports.allocate(db, self.data_dir, rec.port or None, rec.name)
                except EngineError:
                    rec.port = ports.allocate(db, self.data_dir, None, rec.name)
            rec.status = Status.AVAILABLE.value
            Catalog.insert(db, rec)
        self.catalog.forget_lost(rec.name)

    def recover(self, name: str) -> InstanceInfo:
        """Bring a lost instance back at its newest archived point (``durability.recover``)."""
        recover(self, name)
        self.ensure_running(name)
        self._background()
        return self._current(name)

    def _restore_from_repo(self, source: str, name: str, restore_time: str, *, password: str,
                           port: int | None, retention_hours: int | None, owner: str | None,
                           src: InstanceRecord | None = None) -> InstanceInfo:
        """``restore_to_new`` from the repository alone: the source is lost or destroyed, or (``src``, running)
        has no local base backup before the target."""
        if src is not None:
            self.pitr.archive_now(source, src.port)
        window = self.restore_window(source) if src is None else repo_window(self, source, live=src)
        if window is None:
            raise EngineError(f"instance {source!r} has no backup to restore from yet",
                              hint=f"take one: `pulumi-dbos db backup {source}`")
        target = None if restore_time == "latest" else parse_rfc3339(restore_time)
        if target is not None and not window[0] <= target <= window[1]:
            raise EngineError(f"restore_time {to_rfc3339(target)} is outside the restorable window of {source!r} "
                              f"[{to_rfc3339(window[0])}, {to_rfc3339(window[1])}] (from the backup repository)")
        st = kept_stanza(self, source)
        username = (st.annotations.get("username") if st else None) or ""
        rec = self._reserve(self._new_record(
            name, Kind.RESTORED, username, Status.RESTORING,
            retention_hours or int((st.annotations.get("retention-hours") if st else None) or 24), owner,
            source=source, restored_to=to_rfc3339(target or window[1])), port)
        with self._creating(name, f"restoring from {source!r} (backup repository) into"):
            # its own stanza before its server starts: it archives from its promotion on; its first repository
            # backup is the watcher's, as after a provision (no local base: its restores use the repository)
            restore_from_repo(self, source, rec, target, lambda: self._new_stanza(name) if not is_scratch(owner)
                              else None)
            with self.server.admin(name, rec.port) as conn:
                roles.set_password(conn, username, password)
                roles.harden(conn, username)
                ts = conn.execute("SELECT clock_timestamp()").fetchone()[0]  # type: ignore[index]
            roles.mark_hardened(self.inst_dir(name))
            self.catalog.update(name, status=Status.AVAILABLE.value, earliest=to_rfc3339(ts))
        self._background()
        return self._current(name)

    # ---------------------------------------------------------------- contract: restore drills (``drills``)
    def drill(self, name: str, *, check_sql: str | None = None, check_database: str | None = None,
              wait: float = RECOVERY_TIMEOUT) -> DrillResult:
        """``wait``: seconds to wait for another drill on this host to finish (then DrillBusyError)."""
        return Drills(self).run(name, check_sql, check_database, wait=wait)

    def drills(self, name: str) -> builtins.list[DrillResult] | None:
        return Drills(self).history(name)

    # ---------------------------------------------------------------- contract: linked servers
    def link(self, name: str, hostname: str, port: int, username: str, password: str, *,
             owner: str | None = None) -> InstanceInfo:
        roles.verify_connection(hostname, port, username, password)
        rec = self.catalog.get(name)
        if rec is None:
            new = self._new_record(name, Kind.LINKED, username, Status.AVAILABLE, 0, owner, hostname=hostname)
            new.port = port
            self._reserve(new, None)
        elif not rec.linked:
            raise AlreadyExistsError(f"an instance named {name!r} already exists and is not linked")
        else:
            self.catalog.update(name, hostname=hostname, port=port, username=username,
                                status=Status.AVAILABLE.value)
        return self._current(name)

    def unlink(self, name: str) -> None:
        rec = self.catalog.get(name)
        if rec is not None and not rec.linked:
            raise EngineError(f"{name!r} is not a linked instance", hint="destroy it instead")
        self.catalog.delete(name)


    # ---------------------------------------------------------------- contract: apps
    def _apps_over(self, catalog: Catalog | None) -> LocalApps:
        return LocalApps(self.layout, catalog, self.listen_host, self.app_user, self.keep_versions)

    @property
    def apps(self) -> LocalApps:
        return self._apps_over(self.catalog)

    def app_preflight(self, app_name: str, *, port: int | None, version: str | None, owner: str | None,
                      creating: bool, adopt: bool = False) -> builtins.list[Problem]:
        problems = [Problem("data_dir", p) for p in check_data_dir(self.data_dir, self.run_as.user)]
        return problems or self._apps_over(self.existing_catalog()).preflight(
            app_name, port=port, version=version, owner=owner, creating=creating, adopt=adopt)

    def deploy_app(self, req: AppDeploy) -> AppInfo:
        info = self.apps.deploy(req)
        self._sweep_forwards()  # the app left a moved instance's old port
        return info

    def app_info(self, app_name: str) -> AppInfo | None:
        return self.apps.info(app_name) if self.existing_catalog() else None

    def list_apps(self) -> builtins.list[AppInfo]:
        return self.apps.all()

    def app_versions(self, app_name: str) -> builtins.list[AppVersion]:
        return self._apps_over(self.existing_catalog()).versions(app_name)

    def app_logs(self, app_name: str, lines: int = 100) -> str:
        return self.apps.logs(app_name, lines)

    def delete_app(self, app_name: str) -> None:
        if self.existing_catalog() is not None:
            self.apps.delete(app_name)
            self._sweep_forwards()

