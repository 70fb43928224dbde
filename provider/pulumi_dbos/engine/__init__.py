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
    Engine,
    InstanceInfo,
    Kind,
    Preflight,
    Problem,
    Status,
)
from .local import check_data_dir, default_data_dir, default_run_as

if TYPE_CHECKING:
    from .local.facade import LocalEngine

ENGINES = ("local",)


def get_engine(name: str = "local", data_dir: str | None = None, run_as: str | None = None) -> Engine:
    if name != "local":
        raise DbosError(f"engine {name!r} is not available", hint=f"use one of: {', '.join(ENGINES)}")
    from .local.facade import LocalEngine

    return LocalEngine(data_dir or None, run_as if run_as else True)


def __getattr__(name: str) -> Any:  # LocalEngine on first use: it loads psycopg and the rest
    if name == "LocalEngine":
        from .local.facade import LocalEngine

        return LocalEngine
    raise AttributeError(name)


__all__ = ["ENGINES", "AppDatabaseAccess", "AppDeploy", "AppInfo", "AppStatus", "AppVersion", "BackupInfo", "Engine", "InstanceInfo", "Kind", "LocalEngine", "Preflight", "Problem",
           "Status", "check_data_dir", "default_data_dir", "default_run_as", "get_engine"]
