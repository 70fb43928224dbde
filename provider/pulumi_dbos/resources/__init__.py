"""Pulumi glue: one module per resource, each a thin dynamic provider over the engine."""

from __future__ import annotations

from .app import AppDatabase
from .instance import DatabaseInstance
from .linked import LinkedInstance
from .restored import RestoredInstance

__all__ = ["AppDatabase", "DatabaseInstance", "LinkedInstance", "RestoredInstance"]
