"""Issue 18, item 7: one organization cannot stall the API for the others. Alpha fires many concurrent links to
a port that accepts and never answers (each holds its request for the connection timeout); meanwhile bravo's
``GET databases`` all succeed, and each completes while every one of alpha's requests is still hanging: they
do not wait for a worker alpha holds. Alpha's requests beyond its share wait their turn; beyond its queue
they are answered 429 with a message, at once."""

from __future__ import annotations

import concurrent.futures
import time

import httpx

from tests.security._support import tcp_server
from tests.security.conftest import PW, Tenants, client, name

#: more than anyio's default 40 worker threads, and more than the default share + queue of one org (8 + 64)
SLOW = 80
READS = 10


def test_slow_requests_of_one_org_do_not_stall_another(tenants: Tenants) -> None:
    token = tenants.serve.token("alpha", "mallory")
    pool = concurrent.futures.ThreadPoolExecutor(SLOW)
    with tcp_server(answer=False) as (port, conns):
        def slow_link(i: int) -> httpx.Response:
            with client(tenants.serve, token) as api:
                return api.post("/v1alpha1/alpha/databases/byod", json={
                    "Name": name(f"hang{i}"), "HostName": "127.0.0.1", "Port": port, "Password": PW})

        futures = [pool.submit(slow_link, i) for i in range(SLOW)]
        deadline = time.monotonic() + 30
        while len(conns) < 4 and time.monotonic() < deadline:  # alpha's links reached the silent port
            time.sleep(0.05)
        assert conns, "no link reached the silent port"
        for _ in range(READS):
            r = tenants.bravo.get("/v1alpha1/bravo/databases")
            assert r.status_code == 200, r.text
            assert [d["PostgresInstanceName"] for d in r.json()] == [tenants.bravo_db["PostgresInstanceName"]]
            finished = [f.result().status_code for f in futures if f.done() and f.result().status_code != 429]
            assert not finished, f"bravo's read waited for alpha's slow requests to finish ({finished})"
        # beyond alpha's share and queue: an immediate 429 that says why
        refused = [f.result() for f in futures if f.done()]
        assert refused and all(r.status_code == 429 for r in refused), [r.status_code for r in refused]
        assert "--org-concurrency" in refused[0].json()["message"] and refused[0].headers.get("retry-after")
    # the silent port is closed: the links still waiting fail at once
    results = [f.result(timeout=120) for f in futures]
    pool.shutdown()
    assert {r.status_code for r in results} <= {400, 429}, {r.status_code for r in results}
    assert tenants.alpha.get("/v1alpha1/alpha/databases").status_code == 200
