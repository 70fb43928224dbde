"""The etcd cluster Patroni elects leaders in: one member per host of the data dir, shared by every HA instance.

Debian's etcd 3.4 with ``--pre-vote`` (a member cut off and back does not force a new election: without it a
healed partition could depose a healthy leader, and Patroni's lock with it). Members listen on their host's
address (peers on 2380, clients on 2379: each host is its own network namespace or machine, so fixed ports
never meet) and keep their data under ``<data_dir>/ha/etcd/<host>/``: a host that comes back rejoins with it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ...errors import EngineError
from .. import proc
from ..local.paths import Layout
from ..waits import wait_until
from . import procs
from .hosts import Host

log = logging.getLogger("pulumi_dbos.engine")

CLIENT_PORT = 2379
PEER_PORT = 2380
START_TIMEOUT = 60.0


class Etcd:
    def __init__(self, layout: Layout, hosts: list[Host], token: str) -> None:
        self.layout = layout
        self.hosts = hosts
        self.token = token
        self.root = layout.data_dir / "ha" / "etcd"

    def dir(self, h: Host) -> Path:
        return self.root / h.name

    @property
    def endpoints(self) -> list[str]:
        return [f"{h.address}:{CLIENT_PORT}" for h in self.hosts]

    def _argv(self, h: Host) -> list[str]:
        binary = shutil.which("etcd") or "/usr/bin/etcd"
        cluster = ",".join(f"{o.name}=http://{o.address}:{PEER_PORT}" for o in self.hosts)
        return [binary, "--name", h.name, "--data-dir", str(self.dir(h) / "data"),
                "--listen-client-urls", f"http://{h.address}:{CLIENT_PORT},http://127.0.0.1:{CLIENT_PORT}",
                "--advertise-client-urls", f"http://{h.address}:{CLIENT_PORT}",
                "--listen-peer-urls", f"http://{h.address}:{PEER_PORT}",
                "--initial-advertise-peer-urls", f"http://{h.address}:{PEER_PORT}",
                "--initial-cluster", cluster, "--initial-cluster-state", "new",
                "--initial-cluster-token", self.token, "--pre-vote",
                "--heartbeat-interval", "100", "--election-timeout", "1000", "--log-level", "warn"]

    def running(self, h: Host) -> bool:
        return procs.running(self.dir(h) / "pid", "etcd", h)

    def start(self, h: Host) -> None:
        """Start ``h``'s member unless it runs (its data, if any, makes it rejoin)."""
        if self.running(h):
            return
        self.layout.mkdir(self.dir(h))
        procs.start(h, self._argv(h), self.layout.run_as, self.dir(h))

    def ensure(self, hosts: list[Host] | None = None) -> None:
        """Every member of ``hosts`` (default all) started, then a healthy cluster (a quorum answering)."""
        _each(self.start, hosts or self.hosts)
        wait_until(self.healthy, START_TIMEOUT, "the etcd cluster did not become healthy",
                   hint=f"see {self.root}/<host>/log", interval=0.2)

    def healthy(self) -> bool:
        for ep in self.endpoints:
            with contextlib.suppress(OSError, ValueError):
                with urllib.request.urlopen(f"http://{ep}/health", timeout=1) as r:  # noqa: S310 - our own member
                    if json.loads(r.read()).get("health") == "true":
                        return True
        return False

    def stop(self, h: Host) -> None:
        procs.stop(self.dir(h) / "pid", host=h, marker="etcd")

    def remove(self) -> None:
        """Every member stopped and its data removed (the data dir's last HA instance is gone)."""
        _each(self.stop, self.hosts)
        shutil.rmtree(self.root, ignore_errors=True)


def _each(fn: Callable[[Host], None], hosts: list[Host]) -> None:
    """``fn`` on every host at once (on real hosts each is an SSH round trip, and a member's graceful stop takes
    seconds); the first error is raised once all are done."""
    with ThreadPoolExecutor(max(1, len(hosts))) as pool:
        for f in [pool.submit(fn, h) for h in hosts]:
            f.result()


def require() -> str:
    binary = shutil.which("etcd")
    if binary is None:
        raise EngineError("etcd is not installed (high availability's consensus store)",
                          hint="`apt-get install etcd-server` (scripts/setup.sh does it)")
    with contextlib.suppress(EngineError):
        proc.run([binary, "--version"], timeout=10)
    return binary
