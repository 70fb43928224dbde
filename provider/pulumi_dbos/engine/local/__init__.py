"""The ``local`` engine: each instance is a real PostgreSQL cluster on this machine.

The facade (:class:`LocalEngine`, in ``facade.py``) implements the engine contract over modules by
domain: ``paths``, ``ports``, ``server``, ``template``, ``roles``, ``pitr``, ``drills``, ``checks``,
``catalog``, ``apps`` and ``runtime``. It is imported on first use, so that a Pulumi program (which only needs
``paths`` for its defaults) does not load psycopg and the rest.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .paths import check_data_dir, default_data_dir, default_run_as

if TYPE_CHECKING:
    from .facade import LocalEngine


def __getattr__(name: str) -> Any:
    if name == "LocalEngine":
        from .facade import LocalEngine

        return LocalEngine
    raise AttributeError(name)


__all__ = ["LocalEngine", "check_data_dir", "default_data_dir", "default_run_as"]
