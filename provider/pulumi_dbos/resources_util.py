"""Small helpers shared by the CLI and the resources (no pulumi import)."""

from __future__ import annotations

import urllib.parse
from pathlib import Path


def url_for(username: str, password: str | None, host: str, port: int, dbname: str = "postgres") -> str:
    user = urllib.parse.quote(username, safe="")
    auth = f"{user}:{urllib.parse.quote(password, safe='')}" if password else user
    return f"postgresql://{auth}@{host}:{port}/{urllib.parse.quote(dbname, safe='')}"


def resolve_project_path(path: str, root: Path) -> Path:
    """A path from the stack config: absolute, or relative to the project root (where Pulumi.yaml is)."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else root / p
