"""What a route is given (FastAPI dependencies): the serve it runs in, and the caller's organization.

The routes are module-level routers (``databases.r``/``ext``, ``applications.r``); each names what it needs
in its signature: ``org: Org`` is the path's organization once the caller's token is known to belong to it
(403 otherwise: no route can forget the check), ``ctx: Ctx`` the :class:`ServeContext` the app was made with.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request
from fastapi.responses import Response
from pydantic import BaseModel

from . import exact
from .http import ok, owned
from .limits import Limits
from .state import ServeState


@dataclass
class ServeContext:
    """One serve's state, limits and mode, shared by every request (``app.state.serve``)."""

    state: ServeState
    limits: Limits
    cloud_exact: bool = False
    #: org -> names of instances being provisioned, restored or linked (the quota counts them)
    creating: dict[str, set[str]] = field(default_factory=dict)

    def respond(self, model: BaseModel | Sequence[BaseModel] | None, status: int = 200) -> Response:
        """A JSON answer, as DBOS Cloud words it under ``--cloud-exact``."""
        return (exact.ok if self.cloud_exact else ok)(model, status)


def serve_context(request: Request) -> ServeContext:
    ctx = request.app.state.serve
    assert isinstance(ctx, ServeContext)
    return ctx


def caller_org(request: Request, org: str) -> str:
    """The path's ``org`` when the caller's token belongs to it (``http.owned``: 403 otherwise)."""
    return owned(request, org)


Ctx = Annotated[ServeContext, Depends(serve_context)]
Org = Annotated[str, Depends(caller_org)]
