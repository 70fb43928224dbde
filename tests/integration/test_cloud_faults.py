"""The dbos-cloud engine against ``pulumi-dbos serve`` under faults (issue 19): a frozen serve costs one
bounded failure per process, not one per resource."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator

import pytest

from pulumi_dbos.engine import get_engine
from pulumi_dbos.engine.settings import EngineSettings
from pulumi_dbos.errors import DbosError
from tests.support.serve import Serve, running_serve

PW = "Cloud-faults-pw1"


@pytest.fixture
def serve() -> Iterator[Serve]:
    with running_serve() as s:
        yield s


def test_a_frozen_serve_costs_one_bounded_failure_per_process(serve: Serve, monkeypatch: pytest.MonkeyPatch) -> None:
    """`pulumi refresh` of 7 resources against a SIGSTOPped serve: the first call waits for the TLS handshake
    (the connect timeout, not retried), every later call of that process fails at once with that answer."""
    token = serve.token("acme", "alice")
    quick = EngineSettings.from_env().replace(cloud_connect_timeout=2.0)
    eng = get_engine("dbos-cloud", domain=serve.domain, token=token, ca_cert=str(serve.ca_cert))
    eng.provision("frozen_a", "frozen_user", PW)
    assert serve.proc is not None
    os.kill(serve.proc.pid, signal.SIGSTOP)
    try:
        fresh = get_engine("dbos-cloud", domain=serve.domain, token=token, ca_cert=str(serve.ca_cert),
                           settings=quick)  # a new
        # provider process: nothing cached; what refresh asks per resource
        started = time.monotonic()
        messages = []
        for i in range(7):
            with pytest.raises(DbosError) as exc:
                fresh.info(f"frozen_{i}") if i % 2 else fresh.apps.info(f"app_{i}")
            messages.append(exc.value.message)
        took = time.monotonic() - started
    finally:
        os.kill(serve.proc.pid, signal.SIGCONT)
    assert took < 2.0 * 2 + 3, f"7 reads took {took:.1f}s"  # one handshake timeout, not 7 x 4
    assert "no TLS handshake" in messages[0], messages[0]
    assert all("not asked" in m for m in messages[1:]), messages
    # serve answers again: a process that remembered the failure asks again after UNREACHABLE_MEMO
    fresh.client.unreachable_memo = 0.0
    assert fresh.info("frozen_a") is not None
