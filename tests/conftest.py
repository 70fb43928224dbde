"""Shared fixtures: throwaway engine data dirs that are always cleaned up."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pulumi_dbos.engine import LocalEngine, proc
from tests.support import parallel

ROOT = Path(__file__).resolve().parent.parent


def _short_tmpdir(prefix: str) -> Path:
    # short (Unix socket paths are limited to 107 bytes) and reachable by the cluster user
    d = Path(tempfile.mkdtemp(prefix=prefix))  # $TMPDIR: scripts/test.sh puts it on a tmpfs
    os.chmod(d, 0o755)
    return d


def kill_servers_under(path: Path) -> None:
    """Kill every process working in or on ``path`` (servers, apps, proxies: cleanup after failures)."""
    proc.kill_under(path)


def cleanup_data_dir(path: Path) -> None:
    with contextlib.suppress(Exception):
        if not (path / "catalog.db").exists():
            raise FileNotFoundError(path)  # nothing of an engine's here (never create a catalog to clean up)
        eng = LocalEngine(path)
        for app in eng.apps.all():
            with contextlib.suppress(Exception):
                eng.apps.delete(app.name)
        for info in eng.list():
            with contextlib.suppress(Exception):
                eng.destroy(info.name)
    kill_servers_under(path)
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def tmp_root() -> Iterator[Path]:
    d = _short_tmpdir("pd")
    try:
        yield d
    finally:
        for sub in sorted(d.iterdir()) if d.exists() else []:
            if (sub / "catalog.db").exists():  # the engines' data dirs made under it (data_dir is root/d)
                cleanup_data_dir(sub)
        cleanup_data_dir(d)


@pytest.fixture
def data_dir(tmp_root: Path) -> Path:
    return tmp_root / "d"


@pytest.fixture
def engine(data_dir: Path) -> LocalEngine:
    return LocalEngine(data_dir)


@pytest.hookimpl(tryfirst=True)  # the order it leaves is the one the workers report
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        parts = Path(str(item.fspath)).parts
        for marker in ("unit", "integration", "e2e", "reliability", "contract", "conformance", "security",
                       "durability", "ha"):
            if marker in parts:
                item.add_marker(getattr(pytest.mark, marker))
    if os.environ.get("PYTEST_XDIST_WORKER") and os.environ.get(parallel.UNITS_ENV):  # a worker of scripts/test.sh
        items[:] = parallel.longest_first(items)
        parallel.publish(items)


def pytest_configure(config: pytest.Config) -> None:
    """The controller of a ``--dist loadgroup`` run: a file for the workers to say each test's unit in.
    A worker: a slice of the engine's port range of its own (``parallel.worker_port_range``)."""
    worker = getattr(config, "workerinput", {}).get("workerid")
    if worker and "PULUMI_DBOS_PORT_RANGE" not in os.environ:
        count = int(getattr(config, "workerinput", {}).get("workercount", 1))
        os.environ["PULUMI_DBOS_PORT_RANGE"] = parallel.worker_port_range(worker, count)
    if config.getoption("dist", "no") == "loadgroup" and not os.environ.get("PYTEST_XDIST_WORKER"):
        fd, path = tempfile.mkstemp(prefix="pulumi-dbos-units-", suffix=".json")
        os.close(fd)
        os.environ[parallel.UNITS_ENV] = path
        config.add_cleanup(lambda: Path(path).unlink(missing_ok=True))


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    return parallel.make_scheduler(config, log) if os.environ.get(parallel.UNITS_ENV) else None
