"""The ``dbos-cloud`` engine: the engine contract over DBOS Cloud's REST API (or ``pulumi-dbos serve``).

Importing this package loads httpx; :mod:`pulumi_dbos.engine` imports it only when the engine is asked for.
"""

from __future__ import annotations

import sys

# httpx imports its own command-line client (click, rich, pygments: ~0.1 s, a tenth of a no-op preview's
# provider start) when those happen to be installed; the engine never runs it. Marking the module absent makes
# httpx fall back to its stub, as it does when they are not installed. Only when nothing imported it yet.
sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]

from .client import DEFAULT_DOMAIN, CloudClient  # noqa: E402 - after the httpx._main marker
from .facade import DbosCloudEngine  # noqa: E402
from .tokens import resolve_token  # noqa: E402

__all__ = ["DEFAULT_DOMAIN", "CloudClient", "DbosCloudEngine", "resolve_token"]
