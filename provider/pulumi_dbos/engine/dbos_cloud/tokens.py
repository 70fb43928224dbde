"""The bearer token of the dbos-cloud engine: where it comes from, when it expires, kept out of messages."""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path

from ...errors import DbosError

TOKEN_ENV = "DBOS_CLOUD_TOKEN"
CREDENTIALS_FILE = Path(".dbos") / "credentials"  # the official CLI's, relative to the working directory

TOKEN_HINT = ("get a new token — for pulumi-dbos serve: `pulumi-dbos serve token --org ORG --user USER`; for "
              "DBOS Cloud: `dbos-cloud login` — and pass it as the `dbos:cloudToken` secret "
              f"(`pulumi config set --secret dbos:cloudToken ...`) or in {TOKEN_ENV}")


def resolve_token(token: str | None, cwd: Path | None = None) -> str:
    """The bearer token: explicit, else ``$DBOS_CLOUD_TOKEN``, else the DBOS CLI's ``./.dbos/credentials``."""
    for candidate in (token, os.environ.get(TOKEN_ENV)):
        if candidate and candidate.strip():
            return candidate.strip()
    creds = (cwd or Path.cwd()) / CREDENTIALS_FILE
    if creds.is_file():
        try:
            data = json.loads(creds.read_text())
        except (OSError, ValueError) as exc:
            raise DbosError(f"cannot read the DBOS CLI's credentials file {creds}: {type(exc).__name__}",
                            hint="run `dbos-cloud login` again, or set the `dbos:cloudToken` secret") from None
        value = data.get("token") if isinstance(data, dict) else None
        if isinstance(value, str) and value.replace("\r", "").replace("\n", "").strip():
            return value.replace("\r", "").replace("\n", "").strip()
    raise DbosError("no DBOS Cloud token: the dbos-cloud engine needs one",
                    hint="set the `dbos:cloudToken` secret (`pulumi config set --secret dbos:cloudToken`, which prompts for it or reads stdin), "
                         f"or {TOKEN_ENV}, or run `dbos-cloud login` in the project directory (it writes "
                         "./.dbos/credentials); for pulumi-dbos serve: `pulumi-dbos serve token --org ORG --user USER`")


def token_expiry(token: str) -> datetime | None:
    """The ``exp`` of a JWT, read without checking its signature (only to word an error)."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return datetime.fromtimestamp(float(claims["exp"]), tz=timezone.utc)
    except (IndexError, ValueError, KeyError, TypeError):
        return None


def mask(text: str, secrets: Iterable[str | None]) -> str:
    """``text`` with every secret (the token, passwords, env values) replaced by ``[secret]``, longest first."""
    for s in sorted((s for s in secrets if s and len(s) >= 3), key=len, reverse=True):
        text = text.replace(s, "[secret]")
    return text
