"""pulumi-dbos: Postgres database instances as code (DBOS Cloud's `db` commands, declaratively).

``import pulumi_dbos as dbos`` gives the resources; the engine layer
(``pulumi_dbos.engine``) imports nothing from pulumi and is importable alone.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_RESOURCES = {"DatabaseInstance", "RestoredInstance", "LinkedInstance", "AppDatabase", "App", "PreviewEnvironment"}


def __dir__() -> list[str]:
    return sorted(_RESOURCES)


def __getattr__(name: str) -> Any:  # lazy, so the engine and CLI don't import pulumi
    if name in _RESOURCES:
        from . import resources

        return getattr(resources, name)
    raise AttributeError(name)


__all__ = sorted(_RESOURCES)
