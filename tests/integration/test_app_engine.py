"""The local engine's apps (``LocalEngine.deploy_app``) with the sample app examples/greet: regression
tests for two engine-level causes of failures first seen through pulumi (tests/e2e/test_app.py).

1. Any engine use by a new process (every pulumi preview/refresh/up starts a provider that opens
   the catalog) must leave a running app reachable: its proxy and process run as the apps' OS user
   and read files under the data dir.
2. A deploy is healthy only when *its* process serves: another process listening on the backend
   port picked for the new version (another data dir's app, anything) is not the app.
3. A failed deploy leaves no machine-wide port claim behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pulumi_dbos.appsource import pack
from pulumi_dbos.engine import LocalEngine
from pulumi_dbos.engine.contract import AppDatabaseAccess, AppDeploy
from pulumi_dbos.engine.local import ports
from pulumi_dbos.errors import DbosError
from tests.conftest import ROOT

PW = "Greet-engine-pw1"


def get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as r:  # noqa: S310 - http://127.0.0.1 only
        return json.loads(r.read())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def greet(tmp_root: Path) -> tuple[str, bytes]:
    src = tmp_root / "greet"
    shutil.copytree(ROOT / "examples" / "greet", src, ignore=shutil.ignore_patterns("__pycache__"))
    return pack(src)


@pytest.fixture
def access(engine: LocalEngine) -> AppDatabaseAccess:
    info = engine.provision("greet_a", "greet_user", PW)
    return AppDatabaseAccess("greet_a", info.hostname, info.port, "greet_user", PW)


def test_engine_use_by_another_process_keeps_a_running_app_reachable(
        engine: LocalEngine, data_dir: Path, access: AppDatabaseAccess, greet: tuple[str, bytes]) -> None:
    version, archive = greet
    info = engine.apps.deploy(AppDeploy("greet", version, archive, access, "greet", {}))
    assert get(info.app_url + "/")["version"] == version
    # what the next pulumi command's provider process does first: a new engine opening the catalog
    again = LocalEngine(data_dir)
    assert [i.name for i in again.list()] == ["greet_a"]
    assert again.apps.info("greet") is not None
    try:
        assert get(info.app_url + "/")["version"] == version
    finally:
        print(f"data dir mode after: {oct(os.stat(data_dir).st_mode & 0o777)}")


class _Intruder:
    """Another process's server on a port: answers every request with its own JSON."""

    def __init__(self, port: int) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(16)
        self.stop = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        self.sock.settimeout(0.2)
        while not self.stop:
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            with conn, contextlib.suppress(OSError):
                conn.settimeout(2)
                conn.recv(65536)
                body = b'{"app": "intruder"}'
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                             + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body)

    def close(self) -> None:
        self.stop = True
        self.thread.join(5)
        self.sock.close()


@pytest.fixture
def backend_port(engine: LocalEngine, monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    port = free_port()
    monkeypatch.setenv("PULUMI_DBOS_APP_BACKEND_PORTS", f"{port}-{port}")
    engine.settings = engine.settings.replace(app_start_timeout=45.0)  # the app never listens: do not wait 120 s
    yield port


def test_a_deploy_is_healthy_only_when_its_own_process_serves(
        engine: LocalEngine, data_dir: Path, access: AppDatabaseAccess, greet: tuple[str, bytes],
        backend_port: int) -> None:
    version, archive = greet
    run = data_dir / "apps" / "greet" / "ctl"
    intruder: list[_Intruder] = []

    def take_the_port() -> None:
        # the engine writes ctl/pgpass.<port> right after picking the port, before it starts the app
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not (run / f"pgpass.{backend_port}").exists():
            time.sleep(0.01)
        intruder.append(_Intruder(backend_port))

    t = threading.Thread(target=take_the_port, daemon=True)
    t.start()
    try:
        try:
            info = engine.apps.deploy(AppDeploy("greet", version, archive, access, "greet", {}))
        except DbosError:
            return  # refused: the version never served (the right outcome)
        t.join(5)
        assert intruder, "the port was not taken during the deploy (test set-up)"
        # accepted: then the app's URL must reach the app itself
        assert get(info.app_url + "/") == {"app": "greet", "version": version, "greeting": "Hello"}
    finally:
        t.join(5)
        for i in intruder:
            i.close()


def _claims_of(data_dir: Path) -> dict[int, str]:
    """The machine-wide port claims of ``data_dir``'s apps (port -> claimant)."""
    d = Path(os.environ.get("PULUMI_DBOS_PORTS_DIR", "/var/tmp/pulumi-dbos-ports"))
    out = {}
    for f in d.glob("*"):
        with contextlib.suppress(OSError, ValueError):
            lines = f.read_text().splitlines()
            if lines and lines[0] in (str(data_dir), str(data_dir.resolve())) and lines[1:2] != ["greet_a"]:
                out[int(f.name)] = lines[1] if len(lines) > 1 else ""
    return out


def test_a_failed_migration_leaves_no_port_claim_behind(
        engine: LocalEngine, data_dir: Path, access: AppDatabaseAccess, tmp_root: Path) -> None:
    """A deploy whose `dbos migrate` fails claims a backend port for the new process it never starts: the
    claim must go with the failure (and nothing naming the data dir may survive the app's deletion)."""
    src = tmp_root / "greet"
    shutil.copytree(ROOT / "examples" / "greet", src, ignore=shutil.ignore_patterns("__pycache__"))
    v1, z1 = pack(src)
    info = engine.apps.deploy(AppDeploy("greet", v1, z1, access, "greet", {}))
    serving = _claims_of(data_dir)
    assert sorted(serving.values()) == ["app:greet", "appb:greet"], serving
    (src / "migrations" / "versions" / "0002_broken.py").write_text(
        'from alembic import op\n\nrevision = "0002"\ndown_revision = "0001"\n\n\n'
        'def upgrade() -> None:\n    op.execute("SELECT broken")\n')
    v2, z2 = pack(src)
    try:
        with pytest.raises(DbosError, match="dbos migrate"):
            engine.apps.deploy(AppDeploy("greet", v2, z2, access, "greet", {}))
        assert get(info.app_url + "/")["version"] == v1
        assert _claims_of(data_dir) == serving  # only the serving process's ports stay claimed
        engine.apps.delete("greet")
        assert _claims_of(data_dir) == {}
    finally:  # no claim file of this test's survives it, whatever the engine left
        engine.apps.delete("greet")
        for port in _claims_of(data_dir):
            (Path(os.environ.get("PULUMI_DBOS_PORTS_DIR", "/var/tmp/pulumi-dbos-ports")) / str(port)).unlink(
                missing_ok=True)


def test_the_apps_environment_is_built_with_its_bytecode(
        engine: LocalEngine, data_dir: Path, access: AppDatabaseAccess, greet: tuple[str, bytes]) -> None:
    """The environment is read-only to the app: built without bytecode (uv's default, unlike pip), every
    start of the app, its ``dbos migrate`` and its alembic compiled DBOS, SQLAlchemy & co. from source
    again, 1.5-2 s of CPU each (``runtime.COMPILE``)."""
    version, archive = greet
    info = engine.apps.deploy(AppDeploy("greet", version, archive, access, "greet", {}))
    assert get(info.app_url + "/")["version"] == version
    envs = [e for d in data_dir.rglob("_envs") for e in d.iterdir() if e.is_dir() and not e.name.startswith("_")]
    assert len(envs) == 1, envs
    site = next(envs[0].glob("lib/python3*/site-packages"))
    for package in ("dbos", "sqlalchemy", "alembic", "fastapi"):
        assert list((site / package / "__pycache__").glob("__init__.*.pyc")), f"{package} has no bytecode"


def test_a_backend_port_taken_before_the_app_binds_it_is_retried_on_another(
        engine: LocalEngine, data_dir: Path, access: AppDatabaseAccess, greet: tuple[str, bytes],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 29: the port the engine chose for the app's process is taken by another process between the choice
    and the app's bind (the app exits with 'address already in use'): the deploy goes on on another port."""
    first = free_port()
    second = free_port()
    while second == first:
        second = free_port()
    lo, hi = min(first, second), max(first, second)
    monkeypatch.setenv("PULUMI_DBOS_APP_BACKEND_PORTS", f"{lo}-{hi}")
    engine.settings = engine.settings.replace(app_start_timeout=45.0)
    real_free = ports.port_free
    monkeypatch.setattr(ports, "port_free", lambda p: p in (lo, hi) or real_free(p))  # only these two
    version, archive = greet
    run = data_dir / "apps" / "greet" / "ctl"
    intruder: list[_Intruder] = []

    def take_the_port() -> None:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not (run / f"pgpass.{lo}").exists():
            time.sleep(0.005)
        intruder.append(_Intruder(lo))

    t = threading.Thread(target=take_the_port, daemon=True)
    t.start()
    try:
        info = engine.apps.deploy(AppDeploy("greet", version, archive, access, "greet", {}))
        t.join(5)
        assert intruder, "the port was not taken during the deploy (test set-up)"
        assert get(info.app_url + "/") == {"app": "greet", "version": version, "greeting": "Hello"}
        assert engine.apps.rows.get("greet").backend_port not in (None, lo)
    finally:
        t.join(5)
        for i in intruder:
            i.close()
