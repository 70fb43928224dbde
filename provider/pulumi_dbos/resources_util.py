"""Small helpers shared by the CLI and the resources (no pulumi import)."""

from __future__ import annotations

import urllib.parse


def url_for(username: str, password: str | None, host: str, port: int, dbname: str = "postgres") -> str:
    user = urllib.parse.quote(username, safe="")
    auth = f"{user}:{urllib.parse.quote(password, safe='')}" if password else user
    return f"postgresql://{auth}@{host}:{port}/{urllib.parse.quote(dbname, safe='')}"
