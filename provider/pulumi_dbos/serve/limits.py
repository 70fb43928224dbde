"""What one organization may ask of serve, so that no tenant exhausts the host or stalls the others.

- **Request bodies** are capped (``--max-body-mib``): counted as they stream, whatever Content-Length
  says (absent, or a lie); over the cap the answer is 413 naming it.
- **Application archives** are capped in uncompressed total size, entry count and a single entry's
  size (``--max-archive-mib``, ``--max-archive-entries``, ``--max-archive-entry-mib``): checked in the
  zip's central directory *and* while decompressing (headers can lie), before anything is stored;
  over a cap the answer is 400 naming it (:func:`pulumi_dbos.appsource.check_archive`).
- **Quotas** per organization: database instances (provisioned, restored and linked alike,
  ``--max-instances``) and apps (``--max-apps``); over one, 400 naming it.
- **Fairness**: each organization's requests pass a gate of their own, after authentication: at most
  ``--org-concurrency`` requests that change something (POST/PUT/PATCH/DELETE: deploys, links,
  provisions, restores...) run at once, and twice that many reads. Further requests *wait*, holding no
  worker thread (an awaiting coroutine), up to ``--org-queue`` of them; beyond that the answer is 429
  with Retry-After. So one organization's slow requests (a link to a server that never answers, a
  deploy's environment build) hold at most its own share of the worker threads, and the others'
  requests never queue behind them. The worker pool (:data:`THREADS`) is larger than anyio's default
  40, and uvicorn refuses connections beyond ``--max-connections`` (503).
- **Link targets** may be restricted to networks (``--link-allow CIDR``, repeatable).

Every limit has a flag of ``pulumi-dbos serve`` and an environment variable
``PULUMI_DBOS_SERVE_<FLAG>`` (``--max-instances`` -> ``PULUMI_DBOS_SERVE_MAX_INSTANCES``); the flag wins.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import socket
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

import anyio

from ..errors import DbosError

log = logging.getLogger("pulumi_dbos.serve")

MIB = 1024 * 1024
#: worker threads of the request handlers (anyio's default is 40)
THREADS = 200
#: a refused body is read on (and dropped) up to this much more, so the client sees the answer
DRAIN_BYTES = 64 * MIB
DRAIN_SECONDS = 30.0

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


@dataclass(frozen=True)
class Limits:
    """Serve's limits; the defaults are generous for a team's apps and tests (see the flags' help)."""

    max_body: int = 32 * MIB
    max_archive: int = 512 * MIB
    max_archive_entries: int = 20_000
    max_archive_entry: int = 256 * MIB
    max_instances: int = 50
    max_apps: int = 50
    org_concurrency: int = 8
    org_queue: int = 64
    max_connections: int = 1000
    #: open connections of one client address (0: a quarter of ``max_connections``): beyond, 429 and closed
    max_client_connections: int = 0
    #: seconds a connection may take to send a request's headers (its first, or its next one): then closed
    request_timeout: int = 15
    link_allow: tuple[Network, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        for what, value in (("--max-body-mib", self.max_body), ("--max-archive-mib", self.max_archive),
                            ("--max-archive-entries", self.max_archive_entries),
                            ("--max-archive-entry-mib", self.max_archive_entry),
                            ("--max-instances", self.max_instances), ("--max-apps", self.max_apps),
                            ("--org-concurrency", self.org_concurrency), ("--max-connections", self.max_connections),
                            ("--request-timeout", self.request_timeout)):
            if value < 1:
                raise DbosError(f"{what} must be at least 1, got {value}")
        if self.org_queue < 0:
            raise DbosError(f"--org-queue must be 0 or more, got {self.org_queue}")
        if not 0 <= self.max_client_connections <= self.max_connections:
            raise DbosError(f"--max-client-connections must be between 0 (a quarter of --max-connections) and "
                            f"--max-connections ({self.max_connections}), got {self.max_client_connections}")

    @property
    def per_client(self) -> int:
        """Open connections one client address may hold."""
        return self.max_client_connections or max(1, self.max_connections // 4)

    @property
    def org_reads(self) -> int:
        """Reads of one organization running at once."""
        return 2 * self.org_concurrency


def parse_network(text: str) -> Network:
    """A ``--link-allow`` value: a CIDR (``10.0.0.0/8``) or a single address."""
    try:
        return ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        raise DbosError(f"--link-allow {text!r} is not a network", hint="a CIDR such as 10.0.0.0/8 or 192.168.1.7/32, "
                        "or an address") from None


# ---------------------------------------------------------------------------------------------- link targets
def link_allowed(hostname: str, port: int, networks: tuple[Network, ...]) -> bool:
    """Whether every address ``hostname`` resolves to lies in one of ``networks`` (no networks: anything).
    A name that resolves to nothing is not allowed."""
    if not networks:
        return True
    try:
        infos = socket.getaddrinfo(hostname, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return False
    addresses = {ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos}
    return bool(addresses) and all(any(_inside(a, n) for n in networks) for a in addresses)


def _inside(address: ipaddress.IPv4Address | ipaddress.IPv6Address, network: Network) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.version == network.version and address in network


# ---------------------------------------------------------------------------------------------- ASGI helpers
def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers") or ():
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


async def _answer(send: Send, status: int, message: str, headers: dict[str, str] | None = None) -> None:
    """An error as DBOS Cloud's body (``{message, statusCode, requestID}``)."""
    from .http import request_id

    body = json.dumps({"message": message, "statusCode": status, "requestID": request_id()}).encode()
    hdrs = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    hdrs += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": hdrs})
    await send({"type": "http.response.body", "body": body})


async def _drain(receive: Receive, already: bool) -> None:
    """Read and drop what is left of a refused body (bounded), so the client reads the answer instead of
    a reset connection."""
    if already:
        return
    dropped = 0
    with anyio.move_on_after(DRAIN_SECONDS):
        while dropped < DRAIN_BYTES:
            msg = await receive()
            if msg["type"] != "http.request":
                return
            dropped += len(msg.get("body") or b"")
            if not msg.get("more_body", False):
                return


class BodyLimit:
    """413 for a request body over ``limit`` bytes: a Content-Length over it is refused before the body is
    read; otherwise the bytes are counted as they arrive (chunked bodies, lying lengths): at the first byte
    over, the application is told the client left (so nothing acts on a partial body) and whatever it answers
    is replaced by the 413."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    def message(self) -> str:
        return (f"the request body is larger than this server accepts ({_mib(self.limit)}, --max-body-mib): "
                "make the application archive smaller (.dbosignore what the app does not need)")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _header(scope, b"content-length")
        if declared is not None and (not declared.strip().isdigit() or int(declared) > self.limit):
            await _drain(receive, False)
            await _answer(send, 413, self.message())
            return
        seen = 0
        over = False
        answered = False

        async def counted() -> Message:
            nonlocal seen, over
            if over:
                return {"type": "http.disconnect"}
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body") or b"")
                if seen > self.limit:
                    over = True
                    await _drain(receive, not msg.get("more_body", False))
                    return {"type": "http.disconnect"}
            return msg

        async def replaced(msg: Message) -> None:
            nonlocal answered
            if not over:
                await send(msg)
            elif not answered and msg["type"] == "http.response.start":
                answered = True
                await _answer(send, 413, self.message())

        try:
            await self.app(scope, counted, replaced)
        except Exception:
            if not over:
                raise
        if over and not answered:
            await _answer(send, 413, self.message())


def _mib(n: int) -> str:
    return f"{n // MIB} MiB" if n % MIB == 0 else f"{n} bytes"


class OrgGate:
    """Per-organization admission (after authentication, keyed by the token's organization): ``writes``
    changing requests and ``reads`` reads at once; more wait without a thread, ``queue`` at most per
    organization and kind; beyond, 429."""

    def __init__(self, app: ASGIApp, limits: Limits) -> None:
        self.app = app
        self.limits = limits
        self._gates: dict[tuple[str, bool], _Gate] = {}

    def gate(self, org: str, write: bool) -> _Gate:
        key = (org, write)
        g = self._gates.get(key)
        if g is None:  # one event loop: no lock needed
            g = self._gates[key] = _Gate(self.limits.org_concurrency if write else self.limits.org_reads)
        return g

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        claims = (scope.get("state") or {}).get("claims") if scope["type"] == "http" else None
        org = getattr(claims, "org", None)
        if not isinstance(org, str):
            await self.app(scope, receive, send)
            return
        write = scope.get("method", "GET") not in ("GET", "HEAD", "OPTIONS")
        g = self.gate(org, write)
        if g.running + g.waiting >= g.limit + self.limits.org_queue:
            what = "requests that change something" if write else "reads"
            log.warning("org %s: %d %s at once: refused one (429)", org, g.running + g.waiting, what)
            await _answer(send, 429, (
                f"organization {org} has {g.running + g.waiting} {what} in progress or waiting, the most this server "
                f"takes at once ({g.limit} running + {self.limits.org_queue} waiting; --org-concurrency, "
                "--org-queue): retry when some have finished"), {"retry-after": "5"})
            return
        g.waiting += 1
        try:
            await g.semaphore.acquire()
        finally:
            g.waiting -= 1
        g.running += 1
        try:
            await self.app(scope, receive, send)
        finally:
            g.running -= 1
            g.semaphore.release()


class _Gate:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.running = 0
        self.waiting = 0
        self.semaphore = anyio.Semaphore(limit)


def widen_thread_pool(threads: int = THREADS) -> None:
    """More worker threads for the (synchronous) request handlers than anyio's default 40; call inside the
    event loop."""
    import anyio.to_thread

    limiter = anyio.to_thread.current_default_thread_limiter()
    limiter.total_tokens = max(limiter.total_tokens, threads)


# ---------------------------------------------------------------------------------------------- configuration
ENV_PREFIX = "PULUMI_DBOS_SERVE_"


def env_default(flag: str, default: int) -> int:
    """``PULUMI_DBOS_SERVE_<FLAG>`` as an integer, else ``default``."""
    var = ENV_PREFIX + flag.lstrip("-").replace("-", "_").upper()
    raw = os.environ.get(var)
    if raw is None or not raw.strip():
        return default
    try:
        return int(raw.strip())
    except ValueError:
        raise DbosError(f"{var} must be an integer, got {raw!r}") from None


def env_networks() -> list[str]:
    """``PULUMI_DBOS_SERVE_LINK_ALLOW``: networks separated by commas or spaces."""
    raw = os.environ.get(ENV_PREFIX + "LINK_ALLOW", "")
    return [part for part in raw.replace(",", " ").split() if part]


__all__ = ["MIB", "THREADS", "BodyLimit", "Limits", "OrgGate", "env_default", "env_networks", "link_allowed",
           "parse_network", "widen_thread_pool"]
