"""Pulumi glue: one module per resource, each a thin dynamic provider on the shared base (``_base``)."""

from __future__ import annotations

from .app import App
from .app_database import AppDatabase
from .instance import DatabaseInstance
from .linked import LinkedInstance
from .restored import RestoredInstance

__all__ = ["App", "AppDatabase", "DatabaseInstance", "LinkedInstance", "RestoredInstance"]
