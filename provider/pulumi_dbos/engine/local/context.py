"""What every operation of the local engine shares: its data dir's layout, catalog, server control, backup
repository and settings, and the reads every operation starts from (an instance's record, its info, its
apps). The operations are modules of functions over a context (``instances``, ``restores``, ``creates``,
``drills``, ``checks``); :class:`~.facade.LocalEngine` is the context plus the contract's one-line calls.
Thread-safe; holds no open connections.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from ...errors import DbosError, EngineError, NotFoundError
from ...timeutil import to_rfc3339, utcnow
from .. import proc
from ..contract import InstanceInfo, Status
from ..settings import EngineSettings
from . import forward, ports, roles
from .apps import LocalApps
from .autobackup import spawn_watcher
from .catalog import Catalog, DrillCatalog, InstanceRecord
from .drills import last_drill
from .durability import lost_error, reconcile, repo_window
from .paths import Layout, default_data_dir, default_run_as
from .pitr import Pitr
from .pool import Pool
from .repo import RepoSettings, Repository
from .runtime import AppUser
from .server import Server
from .template import ensure_template
from .workers import stop_workers

log = logging.getLogger("pulumi_dbos.engine")

LIFECYCLE_BUSY = (Status.CREATING.value, Status.RESTORING.value)


class LocalContext:
    """One data dir of the local engine (see ``paths`` for its layout)."""

    kind = "local"

    def __init__(self, data_dir: str | Path | None = None, run_as: str | None | bool = True,
                 listen_host: str | None = None, *, app_user: AppUser | None = None,
                 keep_versions: int | None = None, pool: int | None = None,
                 repo: RepoSettings | None = None, settings: EngineSettings | None = None) -> None:
        """``listen_host``: instances and app proxies listen there too (besides 127.0.0.1) and report it
        as their address, pg_hba.conf then accepting scram-sha-256 from any address (``pulumi-dbos serve
        --advertise-host``); existing instances pick it up at their next start. ``pool``: stopped copies of
        the template kept ready for provisions (``pool``; default ``$PULUMI_DBOS_POOL_SIZE``, else 2; 0: none).
        ``repo``: the backup repository (``repo.RepoSettings``; None: ``$PULUMI_DBOS_BACKUP_REPO``, else what
        the data dir's repository configuration says, else a posix repository at ``<data_dir>/repo``).
        ``settings``: the engine's settings (``engine.settings``; default: this process's environment, read
        once here)."""
        self.settings = settings or EngineSettings.from_env()
        self.listen_host = ports.check_listen_host(listen_host) if listen_host else None
        self.data_dir = Path(data_dir).expanduser() if data_dir else default_data_dir(self.settings)
        if run_as is True:
            run_as = default_run_as(self.settings)
        user = run_as if isinstance(run_as, str) and os.geteuid() == 0 else None
        self.layout = Layout(self.data_dir, proc.RunAs(user))
        self.repo = Repository(self.layout, repo)
        self.server = Server(self.layout, self.listen_host, self.repo.settings, self.settings)
        self._catalog: Catalog | None = None
        self.app_user = app_user  # serve: one OS user per organization (None: dbosapp)
        self.keep_versions = keep_versions
        self.pool_size = self.settings.pool_size if pool is None else max(0, pool)

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

    def has_data(self, name: str) -> bool:
        """Whether ``name``'s data is on this machine: its server's data directory, or an HA instance's members
        (``ha.json``; its data directory moved into its first member). False: lost, or never made."""
        from ..ha.members import enabled  # ha -> local: imported when used
        return self.pgdata(name).is_dir() or enabled(self, name)

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
        from ..ha.restores import members_running  # ha -> local: imported when used
        if not any(not r.linked and (self.server.running(r.name) or members_running(self, r.name))
                   for r in self.catalog.all()):
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
        from ..ha import cluster as ha  # ha -> local: imported when used
        if not rec.linked and rec.status not in LIFECYCLE_BUSY and ha.enabled(self, rec.name):
            return ha.info(self, rec)
        status, latest, earliest = rec.status, None, None
        if not rec.linked:
            earliest = self.pitr.earliest(rec)
            if status in LIFECYCLE_BUSY:
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
            last_drill=None if rec.linked else last_drill(DrillCatalog(self.catalog), rec.name),
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

    def _sweep_forwards(self) -> None:
        """The forwarders of moved instances' old ports that no app uses any more end (``forward.sweep``)."""
        if not forward.root(self.layout).is_dir():
            return
        catalog = self.existing_catalog()

        def port_of(instance: str) -> int | None:
            rec = catalog.get(instance) if catalog is not None else None
            return rec.port if rec is not None else None

        forward.sweep(self.layout, self.listen_host, port_of, self.apps.db_ports())

    @property
    def apps(self) -> LocalApps:
        """The engine's apps (the contract's ``Engine.apps``)."""
        return LocalApps(self)
