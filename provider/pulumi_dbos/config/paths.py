"""Paths the stack config names (no pydantic: the resources import this when a program starts)."""

from __future__ import annotations

from pathlib import Path


def resolve_project_path(path: str, root: Path) -> Path:
    """A path from the stack config: absolute, or relative to the project root (where Pulumi.yaml is)."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else root / p
