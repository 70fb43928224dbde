"""HTTP to DBOS Cloud's control plane (or ``pulumi-dbos serve``): auth, timeouts, retries, errors.

One :class:`CloudClient` per engine object; ``httpx.Client`` is thread-safe and the profile cache
is behind a lock. HTTPS only, like the official CLI. Retries (tenacity, exponential backoff with
jitter) only where a repeat cannot do something twice: idempotent methods on 429/502/503/504 and
transport errors; POST/PUT only on a refused connection (nothing was sent) and on 429. Every error
is a :class:`~pulumi_dbos.errors.DbosError` naming what was asked, the server's message and its
``[requestID]`` (:mod:`.answers`); the token (:mod:`.tokens`) and the request's secrets are masked out of
every message.
"""

from __future__ import annotations

import functools
import logging
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential, wait_random

from ...cloudapi import paths
from ...cloudapi.models import SERVE_SERVER, UserProfile
from ...errors import DbosError, EngineError, TimeoutExpired
from ..settings import EngineSettings
from . import answers
from .answers import parse
from .tokens import mask, resolve_token

log = logging.getLogger("pulumi_dbos.engine.dbos_cloud")

DEFAULT_DOMAIN = "cloud.dbos.dev"
DOMAIN_ENV = "DBOS_DOMAIN"  # the official CLI's variable

READ_TIMEOUT = 60.0
LONG_TIMEOUT = 900.0  # deploys, restores, backups: the server may answer only when done

#: after a server did not answer (refused after the retries, or no handshake within the connect timeout), the
#: calls of this process fail at once for this long with that answer: a preview or refresh of N resources
#: against a frozen or stopped server costs one bounded failure, not N

RETRY_STATUSES = frozenset({429, 502, 503, 504})
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "DELETE", "PATCH"})


# ---------------------------------------------------------------------------- profile
@dataclass(frozen=True)
class Profile:
    name: str
    organization: str
    #: ``pulumi-dbos serve``: the extension fields and routes are understood
    serve: bool


class _Unreachable(Exception):
    """The server did not answer at all (remembered by the client, for the settings' ``cloud_unreachable_memo``)."""

    def __init__(self, error: DbosError) -> None:
        super().__init__(error.message)
        self.error = error


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
                                 "(serve/tls/cert.pem): `dbos:cloudCaCert` in the stack config, --cloud-ca-cert "
                                 "or $PULUMI_DBOS_CLOUD_CA_CERT for the CLI")
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
                 max_backoff: float = 8.0, sleep: Callable[[float], None] = time.sleep,
                 settings: EngineSettings | None = None) -> None:
        domain = (domain or DEFAULT_DOMAIN).strip().rstrip("/")
        if domain.startswith("http://"):
            raise DbosError(f"DBOS Cloud is reached over HTTPS only, not {domain}",
                            hint="give the domain as host[:port], e.g. cloud.dbos.dev or localhost:18443")
        self.domain = domain.removeprefix("https://")
        self._token = resolve_token(token)
        self.attempts = max(1, attempts)
        given = settings or EngineSettings.from_env()
        self.connect_timeout = given.cloud_connect_timeout
        self.unreachable_memo = given.cloud_unreachable_memo
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.sleep = sleep
        self._http = httpx.Client(
            base_url=f"https://{self.domain}", verify=_ssl_context(ca_cert), transport=transport,
            timeout=httpx.Timeout(READ_TIMEOUT, connect=self.connect_timeout),
            headers={"Authorization": f"Bearer {self._token}", "Content-Type": "application/json",
                     "Accept": "application/json", "User-Agent": "pulumi-dbos"},
            follow_redirects=False)
        self._lock = threading.Lock()
        self._profile: Profile | None = None
        self._down: tuple[float, DbosError] | None = None  # when the server last did not answer, and how

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
        self._refuse_if_down(what)
        started = time.monotonic()
        try:
            resp = self._send(method, url, body, params, timeout, what, masks)
        except _Unreachable as exc:
            self._down = (time.monotonic(), exc.error)
            raise exc.error from None
        log.debug("%s %s -> %s in %.3fs", method, url, resp.status_code, time.monotonic() - started)
        if resp.status_code >= 400:
            raise self._error(resp, what, masks)
        return answers.payload(resp)

    def _refuse_if_down(self, what: str) -> None:
        down = self._down
        if down is None:
            return
        since = time.monotonic() - down[0]
        if since >= self.unreachable_memo:
            self._down = None
            return
        first = down[1]
        raise type(first)(f"{what}: not asked: {first.message.split(': ', 1)[-1]} ({since:.0f}s ago; this process "
                          f"asks again after {self.unreachable_memo:.0f}s)", hint=first.hint)

    def _send(self, method: str, url: str, body: Mapping[str, Any] | None, params: Mapping[str, Any] | None,
              timeout: float | None, what: str, masks: list[str | None]) -> httpx.Response:
        idempotent = method in IDEMPOTENT

        def retryable(exc: BaseException) -> bool:
            if isinstance(exc, _RetryStatus):
                return True
            if isinstance(exc, httpx.ConnectTimeout):
                return False  # no handshake within the connect timeout: a stuck server; asking again multiplies the wait
            if isinstance(exc, httpx.ConnectError):
                return True  # nothing reached the server
            # a timeout is not asked again either: the server took the request and did not answer
            return idempotent and isinstance(exc, httpx.TransportError) and not isinstance(exc, httpx.TimeoutException)

        to = httpx.Timeout(timeout, connect=self.connect_timeout) if timeout else httpx.USE_CLIENT_DEFAULT
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
            hint = ("check the domain (`dbos:cloudDomain` in the stack, --cloud-domain or $DBOS_DOMAIN for the CLI) "
                    "and the network"
                    + ("; the server's certificate is not trusted: for pulumi-dbos serve pass its CA certificate "
                       "(D/serve/tls/cert.pem) with `dbos:cloudCaCert` in the stack config, or --cloud-ca-cert "
                       "PEM (or $PULUMI_DBOS_CLOUD_CA_CERT) for the pulumi-dbos CLI"
                       if "CERTIFICATE" in text.upper() else ""))
            if isinstance(exc, httpx.ConnectTimeout):
                text = f"no TLS handshake within {self.connect_timeout:.0f}s (the server is stopped or overloaded)"
            raise _Unreachable(EngineError(f"{what}: cannot reach DBOS Cloud at {self.domain}: {text}",
                                           hint=hint)) from None
        except httpx.TimeoutException:
            sent = "" if idempotent else " (it may have happened anyway: `pulumi refresh` shows what exists)"
            error = TimeoutExpired(f"{what}: no answer from DBOS Cloud at {self.domain} within "
                                   f"{timeout or READ_TIMEOUT:.0f}s{sent}")
            if idempotent and not timeout:  # a read the server should answer at once: it is stuck
                raise _Unreachable(error) from None
            raise error from None
        except httpx.HTTPError as exc:
            raise EngineError(f"{what}: the connection to DBOS Cloud at {self.domain} failed: "
                              f"{mask(str(exc), masks) or type(exc).__name__}") from None
        raise AssertionError("unreachable")  # pragma: no cover - Retrying re-raises or returns

    def _error(self, resp: httpx.Response, what: str, masks: list[str | None]) -> DbosError:
        org = self._profile.organization if self._profile else None
        return answers.error(resp, what, masks, domain=self.domain, token=self._token, organization=org,
                             attempts=self.attempts)


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

