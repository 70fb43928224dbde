"""Pulumi glue: one module per resource, each a thin dynamic provider on the shared base (``_base``).

The resource classes load on first use (PEP 562): a program, and the provider process unpickling one
provider class by reference, import only the resource modules they use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .app import App
    from .app_database import AppDatabase
    from .instance import DatabaseInstance
    from .linked import LinkedInstance
    from .preview import PreviewEnvironment
    from .restored import RestoredInstance

_MODULES = {"App": "app", "AppDatabase": "app_database", "DatabaseInstance": "instance",
            "LinkedInstance": "linked", "PreviewEnvironment": "preview", "RestoredInstance": "restored"}


def __getattr__(name: str) -> Any:
    if name in _MODULES:
        return getattr(importlib.import_module(f"{__name__}.{_MODULES[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_MODULES})


__all__ = ["App", "AppDatabase", "DatabaseInstance", "LinkedInstance", "PreviewEnvironment", "RestoredInstance"]
