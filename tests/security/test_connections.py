"""Issue 31, item 6: connections that send nothing do not lock the others out.

Without a token, one client (127.0.0.1) opens ``--max-connections`` TLS connections to serve and sends no
request. Before: every one of them counted against ``--max-connections`` and none was ever timed out, so
every other client's request got 503 for as long as they were held. Now: one address holds at most
``--max-client-connections`` (a quarter of ``--max-connections``: beyond, 429 and closed), a connection that
sends no complete request head within ``--request-timeout`` is closed (a byte dripped every second does not
extend it), and another client (127.0.0.2, an organization with a token) is answered throughout.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.support.serve import Serve, running_serve

MAX_CONNECTIONS = 40
PER_CLIENT = MAX_CONNECTIONS // 4
REQUEST_TIMEOUT = 3


@pytest.fixture(scope="module")
def serve() -> Iterator[Serve]:
    with running_serve(extra_args=("--max-connections", str(MAX_CONNECTIONS),
                                   "--request-timeout", str(REQUEST_TIMEOUT))) as s:
        yield s


def tls_connect(serve: Serve, source: str = "127.0.0.1") -> ssl.SSLSocket:
    ctx = ssl.create_default_context(cafile=str(serve.ca_cert))
    raw = socket.create_connection(("127.0.0.1", serve.port), timeout=10, source_address=(source, 0))
    return ctx.wrap_socket(raw, server_hostname="127.0.0.1")


@contextlib.contextmanager
def idle_connections(serve: Serve, n: int) -> Iterator[list[ssl.SSLSocket]]:
    socks: list[ssl.SSLSocket] = []
    try:
        for _ in range(n):
            with contextlib.suppress(OSError):
                socks.append(tls_connect(serve))
        yield socks
    finally:
        for s in socks:
            with contextlib.suppress(OSError):
                s.close()


def closed_by_server(s: ssl.SSLSocket) -> bool:
    """Whether the server closed ``s`` (what it sent first, a 429, is read and dropped)."""
    s.settimeout(0.2)
    try:
        while data := s.recv(4096):
            if not data:
                break
        return True
    except (TimeoutError, ssl.SSLWantReadError):
        return False
    except OSError:
        return True


def read_response(s: ssl.SSLSocket) -> bytes:
    """One whole HTTP response (head, and a body of its content-length)."""
    s.settimeout(10)
    buf = b""
    while b"\r\n\r\n" not in buf:
        buf += s.recv(4096)
    head, _, body = buf.partition(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length"))
    while len(body) < length:
        body += s.recv(4096)
    return buf


def other_client(serve: Serve) -> httpx.Client:
    """Another organization's client, from another address (127.0.0.2: loopback, as a second host would be)."""
    transport = httpx.HTTPTransport(local_address="127.0.0.2",
                                    verify=ssl.create_default_context(cafile=str(serve.ca_cert)))
    return httpx.Client(base_url=serve.url, transport=transport, timeout=10,
                        headers={"Authorization": f"Bearer {serve.token('bravo', 'bob')}"})


def test_idle_connections_of_one_client_do_not_turn_others_away(serve: Serve) -> None:
    with idle_connections(serve, MAX_CONNECTIONS) as socks, other_client(serve) as api:
        assert len(socks) >= PER_CLIENT
        time.sleep(0.5)
        took = []
        for _ in range(20):
            t0 = time.monotonic()
            r = api.get("/v1alpha1/bravo/databases")
            took.append(time.monotonic() - t0)
            assert r.status_code == 200, (r.status_code, r.text[:300])
        assert max(took) < 1.0, took
        held = [s for s in socks if not closed_by_server(s)]
        assert len(held) <= PER_CLIENT, f"one address holds {len(held)} connections (cap {PER_CLIENT})"
    # a connection over the cap is told why
    with idle_connections(serve, PER_CLIENT) as socks:
        extra = tls_connect(serve)
        with extra:
            extra.settimeout(5)
            head = extra.recv(4096)
        assert head.startswith(b"HTTP/1.1 429") and b"--max-client-connections" in head, head[:300]
        assert len(socks) == PER_CLIENT


def test_connections_without_a_request_are_timed_out(serve: Serve) -> None:
    with idle_connections(serve, 3) as socks:
        drip = socks[0]
        drip.sendall(b"GET /v1alpha1/user/profile HTTP/1.1\r\n")
        t0 = time.monotonic()
        deadline = t0 + REQUEST_TIMEOUT + 5
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                drip.sendall(b"X-Slow: 1\r\n")  # a header a second: never a complete head
            if all(closed_by_server(s) for s in socks):
                break
            time.sleep(0.8)
        open_ones = [i for i, s in enumerate(socks) if not closed_by_server(s)]
        assert not open_ones, f"connections {open_ones} are still open {time.monotonic() - t0:.0f}s later"
    # a connection that sends its request is answered, and may send the next one
    with tls_connect(serve) as s:
        for _ in range(2):
            s.sendall(b"GET /v1alpha1/user/profile HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert read_response(s).startswith(b"HTTP/1.1 401")
