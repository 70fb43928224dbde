"""The ``dbos-cloud`` engine: the engine contract over DBOS Cloud's REST API (or ``pulumi-dbos serve``).

Importing this package loads httpx; :mod:`pulumi_dbos.engine` imports it only when the engine is asked for.
"""

from __future__ import annotations

from .client import DEFAULT_DOMAIN, CloudClient
from .facade import DbosCloudEngine
from .tokens import resolve_token

__all__ = ["DEFAULT_DOMAIN", "CloudClient", "DbosCloudEngine", "resolve_token"]
