"""One module-scoped HA instance (3 members under Patroni over a 3-member etcd, each host a network namespace of
this machine) that the module's tests take turns hurting; and a writer that counts acknowledged commits."""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from pulumi_dbos.engine import LocalEngine
from pulumi_dbos.engine.ha import cluster
from pulumi_dbos.engine.ha.hosts import Fabric
from tests.conftest import _short_tmpdir, cleanup_data_dir

PW = "Ha-password-123"
USER = "app_user"
NAME = "hadb"


def _skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "HA tests run hosts as network namespaces: they need root"
    if shutil.which("etcd") is None:
        return "etcd is not installed (scripts/setup.sh installs Debian's etcd-server)"
    return None


@dataclass
class HaInstance:
    engine: LocalEngine
    name: str
    data_dir: Path

    @property
    def port(self) -> int:
        info = self.engine.info(self.name)
        assert info is not None
        return info.port

    @property
    def fabric(self) -> Fabric:
        return cluster.fabric(self.engine)

    def topology(self) -> cluster.Topology:
        return cluster.topology(self.engine, self.name)

    def multi_host_url(self) -> str:
        """libpq's multi-host form (measured beside the endpoint); SQLAlchemy, and so DBOS Transact 3.x, takes the
        same hosts as ``?host=h1:p&host=h2:p&target_session_attrs=read-write``."""
        ms = cluster.members(self.engine, self.name)
        hosts, ports = ",".join(m.host.address for m in ms), ",".join(str(m.port) for m in ms)
        return (f"postgresql://{USER}:{PW}@/postgres?host={hosts}&port={ports}&target_session_attrs=read-write"
                "&connect_timeout=2")


@pytest.fixture(scope="module")
def ha() -> Iterator[HaInstance]:
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    root = _short_tmpdir("ph")
    data_dir = root / "d"
    eng = LocalEngine(data_dir, pool=0)
    try:
        eng.provision(NAME, USER, PW, owner="tests/ha")
        eng.set_high_availability(NAME, True)
        yield HaInstance(eng, NAME, data_dir)
    finally:
        with contextlib.suppress(Exception):
            for info in eng.list():
                eng.destroy(info.name)
        Fabric(data_dir).teardown()  # whatever a failure left: namespaces, bridge, blackhole route
        cleanup_data_dir(data_dir)
        shutil.rmtree(root, ignore_errors=True)


@dataclass
class Writer:
    """Commits one row at a time (autocommit) through ``dsn``, reconnecting on any error; ``acked``: the values
    whose COMMIT returned. ``gaps``: the longest stretch without an acknowledged commit is the write gap."""

    dsn: str
    table: str
    acked: list[int] = field(default_factory=list)
    stamps: list[float] = field(default_factory=list)
    errors: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Writer:
        with psycopg.connect(self.dsn, autocommit=True) as c:
            c.execute(sql.SQL("CREATE TABLE IF NOT EXISTS {} (x int PRIMARY KEY)").format(sql.Identifier(self.table)))
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        i = 0
        conn: psycopg.Connection | None = None
        while not self._stop.is_set():
            try:
                if conn is None:
                    conn = psycopg.connect(self.dsn, autocommit=True, connect_timeout=3)
                i += 1
                conn.execute(sql.SQL("INSERT INTO {} VALUES (%s)").format(sql.Identifier(self.table)), (i,))
                self.acked.append(i)
                self.stamps.append(time.monotonic())
                time.sleep(0.005)
            except psycopg.Error:
                self.errors += 1
                with contextlib.suppress(Exception):
                    if conn is not None:
                        conn.close()
                conn = None
                time.sleep(0.05)
        if conn is not None:
            conn.close()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)

    def gap_after(self, t: float) -> float:
        """Seconds from ``t`` to the first acknowledged commit after the longest pause following it."""
        later = [s for s in self.stamps if s >= t]
        before = [s for s in self.stamps if s < t]
        points = ([before[-1]] if before else [t]) + later
        return max((b - a for a, b in zip(points, points[1:], strict=False)), default=float("inf"))

    def wait_commits(self, n: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        start = len(self.acked)
        while len(self.acked) < start + n:
            if time.monotonic() > deadline:
                raise AssertionError(f"the writer made {len(self.acked) - start} of {n} commits in {timeout}s")
            time.sleep(0.05)


def endpoint_dsn(port: int) -> str:
    return f"postgresql://{USER}:{PW}@127.0.0.1:{port}/postgres?connect_timeout=3"


def present(dsn: str, table: str) -> set[int]:
    with psycopg.connect(dsn, autocommit=True) as c:
        return {r[0] for r in c.execute(sql.SQL("SELECT x FROM {}").format(sql.Identifier(table)))}
