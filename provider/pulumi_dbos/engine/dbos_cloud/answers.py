"""What DBOS Cloud answers, read: bodies as models, error responses as the contract's errors.

Every error names what was asked, the server's message and its ``[requestID]``; the token and the
request's secrets are masked out of every message.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel
from pydantic import ValidationError as PydanticValidationError

from ...cloudapi.models import CloudAPIError
from ...errors import AlreadyExistsError, DbosError, EngineError, NotFoundError, ValidationError
from .tokens import TOKEN_HINT, mask, token_expiry

M = TypeVar("M", bound=BaseModel)


def payload(resp: httpx.Response) -> Any:
    """The JSON body, a raw string when it is not JSON, None when empty."""
    if not resp.content:
        return None
    try:
        return resp.json()
    except ValueError:
        return resp.text


def parse(model: type[M], data: Any, what: str) -> M:
    """``data`` as ``model``, or an EngineError saying the server's answer was not what the API promises."""
    try:
        return model.model_validate(data)
    except PydanticValidationError as exc:
        raise EngineError(f"unexpected answer from DBOS Cloud for {what}: {exc.error_count()} field(s) do not "
                          f"match {model.__name__} ({exc.errors()[0].get('loc')})") from None


def parse_list(model: type[M], data: Any, what: str) -> list[M]:
    if not isinstance(data, list):
        raise EngineError(f"unexpected answer from DBOS Cloud for {what}: expected a list")
    return [parse(model, item, what) for item in data]


def error(resp: httpx.Response, what: str, masks: list[str | None], *, domain: str, token: str,
          organization: str | None, attempts: int) -> DbosError:
    """The contract's error for a response of status 400 or more."""
    data = payload(resp)
    api: CloudAPIError | None = None
    if isinstance(data, dict):
        try:
            api = CloudAPIError.model_validate(data)
        except PydanticValidationError:
            api = None
    status = resp.status_code
    if api is not None:
        message, rid = api.message, f" [{api.requestID}]"
        detail = f"\n{api.DetailedError.strip()}" if api.DetailedError and api.DetailedError.strip() else ""
    else:
        message, rid, detail = _plain_message(data, resp), "", ""
    message, detail = mask(message.strip().rstrip("."), masks), mask(detail, masks)
    if status == 404:
        return NotFoundError(f"{what}: {message}{rid}{detail}",
                             hint="`pulumi-dbos db list` / `app list` show what exists")
    if status == 409:
        return AlreadyExistsError(f"{what}: {message}{rid}{detail}",
                                  hint="choose another name, or set adopt=True to take it over")
    if status in (400, 422):
        return ValidationError([(_field(data) or what, f"{message}{rid}{detail}")])
    if status == 401:
        exp = token_expiry(token)
        why = (f"expired at {exp.isoformat(timespec='seconds')}" if exp and exp <= datetime.now(timezone.utc)
               else "was not accepted")
        return DbosError(f"{what}: DBOS Cloud at {domain} refused the token: it {why} "
                         f"({message}){rid}", hint=TOKEN_HINT)
    if status == 403:
        org = f" of organization {organization!r}" if organization else ""
        return DbosError(f"{what}: forbidden for this token{org}: {message}{rid}",
                         hint="the object belongs to another organization, or the token's user may not do "
                              "this: use a token of the organization that owns it")
    if status == 429:
        return EngineError(f"{what}: DBOS Cloud is rate-limiting requests ({attempts} attempts): "
                           f"{message}{rid}", hint="retry in a minute")
    return EngineError(f"{what}: DBOS Cloud at {domain} answered {status}: {message}{rid}{detail}",
                       hint="retry; if it persists, DBOS Cloud's status page or support can help with the "
                            "request ID" if rid else None)


def _plain_message(data: Any, resp: httpx.Response) -> str:
    if isinstance(data, dict):
        detail = data.get("detail")
        if isinstance(detail, list) and detail and isinstance(detail[0], dict):  # FastAPI's 422
            return "; ".join(str(d.get("msg", d)) for d in detail)
        for key in ("message", "detail", "error"):
            if isinstance(data.get(key), str):
                return str(data[key])
    if isinstance(data, str) and data.strip():
        return data.strip()[:500]
    return resp.reason_phrase or f"HTTP {resp.status_code}"


def _field(data: Any) -> str | None:
    """The input a 400/422 is about, when the server says (a ``Field`` of ours or FastAPI's ``loc``)."""
    if not isinstance(data, dict):
        return None
    for key in ("Field", "field"):
        if isinstance(data.get(key), str) and data[key]:
            return str(data[key])
    detail = data.get("detail")
    if isinstance(detail, list) and detail and isinstance(detail[0], dict):
        loc = [str(x) for x in detail[0].get("loc", []) if x not in ("body", "query", "path")]
        return ".".join(loc) or None
    return None
