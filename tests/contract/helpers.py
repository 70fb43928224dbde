"""What the contract tests share: names that clean themselves up, and checks through real connections.

Everything here speaks only the :class:`~pulumi_dbos.engine.contract.Engine` protocol and the
:class:`~pulumi_dbos.engine.contract.InstanceInfo` fields (``hostname``, ``port``, ``username``),
so the same helpers serve every engine.
"""

from __future__ import annotations

import contextlib
import itertools
import secrets
import socket
import time
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from typing import Any

import psycopg

from pulumi_dbos.engine.contract import Engine, InstanceInfo, Problem

USER = "app_user"
PW = "Contract-pw-1"
DBNAME = "postgres"
OWNER_A = "contract/stack-a/instance"
OWNER_B = "contract/stack-b/instance"

# Names are 3-16 characters of [a-z0-9_] starting with a letter (DBOS Cloud's rule); a per-run token
# keeps them apart on an engine that outlives one test run.
_RUN = secrets.token_hex(1)
_counter = itertools.count(1)

Conn = psycopg.Connection[tuple[Any, ...]]


def connect(info: InstanceInfo, password: str, username: str | None = None) -> Conn:
    """A connection as ``username`` (default: the instance's user) to ``info.hostname:info.port``."""
    return psycopg.connect(host=info.hostname, port=info.port, user=username or info.username, password=password,
                           dbname=DBNAME, connect_timeout=5, autocommit=True)


def authenticates(info: InstanceInfo, password: str, username: str | None = None) -> bool:
    try:
        with connect(info, password, username) as conn:
            conn.execute("SELECT 1")
    except psycopg.OperationalError:
        return False
    return True


def rows(info: InstanceInfo, password: str, table: str = "t") -> list[int]:
    with connect(info, password) as conn:
        return [r[0] for r in conn.execute(f"SELECT x FROM {table} ORDER BY x")]  # noqa: S608 - fixed names


def server_now(conn: Conn) -> datetime:
    row = conn.execute("SELECT clock_timestamp()").fetchone()
    assert row is not None
    value = row[0]
    assert isinstance(value, datetime)
    return value


def rfc3339(dt: datetime) -> str:
    return dt.astimezone(timezone.utc).isoformat(timespec="microseconds")


def free_port(engine: Engine) -> int:
    """A TCP port nothing listens on now and no instance of ``engine`` uses."""
    used = {i.port for i in engine.list()}
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in used:
            return port
    raise AssertionError("no free TCP port found")


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout:.0f}s")
        time.sleep(0.05)


def fields(problems: Iterable[Problem]) -> set[str]:
    """The inputs that ``problems`` are about (an engine may say more than one thing about one input)."""
    return {p.field for p in problems}


def names_of(infos: Iterable[InstanceInfo]) -> set[str]:
    return {i.name for i in infos}


class Instances:
    """Hands out fresh instance names and destroys whatever was made under them (even on failure)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._names: list[str] = []

    def name(self, prefix: str) -> str:
        name = f"{prefix[:7]}_{_RUN}{next(_counter)}"
        self._names.append(name)
        return name

    def provision(self, prefix: str = "inst", *, username: str = USER, password: str = PW,
                  port: int | None = None, retention_hours: int = 24, owner: str | None = None) -> InstanceInfo:
        return self.engine.provision(self.name(prefix), username, password, port=port,
                                     retention_hours=retention_hours, owner=owner)

    def cleanup(self) -> None:
        # newest first: links and restores before what they point at
        for name in reversed(self._names):
            with contextlib.suppress(Exception):
                self.engine.destroy(name)
        self._names.clear()
