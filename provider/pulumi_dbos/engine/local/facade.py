"""The ``local`` engine's facade: each instance is a real PostgreSQL cluster on this machine.

:class:`LocalEngine` implements :class:`~pulumi_dbos.engine.contract.Engine` as one-line calls into modules by
operation, each a set of functions over the :class:`~.context.LocalContext` it is: ``instances`` (provision,
takeover, start/stop, credentials, retention, port, destroy, linked servers), ``restores`` (backups, the
restorable window, restores, recover), ``creates`` (what every create shares: its row, port and undo),
``checks`` (preflight), ``drills`` and ``apps``. Below them: ``paths`` (layout), ``ports``, ``server``
(pg_ctl), ``template``/``pool`` (fast provisions), ``roles``, ``pitr`` (the local WAL cache and base
backups), ``repo``/``durability`` (the backup repository) and ``catalog`` (typed records in SQLite).

Where a new thing goes: an operation on instances is a function in ``instances`` or ``restores`` taking the
context, with a one-line method here; a new engine-wide setting is an argument of :class:`LocalContext`
(and a field of ``RepoSettings`` when it concerns backups).
"""

from __future__ import annotations

import builtins
import contextlib
from datetime import datetime

from ..contract import (
    BackupInfo,
    DrillResult,
    InstanceInfo,
    Preflight,
    Problem,
)
from ..ha import cluster as ha
from . import checks, creates, instances, restores
from .catalog import InstanceRecord
from .context import LocalContext
from .drills import Drills, is_scratch


class LocalEngine(LocalContext):
    """Instances as local PostgreSQL clusters under ``data_dir``: the context plus the contract."""

    # ---------------------------------------------------------------- checks
    def preflight(self, req: Preflight) -> list[Problem]:
        return checks.preflight(self, req)

    # ---------------------------------------------------------------- instances
    def provision(self, name: str, username: str, password: str, *, port: int | None = None,
                  retention_hours: int = 24, owner: str | None = None) -> InstanceInfo:
        info = instances.provision(self, name, username, password, port=port, retention_hours=retention_hours,
                                   owner=owner)
        return self._default_ha(name) or info

    def takeover(self, name: str, owner: str | None, *, adopt: bool = False) -> InstanceInfo | None:
        return instances.takeover(self, name, owner, adopt=adopt)

    def list(self) -> builtins.list[InstanceInfo]:
        return instances.list_instances(self)

    def ensure_running(self, name: str) -> InstanceInfo:
        if ha.enabled(self, name):
            return ha.ensure_running(self, name)
        return instances.ensure_running(self, name)

    start = ensure_running  # the CLI's and tests' name

    def stop(self, name: str) -> InstanceInfo:
        if ha.enabled(self, name):
            return ha.stop(self, name)
        return instances.stop(self, name)

    def reset_credentials(self, name: str, username: str, password: str) -> InstanceInfo:
        if ha.enabled(self, name):
            return ha.reset_credentials(self, name, username, password)
        return instances.reset_credentials(self, name, username, password)

    def check_credentials(self, name: str, username: str, password: str) -> bool:
        return instances.check_credentials(self, name, username, password)

    def set_retention(self, name: str, retention_hours: int) -> InstanceInfo:
        return instances.set_retention(self, name, retention_hours)

    def set_owner(self, name: str, owner: str | None) -> InstanceInfo:
        return instances.set_owner(self, name, owner)

    def recover_interrupted(self) -> builtins.list[str]:
        return instances.recover_interrupted(self)

    def set_port(self, name: str, port: int) -> InstanceInfo:
        if ha.enabled(self, name):
            return ha.set_port(self, name, port)
        return instances.set_port(self, name, port)

    def destroy(self, name: str) -> None:
        ha.teardown(self, name)  # every member on every host (a no-op for a single server)
        instances.destroy(self, name)
        ha.after_destroy(self)

    # ---------------------------------------------------------------- high availability (``ha.cluster``)
    def set_high_availability(self, name: str, enabled: bool, *, members: int = 3) -> InstanceInfo:
        if enabled:
            ha.enable(self, name, members)
        else:
            ha.disable(self, name)
        return self._current(name)

    def _default_ha(self, name: str) -> InstanceInfo | None:
        """A new instance made high-availability when the engine's ``ha_members`` says so
        (``PULUMI_DBOS_HA_MEMBERS``); None: it stays a single server. A failed turn-on fails the create whole:
        the instance is destroyed (a caller asked for an HA instance and must not be handed another)."""
        if not self.settings.ha_members:
            return None
        try:
            ha.enable(self, name, self.settings.ha_members)
        except BaseException:
            with contextlib.suppress(Exception):
                self.destroy(name)
            raise
        return self._current(name)

    def switchover(self, name: str, candidate: str | None = None) -> InstanceInfo:
        ha.switchover(self, name, candidate)
        return self._current(name)

    def link(self, name: str, hostname: str, port: int, username: str, password: str, *,
             owner: str | None = None) -> InstanceInfo:
        return instances.link(self, name, hostname, port, username, password, owner=owner)

    def unlink(self, name: str) -> None:
        instances.unlink(self, name)

    # ---------------------------------------------------------------- backups and restores
    def backup(self, name: str) -> BackupInfo:
        if ha.enabled(self, name):
            return ha.backup_info(self, name)
        return restores.backup(self, name)

    def prune(self, name: str) -> None:
        restores.prune(self, name)

    def restore_window(self, name: str) -> tuple[datetime, datetime]:
        if ha.enabled(self, name):
            return ha.restore_window(self, name)
        return restores.restore_window(self, name)

    def restore_to_new(self, source: str, name: str, restore_time: str, *, password: str,
                       port: int | None = None, retention_hours: int | None = None,
                       owner: str | None = None) -> InstanceInfo:
        if ha.enabled(self, source):
            info = ha.restore_to_new(self, source, name, restore_time, password=password, port=port,
                                     retention_hours=retention_hours, owner=owner)
        else:
            info = restores.restore_to_new(self, source, name, restore_time, password=password, port=port,
                                           retention_hours=retention_hours, owner=owner)
        return info if is_scratch(owner) else self._default_ha(name) or info

    def recover(self, name: str) -> InstanceInfo:
        """A lost instance back at its newest archived point (``durability.recover``; `pulumi-dbos db recover`)."""
        return restores.recover(self, name)

    def register_lost(self, rec: InstanceRecord) -> None:
        creates.register_lost(self, rec)

    # ---------------------------------------------------------------- restore drills (``drills``)
    def drill(self, name: str, *, check_sql: str | None = None, check_database: str | None = None,
              wait: float | None = None) -> DrillResult:
        """``wait``: seconds to wait for another drill on this host to finish (then DrillBusyError)."""
        return Drills(self).run(name, check_sql, check_database,
                               wait=self.settings.recovery_timeout if wait is None else wait)

    def drills(self, name: str) -> builtins.list[DrillResult] | None:
        return Drills(self).history(name)
