"""The ``dbos-cloud`` engine: the engine contract over DBOS Cloud's REST API (or ``pulumi-dbos serve``).

A thin facade over modules by domain: :mod:`.session` (the client and the cached instance list every
part shares), :mod:`.checks` (preflight), :mod:`.creates` (provision, waits, rollback),
:mod:`.instances` (start/stop, credentials, retention, port, destroy), :mod:`.restores` (backups,
restore windows, point-in-time restores), :mod:`.linked` (``db link``) and :mod:`.apps` (``app ...``);
below them :mod:`.client` (HTTP, retries), :mod:`.answers` (errors, bodies), :mod:`.tokens` and
:mod:`.convert` (wire bodies → contract records).

Fields and routes marked *extension* in :mod:`pulumi_dbos.cloudapi.models` are used only when the
server announced itself as ``pulumi-dbos serve``; on DBOS Cloud what only they can do (a chosen
port, retention, stop/start, backups, restore windows) is refused with a message naming the field.
"""

from __future__ import annotations

import builtins
import os
import time
from collections.abc import Callable
from datetime import datetime

import httpx

from ...errors import EngineError
from ..contract import (
    BackupInfo,
    DrillResult,
    InstanceInfo,
    Kind,
    Preflight,
    Problem,
)
from ..settings import EngineSettings
from . import checks, creates, drills, instances, linked, restores
from .apps import CloudApps
from .client import DEFAULT_DOMAIN, DOMAIN_ENV, CloudClient
from .session import CloudSession


class DbosCloudEngine:
    """Instances and apps of one DBOS Cloud organization (the token's), at ``domain``."""

    kind = "dbos-cloud"

    def __init__(self, domain: str | None = DEFAULT_DOMAIN, token: str | None = None, ca_cert: str | None = None, *,
                 deadline: float | None = None, app_deadline: float | None = None,
                 transport: httpx.BaseTransport | None = None, sleep: Callable[[float], None] = time.sleep,
                 backoff: float = 0.5, settings: EngineSettings | None = None) -> None:
        self.settings = settings or EngineSettings.from_env()
        domain = domain or os.environ.get(DOMAIN_ENV) or DEFAULT_DOMAIN
        client = CloudClient(domain, token, ca_cert, transport=transport, sleep=sleep, backoff=backoff,
                             settings=self.settings)
        self.session = CloudSession(client, self.settings.cloud_deadline if deadline is None else deadline, sleep)
        self.apps = CloudApps(self.session, self.settings.cloud_app_deadline if app_deadline is None else app_deadline)

    @property
    def client(self) -> CloudClient:
        return self.session.client

    @property
    def domain(self) -> str:
        return self.session.domain

    @property
    def serve(self) -> bool:
        """Whether the server is ``pulumi-dbos serve`` (extensions understood)."""
        return self.session.serve

    def describe(self) -> str:
        return self.session.describe()

    def invalidate(self) -> None:
        self.session.invalidate()

    def close(self) -> None:
        self.client.close()

    # ---------------------------------------------------------------- reads and checks
    def list(self) -> builtins.list[InstanceInfo]:
        return self.session.list()

    def info(self, name: str) -> InstanceInfo | None:
        return self.session.info(name)

    def preflight(self, req: Preflight) -> builtins.list[Problem]:
        return checks.preflight(self.session, req)

    # ---------------------------------------------------------------- instances
    def provision(self, name: str, username: str, password: str, *, port: int | None = None,
                  retention_hours: int = 24, owner: str | None = None) -> InstanceInfo:
        return creates.provision(self.session, name, username, password, port=port,
                                 retention_hours=retention_hours, owner=owner)

    def takeover(self, name: str, owner: str | None, *, adopt: bool = False) -> InstanceInfo | None:
        return instances.takeover(self.session, name, owner, adopt=adopt)

    def ensure_running(self, name: str) -> InstanceInfo:
        return instances.ensure_running(self.session, name)

    start = ensure_running  # the CLI's name

    def stop(self, name: str) -> InstanceInfo:
        return instances.stop(self.session, name)

    def reset_credentials(self, name: str, username: str, password: str) -> InstanceInfo:
        return instances.reset_credentials(self.session, name, username, password)

    def check_credentials(self, name: str, username: str, password: str) -> bool:
        return instances.check_credentials(self.session, name, username, password)

    def set_retention(self, name: str, retention_hours: int) -> InstanceInfo:
        return instances.set_retention(self.session, name, retention_hours)

    def set_owner(self, name: str, owner: str | None) -> InstanceInfo:
        return instances.set_owner(self.session, name, owner)

    def recover_interrupted(self) -> builtins.list[str]:
        """Nothing to do here: DBOS Cloud (and a serve, before it listens) cleans up after its own crashes."""
        return []

    def set_port(self, name: str, port: int) -> InstanceInfo:
        return instances.set_port(self.session, name, port)

    def destroy(self, name: str) -> None:
        instances.destroy(self.session, name)

    # ---------------------------------------------------------------- high availability
    def set_high_availability(self, name: str, enabled: bool, *, members: int = 3) -> InstanceInfo:
        if not enabled:
            info = self.info(name)
            if info is not None:
                return info
        raise EngineError("high availability is not offered by DBOS Cloud's API (no multi-member instances)",
                          hint="use the local engine for highAvailability, or set it to false")

    def switchover(self, name: str, candidate: str | None = None) -> InstanceInfo:
        raise EngineError(f"{name!r}: switchover needs a high-availability instance of the local engine")

    # ---------------------------------------------------------------- backups and restores
    def backup(self, name: str) -> BackupInfo:
        return restores.backup(self.session, name)

    def restore_window(self, name: str) -> tuple[datetime, datetime]:
        return restores.restore_window(self.session, name)

    def restore_to_new(self, source: str, name: str, restore_time: str, *, password: str,
                       port: int | None = None, retention_hours: int | None = None,
                       owner: str | None = None) -> InstanceInfo:
        return restores.restore_to_new(self.session, source, name, restore_time, password=password, port=port,
                                       retention_hours=retention_hours, owner=owner)

    # ---------------------------------------------------------------- restore drills (serve's extension)
    def drill(self, name: str, *, check_sql: str | None = None, check_database: str | None = None) -> DrillResult:
        return drills.drill(self.session, name, check_sql, check_database)

    def drills(self, name: str) -> builtins.list[DrillResult] | None:
        return drills.drills(self.session, name)

    # ---------------------------------------------------------------- linked servers
    def link(self, name: str, hostname: str, port: int, username: str, password: str, *,
             owner: str | None = None) -> InstanceInfo:
        return linked.link(self.session, name, hostname, port, username, password, owner=owner)

    def unlink(self, name: str) -> None:
        linked.unlink(self.session, name)


__all__ = ["DbosCloudEngine", "Kind"]
