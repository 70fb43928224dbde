"""HTTP to DBOS Cloud's control plane (or ``pulumi-dbos serve``): auth, timeouts, retries, errors.

One :class:`CloudClient` per engine object; ``httpx.Client`` is thread-safe and the profile cache
is behind a lock. HTTPS only, like the official CLI. Retries (tenacity, exponential backoff with
jitter) only where a repeat cannot do something twice: idempotent methods on 429/502/503/504 and
transport errors; POST/PUT only on a refused connection (nothing was sent) and on 429. Every error
is a :class:`~pulumi_dbos.errors.DbosError` naming what was asked, the server's message and its
``[requestID]``; the token and the request's secrets are masked out of every message.
"""

from __future__ import annotations

import base64
import functools
import json
import logging
import os
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel
from pydantic import ValidationError as PydanticValidationError
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential, wait_random

from ...cloudapi import paths
from ...cloudapi.models import SERVE_SERVER, CloudAPIError, UserProfile
from ...errors import (
    AlreadyExistsError,
    DbosError,
    EngineError,
    NotFoundError,
    TimeoutExpired,
    ValidationError,
)

log = logging.getLogger("pulumi_dbos.engine.dbos_cloud")

DEFAULT_DOMAIN = "cloud.dbos.dev"
TOKEN_ENV = "DBOS_CLOUD_TOKEN"
DOMAIN_ENV = "DBOS_DOMAIN"  # the official CLI's variable
CREDENTIALS_FILE = Path(".dbos") / "credentials"  # the official CLI's, relative to the working directory

CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 60.0
LONG_TIMEOUT = 900.0  # deploys, restores, backups: the server may answer only when done

RETRY_STATUSES = frozenset({429, 502, 503, 504})
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "DELETE", "PATCH"})

TOKEN_HINT = ("get a new token — for pulumi-dbos serve: `pulumi-dbos serve token --org ORG --user USER`; for "
              "DBOS Cloud: `dbos-cloud login` — and pass it as the `dbos:cloudToken` secret "
              f"(`pulumi config set --secret dbos:cloudToken ...`) or in {TOKEN_ENV}")

M = TypeVar("M", bound=BaseModel)


# ---------------------------------------------------------------------------- token
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
                    hint="set the `dbos:cloudToken` secret (`pulumi config set --secret dbos:cloudToken <token>`), "
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
    for s in sorted((s for s in secrets if s and len(s) >= 3), key=len, reverse=True):
        text = text.replace(s, "[secret]")
    return text


# ---------------------------------------------------------------------------- profile
@dataclass(frozen=True)
class Profile:
    name: str
    organization: str
    #: ``pulumi-dbos serve``: the extension fields and routes are understood
    serve: bool


class _RetryStatus(Exception):
    """A response worth another attempt (kept to be reported if the attempts run out)."""

    def __init__(self, response: httpx.Response) -> None:
        super().__init__(response.status_code)
        self.response = response


def _ssl_context(ca_cert: str | None) -> ssl.SSLContext:
    if ca_cert:
        if not Path(ca_cert).is_file():
            raise DbosError(f"CA certificate {ca_cert} does not exist",
                            hint="for pulumi-dbos serve use the certificate it wrote into its data dir "
                                 "(serve/tls/cert.pem)")
        return ssl.create_default_context(cafile=ca_cert)
    return _default_context()


@functools.lru_cache(maxsize=1)
def _default_context() -> ssl.SSLContext:
    """Loading the roots takes a while: one context for every client of the process (contexts are shareable)."""
    ctx = ssl.create_default_context()  # the system's roots, plus certifi's where the system has none
    try:
        import certifi

        ctx.load_verify_locations(certifi.where())
    except (ImportError, OSError):
        pass
    return ctx


class CloudClient:
    """Calls of one organization's control plane. ``transport``/``sleep`` are for tests."""

    def __init__(self, domain: str = DEFAULT_DOMAIN, token: str | None = None, ca_cert: str | None = None, *,
                 transport: httpx.BaseTransport | None = None, attempts: int = 4, backoff: float = 0.5,
                 max_backoff: float = 8.0, sleep: Callable[[float], None] = time.sleep) -> None:
        domain = (domain or DEFAULT_DOMAIN).strip().rstrip("/")
        if domain.startswith("http://"):
            raise DbosError(f"DBOS Cloud is reached over HTTPS only, not {domain}",
                            hint="give the domain as host[:port], e.g. cloud.dbos.dev or localhost:18443")
        self.domain = domain.removeprefix("https://")
        self._token = resolve_token(token)
        self.attempts = max(1, attempts)
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.sleep = sleep
        self._http = httpx.Client(
            base_url=f"https://{self.domain}", verify=_ssl_context(ca_cert), transport=transport,
            timeout=httpx.Timeout(READ_TIMEOUT, connect=CONNECT_TIMEOUT),
            headers={"Authorization": f"Bearer {self._token}", "Content-Type": "application/json",
                     "Accept": "application/json", "User-Agent": "pulumi-dbos"},
            follow_redirects=False)
        self._lock = threading.Lock()
        self._profile: Profile | None = None

    def close(self) -> None:
        self._http.close()

    # ------------------------------------------------------------ profile
    def cached_profile(self) -> Profile | None:
        return self._profile

    @property
    def profile(self) -> Profile:
        """The caller's organization (``GET /v1alpha1/user/profile``, once) and whether the server is serve."""
        with self._lock:
            if self._profile is None:
                data = self.call("GET", paths.PROFILE, what="reading the user profile")
                p = parse(UserProfile, data, "the user profile")
                self._profile = Profile(p.Name, p.Organization, p.Server == SERVE_SERVER)
            return self._profile

    # ------------------------------------------------------------ calls
    def call(self, method: str, template: str, *, what: str, body: Mapping[str, Any] | None = None,
             params: Mapping[str, Any] | None = None, timeout: float | None = None,
             secrets: Iterable[str | None] = (), **segments: str) -> Any:
        """``method`` on ``template`` (``{org}`` filled in from the profile, the rest from ``segments``):
        the JSON answer (a raw string when the body is not JSON, None when empty), or a DbosError."""
        if "{org}" in template:
            segments = {"org": self.profile.organization, **segments}
        url = template.format(**segments)
        masks = [self._token, *secrets]
        started = time.monotonic()
        resp = self._send(method, url, body, params, timeout, what, masks)
        log.debug("%s %s -> %s in %.3fs", method, url, resp.status_code, time.monotonic() - started)
        if resp.status_code >= 400:
            raise self._error(resp, what, masks)
        return _payload(resp)

    def _send(self, method: str, url: str, body: Mapping[str, Any] | None, params: Mapping[str, Any] | None,
              timeout: float | None, what: str, masks: list[str | None]) -> httpx.Response:
        idempotent = method in IDEMPOTENT

        def retryable(exc: BaseException) -> bool:
            if isinstance(exc, _RetryStatus):
                return True
            if isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout)):
                return True  # nothing reached the server
            return idempotent and isinstance(exc, httpx.TransportError)

        to = httpx.Timeout(timeout, connect=CONNECT_TIMEOUT) if timeout else httpx.USE_CLIENT_DEFAULT
        retrying = Retrying(retry=retry_if_exception(retryable), stop=stop_after_attempt(self.attempts),
                            wait=wait_exponential(multiplier=self.backoff, max=self.max_backoff)
                            + wait_random(0, self.backoff),  # jitter: ≤4 provider threads do not retry in step
                            sleep=self.sleep, reraise=True)
        try:
            for attempt in retrying:
                with attempt:
                    resp = self._http.request(method, url, json=body, params=params, timeout=to)
                    if resp.status_code == 429 or (idempotent and resp.status_code in RETRY_STATUSES):
                        resp.read()
                        raise _RetryStatus(resp)
                    return resp
        except _RetryStatus as exc:
            return exc.response
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            text = mask(str(exc), masks)
            hint = ("check the domain (`dbos:cloudDomain`) and the network"
                    + ("; the server's certificate is not trusted: for pulumi-dbos serve pass its CA certificate"
                       if "CERTIFICATE" in text.upper() else ""))
            raise EngineError(f"{what}: cannot reach DBOS Cloud at {self.domain}: {text}", hint=hint) from None
        except httpx.TimeoutException:
            sent = "" if idempotent else " (it may have happened anyway: `pulumi refresh` shows what exists)"
            raise TimeoutExpired(f"{what}: no answer from DBOS Cloud at {self.domain} within "
                                 f"{timeout or READ_TIMEOUT:.0f}s{sent}") from None
        except httpx.HTTPError as exc:
            raise EngineError(f"{what}: the connection to DBOS Cloud at {self.domain} failed: "
                              f"{mask(str(exc), masks) or type(exc).__name__}") from None
        raise AssertionError("unreachable")  # pragma: no cover - Retrying re-raises or returns

    # ------------------------------------------------------------ errors
    def _error(self, resp: httpx.Response, what: str, masks: list[str | None]) -> DbosError:
        payload = _payload(resp)
        api: CloudAPIError | None = None
        if isinstance(payload, dict):
            try:
                api = CloudAPIError.model_validate(payload)
            except PydanticValidationError:
                api = None
        status = resp.status_code
        if api is not None:
            message, rid = api.message, f" [{api.requestID}]"
            detail = f"\n{api.DetailedError.strip()}" if api.DetailedError and api.DetailedError.strip() else ""
        else:
            message, rid, detail = _plain_message(payload, resp), "", ""
        message, detail = mask(message.strip().rstrip("."), masks), mask(detail, masks)
        if status == 404:
            return NotFoundError(f"{what}: {message}{rid}{detail}",
                                 hint="`pulumi-dbos db list` / `app list` show what exists")
        if status == 409:
            return AlreadyExistsError(f"{what}: {message}{rid}{detail}",
                                      hint="choose another name, or set adopt=True to take it over")
        if status in (400, 422):
            return ValidationError([(_field(payload) or what, f"{message}{rid}{detail}")])
        if status == 401:
            exp = token_expiry(self._token or "")
            why = (f"expired at {exp.isoformat(timespec='seconds')}" if exp and exp <= datetime.now(timezone.utc)
                   else "was not accepted")
            return DbosError(f"{what}: DBOS Cloud at {self.domain} refused the token: it {why} "
                             f"({message}){rid}", hint=TOKEN_HINT)
        if status == 403:
            prof = self._profile
            org = f" of organization {prof.organization!r}" if prof else ""
            return DbosError(f"{what}: forbidden for this token{org}: {message}{rid}",
                             hint="the object belongs to another organization, or the token's user may not do "
                                  "this: use a token of the organization that owns it")
        if status == 429:
            return EngineError(f"{what}: DBOS Cloud is rate-limiting requests ({self.attempts} attempts): "
                               f"{message}{rid}", hint="retry in a minute")
        return EngineError(f"{what}: DBOS Cloud at {self.domain} answered {status}: {message}{rid}{detail}",
                           hint="retry; if it persists, DBOS Cloud's status page or support can help with the "
                                "request ID" if rid else None)


def _payload(resp: httpx.Response) -> Any:
    if not resp.content:
        return None
    try:
        return resp.json()
    except ValueError:
        return resp.text


def _plain_message(payload: Any, resp: httpx.Response) -> str:
    if isinstance(payload, dict):
        detail = payload.get("detail")
        if isinstance(detail, list) and detail and isinstance(detail[0], dict):  # FastAPI's 422
            return "; ".join(str(d.get("msg", d)) for d in detail)
        for key in ("message", "detail", "error"):
            if isinstance(payload.get(key), str):
                return str(payload[key])
    if isinstance(payload, str) and payload.strip():
        return payload.strip()[:500]
    return resp.reason_phrase or f"HTTP {resp.status_code}"


def _field(payload: Any) -> str | None:
    """The input a 400/422 is about, when the server says (a ``Field`` of ours or FastAPI's ``loc``)."""
    if not isinstance(payload, dict):
        return None
    for key in ("Field", "field"):
        if isinstance(payload.get(key), str) and payload[key]:
            return str(payload[key])
    detail = payload.get("detail")
    if isinstance(detail, list) and detail and isinstance(detail[0], dict):
        loc = [str(x) for x in detail[0].get("loc", []) if x not in ("body", "query", "path")]
        return ".".join(loc) or None
    return None


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


# ---------------------------------------------------------------------------- polling
def poll(probe: Callable[[], Any], timeout: float, what: str, *, hint: str | None = None,
         sleep: Callable[[float], None] = time.sleep, first: float = 0.2, most: float = 2.0) -> Any:
    """Call ``probe`` until it returns something other than None (returned), backing off from ``first`` to
    ``most`` seconds; ``probe`` raises to give up (a failure state). TimeoutExpired after ``timeout``."""
    deadline = time.monotonic() + timeout
    delay = first
    while True:
        result = probe()
        if result is not None:
            return result
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutExpired(f"{what} within {timeout:.0f}s", hint=hint)
        sleep(min(delay, left))
        delay = min(delay * 2, most)
