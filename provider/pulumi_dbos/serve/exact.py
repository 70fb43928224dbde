"""``pulumi-dbos serve --cloud-exact``: DBOS Cloud's API as DBOS Cloud itself answers it, every pulumi-dbos
extension withheld, so the ``dbos-cloud`` engine's path without extensions runs against a real server.

What changes against plain serve (each one is what DBOS Cloud does, or the nearest thing it is known to do):

- the profile has no ``Server`` (the engine then uses no extension);
- responses carry none of the extension fields (``UserDBInstance.Kind``, ``RetentionHours``, ...,
  ``Application.Port``/``Owner``): they are left out, not sent as nulls;
- extension request fields (``Port``/``RetentionHours``/``Owner`` on provision, those and ``Password`` on
  restore, ``Username``/``Owner`` on link, ``Port``/``Owner`` on register, ``AppDbName``/``Port`` on deploy) are
  **ignored**, as a JSON decoder that does not know them does (the official CLI's own optional fields show
  the API tolerates fields it does not use); each ignored field is named in serve's log at WARNING, so a
  client that sends one can be caught;
- the extension routes (``PATCH databases/userdb/{name}``, ``…/backup``, ``…/start``, ``…/stop``,
  ``databases/preflight``) are not there: 404, as on DBOS Cloud;
- DBOS Cloud's own choices: it picks ports and retention (24 h here); a restore's user gets the source's
  password (the one the server holds) and ``RestoreTimestamp`` must be a timestamp (no ``latest``); a link
  logs in as ``dbosadmin``; app versions are numbers it assigns, one per deploy (``1``, ``2``, ...; a
  ``previous_version`` redeploy serves that number again); the app database is the archive's
  ``database.app_db_name``, else the app's name;
- database statuses in DBOS Cloud's words (RDS-like): ``available``, ``creating`` (also while restoring),
  ``stopped``, ``failed`` (data gone); a linked server is ``available`` (DBOS Cloud records it, it does not
  probe it).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, TypeVar

from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

from ..cloudapi.models import (
    Application,
    DeployRequest,
    LinkRequest,
    ProvisionRequest,
    RegisterRequest,
    RestoreRequest,
    UserDBInstance,
    UserProfile,
)

log = logging.getLogger("pulumi_dbos.serve")

M = TypeVar("M", bound=BaseModel)

#: pulumi-dbos's own fields of each wire model (DBOS Cloud neither sends nor reads them)
EXTENSIONS: dict[type[BaseModel], frozenset[str]] = {
    UserProfile: frozenset({"Server"}),
    UserDBInstance: frozenset({"Kind", "RetentionHours", "CreatedAt", "EarliestRestorableTime",
                               "LatestRestorableTime", "SourceInstance", "RestoredTo", "Owner", "LastDrill"}),
    Application: frozenset({"Port", "Owner"}),
    ProvisionRequest: frozenset({"Port", "RetentionHours", "Owner"}),
    RestoreRequest: frozenset({"Password", "Port", "RetentionHours", "Owner"}),
    LinkRequest: frozenset({"Username", "Owner"}),
    RegisterRequest: frozenset({"Port", "Owner"}),
    DeployRequest: frozenset({"AppDbName", "Port"}),
}

#: the local engine's instance statuses in DBOS Cloud's words
_DB_STATUS = {"available": "available", "creating": "creating", "restoring": "creating", "stopped": "stopped",
              "missing": "failed", "lost": "failed"}


def _extensions(model: type[BaseModel]) -> frozenset[str]:
    for cls in model.__mro__:
        if cls in EXTENSIONS:
            return EXTENSIONS[cls]
    return frozenset()


def ignore_extensions(body: M, where: str) -> M:
    """``body`` with its extension fields unset (DBOS Cloud does not read them); the ones sent are logged."""
    sent = sorted(f for f in _extensions(type(body)) if getattr(body, f, None) is not None)
    if not sent:
        return body
    log.warning("cloud-exact: ignored the pulumi-dbos extension field(s) %s of %s (DBOS Cloud does not read them)",
                ", ".join(sent), where)
    return body.model_copy(update=dict.fromkeys(sent))


def db_status(status: str, *, linked: bool) -> str:
    return "available" if linked else _DB_STATUS.get(status, status)


def _dump(model: BaseModel) -> dict[str, Any]:
    return model.model_dump(mode="json", exclude=set(_extensions(type(model))))


def ok(model: BaseModel | Sequence[BaseModel] | None, status: int = 200) -> Response:
    """:func:`.http.ok` without the extension fields (left out, not null; explicit nulls of the API's own
    fields, ``SupabaseReference: null``, stay)."""
    if model is None:
        return Response(status_code=status)
    if isinstance(model, BaseModel):
        return JSONResponse(_dump(model), status_code=status)
    return JSONResponse([_dump(m) for m in model], status_code=status)


def next_version(registration: dict[str, Any] | None, stored: Sequence[str]) -> str:
    """The number DBOS Cloud gives the next deploy of an app: one more than any it gave (its registration
    remembers the last, so a pruned version's number is never given again)."""
    numbers = [int(v) for v in stored if v.isdigit()]
    last = (registration or {}).get("LastVersion")
    if isinstance(last, int):
        numbers.append(last)
    return str(max(numbers, default=0) + 1)


__all__ = ["EXTENSIONS", "db_status", "ignore_extensions", "next_version", "ok"]
