"""Fairness benchmark of ``pulumi-dbos serve``: one organization's slow requests against another's reads.

A serve with two organizations: ``bravo`` has one instance; ``alpha`` sends BENCH_SLOW (default 30)
concurrent links to a 127.0.0.1 port that accepts connections and never answers (each link holds its
request until the connection timeout). Meanwhile bravo's ``GET /v1alpha1/bravo/databases`` is timed
BENCH_READS times (default 50), one after another; the same GETs are timed first with no load. Prints
p50/p99 of both and ends with ``ratio: X.XX`` (p99 under load / p99 without). Target: p99 under load < 1 s.

The idle case (issue 31): one client without a token (127.0.0.1) opens serve's ``--max-connections``
(BENCH_MAX_CONNECTIONS, default 200) TLS connections and sends nothing on them, then bravo's GETs (from
127.0.0.2, another client address) are timed again. Target: their p99 < 1 s (before the fix they were
answered 503 while the connections were held).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import socket
import ssl
import statistics
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # tests.support.serve, tests.security._support
from tests.security._support import tcp_server  # noqa: E402
from tests.support.serve import Serve, running_serve  # noqa: E402

SLOW = int(os.environ.get("BENCH_SLOW", "30"))
READS = int(os.environ.get("BENCH_READS", "50"))
MAX_CONNECTIONS = int(os.environ.get("BENCH_MAX_CONNECTIONS", "200"))
PW = "Bench-passw0rd"


def client(serve: Serve, token: str, source: str = "127.0.0.1") -> httpx.Client:
    transport = httpx.HTTPTransport(local_address=source, verify=ssl.create_default_context(cafile=str(serve.ca_cert)))
    return httpx.Client(base_url=serve.url, transport=transport, headers={"Authorization": f"Bearer {token}"},
                        timeout=300)


def idle_connections(serve: Serve, n: int) -> list[socket.socket]:
    """``n`` TLS connections from 127.0.0.1 that send nothing (those serve refuses or closes included)."""
    ctx = ssl.create_default_context(cafile=str(serve.ca_cert))
    socks: list[socket.socket] = []
    for _ in range(n):
        with contextlib.suppress(OSError):
            raw = socket.create_connection(("127.0.0.1", serve.port), timeout=10)
            socks.append(ctx.wrap_socket(raw, server_hostname="127.0.0.1"))
    return socks


def percentile(xs: list[float], p: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]


def timed_reads(api: httpx.Client) -> list[float]:
    out = []
    for _ in range(READS):
        t0 = time.perf_counter()
        r = api.get("/v1alpha1/bravo/databases")
        out.append(time.perf_counter() - t0)
        if r.status_code != 200:
            raise SystemExit(f"bravo's GET databases answered {r.status_code}: {r.text}")
    return out


def line(what: str, xs: list[float]) -> str:
    return (f"{what}: p50 {percentile(xs, 50) * 1000:.1f} ms, p99 {percentile(xs, 99) * 1000:.1f} ms "
            f"(n={len(xs)}, mean {statistics.mean(xs) * 1000:.1f} ms)")


def main() -> None:
    with running_serve(extra_args=("--max-connections", str(MAX_CONNECTIONS))) as serve:
        bravo = client(serve, serve.token("bravo", "bob"), source="127.0.0.2")
        alpha_token = serve.token("alpha", "mallory")
        r = bravo.post("/v1alpha1/bravo/databases/userdb", json={"Name": "bench_b", "AdminName": "bench_user",
                                                                  "AdminPassword": PW})
        if r.status_code >= 300:
            raise SystemExit(f"provision failed: {r.text}")
        timed_reads(bravo)  # warm-up, not counted
        idle = timed_reads(bravo)
        print(line("bravo GET databases, no load", idle))
        pool = concurrent.futures.ThreadPoolExecutor(SLOW)
        with tcp_server(answer=False) as (port, conns):
            def slow(i: int) -> int:
                with client(serve, alpha_token) as alpha:
                    return alpha.post("/v1alpha1/alpha/databases/byod", json={
                        "Name": f"hang_{i}", "HostName": "127.0.0.1", "Port": port, "Password": PW}).status_code

            futures = [pool.submit(slow, i) for i in range(SLOW)]
            deadline = time.monotonic() + 30
            while not conns and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(0.5)  # let every one of them arrive
            loaded = timed_reads(bravo)
            pending = sum(not f.done() for f in futures)
            print(line(f"bravo GET databases, {SLOW} slow requests of alpha in flight", loaded))
            done = [f.result() for f in futures if f.done()]
            print(f"alpha's slow requests: {SLOW} sent, {pending} still hanging when the reads ended, "
                  f"{sum(c == 429 for c in done)} answered 429")
        codes = [f.result() for f in futures]
        pool.shutdown()
        print("alpha's answers once the silent port closed: "
              + ", ".join(f"{c}: {codes.count(c)}" for c in sorted(set(codes))))
        socks = idle_connections(serve, MAX_CONNECTIONS)
        try:
            time.sleep(0.5)
            held = timed_reads(bravo)
        finally:
            for s in socks:
                with contextlib.suppress(OSError):
                    s.close()
        print(line(f"bravo GET databases, {MAX_CONNECTIONS} idle connections (--max-connections) held by one "
                   "client", held))
        idle_p99 = percentile(held, 99)
        print(f"p99 with idle connections held: {idle_p99 * 1000:.1f} ms (target < 1000 ms): "
              f"{'ok' if idle_p99 < 1 else 'MISSED'}")
        bravo.delete("/v1alpha1/bravo/databases/userdb/bench_b")
        bravo.close()
        p99 = percentile(loaded, 99)
        print(f"p99 under load: {p99 * 1000:.1f} ms (target < 1000 ms): {'ok' if p99 < 1 else 'MISSED'}")
        print(f"ratio: {p99 / percentile(idle, 99):.2f}")


if __name__ == "__main__":
    main()
