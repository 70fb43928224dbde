"""Engines: where instances live. Imports nothing from pulumi."""

from __future__ import annotations

from .base import Engine, InstanceInfo
from .local import LocalEngine, check_data_dir, default_data_dir, default_run_as

ENGINES = ("local",)


def get_engine(name: str = "local", data_dir: str | None = None, run_as: str | None = None) -> LocalEngine:
    from ..errors import DbosError

    if name != "local":
        raise DbosError(f"engine {name!r} is not available", hint=f"use one of: {', '.join(ENGINES)}")
    return LocalEngine(data_dir or None, run_as if run_as else True)


__all__ = ["ENGINES", "Engine", "InstanceInfo", "LocalEngine", "check_data_dir", "default_data_dir",
           "default_run_as", "get_engine"]
