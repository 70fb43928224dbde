"""Engines: where instances live. Imports nothing from pulumi.

:func:`get_engine` returns an :class:`~.contract.Engine`, the only thing resources and the CLI call.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import DbosError
from .contract import (
    AppDatabaseAccess,
    AppDeploy,
    AppInfo,
    AppStatus,
    AppVersion,
    BackupInfo,
    DrillResult,
    Engine,
    InstanceInfo,
    Kind,
    Preflight,
    Problem,
    Status,
)
from .local import check_data_dir, default_data_dir, default_run_as

if TYPE_CHECKING:
    from .dbos_cloud.facade import DbosCloudEngine
    from .local.facade import LocalEngine

ENGINES = ("local", "dbos-cloud")


def get_engine(name: str = "local", data_dir: str | None = None, run_as: str | None = None, *,
               domain: str | None = None, token: str | None = None, ca_cert: str | None = None,
               repo: Any = None, settings: Any = None) -> Engine:
    """``local``: clusters under ``data_dir`` run as ``run_as``. ``dbos-cloud``: DBOS Cloud at ``domain``
    (default ``$DBOS_DOMAIN`` or cloud.dbos.dev; or a ``pulumi-dbos serve``, trusted via ``ca_cert``) with
    ``token`` (default ``$DBOS_CLOUD_TOKEN`` or the DBOS CLI's ./.dbos/credentials). ``repo``: the local engine's
    backup repository (``local.repo.RepoSettings``; None: the data dir's own configuration). ``settings``: the
    engine's ``settings.EngineSettings`` (None: this process's environment, read once)."""
    if name == "local":
        from .local.facade import LocalEngine

        return LocalEngine(data_dir or None, run_as if run_as else True, repo=repo, settings=settings)
    if name == "dbos-cloud":
        from .dbos_cloud.facade import DbosCloudEngine  # loads httpx: only when asked for

        return DbosCloudEngine(domain, token, ca_cert, settings=settings)
    raise DbosError(f"engine {name!r} is not available", hint=f"use one of: {', '.join(ENGINES)}")


def __getattr__(name: str) -> Any:  # engines on first use: they load psycopg, httpx and the rest
    if name == "LocalEngine":
        from .local.facade import LocalEngine

        return LocalEngine
    if name == "DbosCloudEngine":
        from .dbos_cloud.facade import DbosCloudEngine

        return DbosCloudEngine
    raise AttributeError(name)


__all__ = ["ENGINES", "AppDatabaseAccess", "AppDeploy", "AppInfo", "AppStatus", "AppVersion", "BackupInfo", "DbosCloudEngine", "DrillResult", "Engine", "InstanceInfo", "Kind", "LocalEngine", "Preflight", "Problem",
           "Status", "check_data_dir", "default_data_dir", "default_run_as", "get_engine"]
