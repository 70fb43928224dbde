"""What every route shares: error bodies DBOS Cloud's CLI recognises, JSON responses, input checks."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from fastapi import Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

from ..cloudapi.models import CloudAPIError
from ..config import rules
from ..errors import (
    AlreadyExistsError,
    CommandError,
    DbosError,
    NotFoundError,
    TimeoutExpired,
    ValidationError,
)
from .auth import Claims

T = TypeVar("T")


class ApiError(Exception):
    """An error answered as a :class:`CloudAPIError` body (the CLI prints ``[requestID] ...: message.``)."""

    def __init__(self, status: int, message: str, detailed: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.detailed = detailed


def request_id() -> str:
    return f"req-{secrets.token_hex(4)}"


def error_response(status: int, message: str, detailed: str | None = None) -> JSONResponse:
    body = CloudAPIError(message=message, statusCode=status, requestID=request_id(), DetailedError=detailed)
    return JSONResponse(body.model_dump(exclude_none=True), status_code=status)


def status_of(exc: DbosError) -> int:
    """The HTTP status of an engine error: the caller's input (4xx) unless the machine failed (500)."""
    if isinstance(exc, NotFoundError):
        return 404
    if isinstance(exc, AlreadyExistsError):
        return 409
    if isinstance(exc, (CommandError, TimeoutExpired)):
        return 500
    return 400  # ValidationError and the engine's refusals (outside the window, linked, port taken...)


def from_dbos(exc: DbosError, prefix: str = "") -> ApiError:
    return ApiError(status_of(exc), prefix + exc.message)


def ok(model: BaseModel | Sequence[BaseModel] | None, status: int = 200) -> Response:
    """A JSON response with every field, explicit nulls included (``SupabaseReference: null``)."""
    if model is None:
        return Response(status_code=status)
    if isinstance(model, BaseModel):
        return JSONResponse(model.model_dump(mode="json"), status_code=status)
    return JSONResponse([m.model_dump(mode="json") for m in model], status_code=status)


def claims_of(request: Request) -> Claims:
    claims = getattr(request.state, "claims", None)
    if not isinstance(claims, Claims):  # the auth middleware sets it on every /v1alpha1 path
        raise ApiError(401, "missing bearer token")
    return claims


def owned(request: Request, org: str) -> str:
    """``org`` when the request's token belongs to it (the auth middleware refuses others first)."""
    if claims_of(request).org != org:
        raise ApiError(403, f"this token cannot access organization {org}")
    return org


def check(rule: Callable[[Any], T], value: Any) -> T:
    """Apply one of :mod:`pulumi_dbos.config.rules` (ValueError -> 400 with its message)."""
    try:
        return rule(value)
    except ValueError as exc:
        raise ApiError(400, str(exc)) from None


def as_int(value: int | str | None, what: str, lo: int, hi: int) -> int | None:
    """A number the CLI sends as a string (``"1024"``)."""
    if value is None:
        return None
    try:
        n = int(str(value).strip())
    except ValueError:
        raise ApiError(400, f"{what} must be an integer, got {value!r}") from None
    if not lo <= n <= hi:
        raise ApiError(400, f"{what} must be in {lo}-{hi}, got {n}")
    return n


def validation_message(exc: ValidationError) -> str:
    return "; ".join(msg for _path, msg in exc.problems) or exc.message


def valid_name(name: str) -> bool:
    """Whether ``name`` could name an instance or app (a lookup of any other answers "not found")."""
    try:
        rules.check_name(name)
    except ValueError:
        return False
    return True
