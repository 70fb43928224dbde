"""Helpers shared by the benchmarks (raw tools and throwaway dirs)."""

from __future__ import annotations

import os
import shutil
import socket
import statistics
import tempfile
import time
from pathlib import Path

from pulumi_dbos.engine import LocalEngine, default_run_as, pgbin, proc


def tmpdir(prefix: str) -> Path:
    d = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    os.chmod(d, 0o755)
    return d


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_as() -> proc.RunAs:
    return proc.RunAs(default_run_as() if os.geteuid() == 0 else None)


def chown(path: Path) -> None:
    ra = run_as()
    if os.geteuid() == 0 and ra.user:
        os.chown(path, ra.uid, ra.gid)


def pg(tool: str) -> str:
    return pgbin.tool(tool)


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def cleanup_engine(data_dir: Path) -> None:
    eng = LocalEngine(data_dir)
    for i in eng.list():
        eng.destroy(i.name)
    shutil.rmtree(data_dir, ignore_errors=True)


def pool_settled(eng: LocalEngine) -> None:
    """Until the engine's warm pool is full again: its refill copies, made in the background after a
    provision or restore took an entry, would otherwise slow whichever timed step runs next."""
    eng.pool().spawn_refill()  # (a destroy of the data dir's last instance ends a refill at work)
    deadline = time.monotonic() + 120
    while eng.pool().wanted() and time.monotonic() < deadline:
        time.sleep(0.1)
