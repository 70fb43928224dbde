"""``proc.spawn``/``proc.reap`` from many threads at once, as a provider runs them under ``pulumi up
--parallel`` (each provision refills the pool through a spawned worker, reaping first: two threads
reaping the same exited child once failed a provision with ``list.remove(x): x not in list``)."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pulumi_dbos.engine import proc


@pytest.fixture
def fast_switching() -> Iterator[None]:
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # threads interleave between any two bytecodes, as under load
    try:
        yield
    finally:
        sys.setswitchinterval(before)


@pytest.mark.parametrize("attempt", range(5))  # a race: before the fix 1 to 4 of the 5 attempts lost it, here
def test_many_threads_reap_the_same_exited_children(tmp_path: Path, fast_switching: None, attempt: int) -> None:
    pids = [proc.spawn(["true"], env={}, cwd=tmp_path, log=tmp_path / "log") for _ in range(100)]
    deadline = time.monotonic() + 30
    while not all(p.poll() is not None for p in list(proc._children)):  # noqa: SLF001 - all have exited
        assert time.monotonic() < deadline
        time.sleep(0.05)
    errors: list[BaseException] = []
    start = threading.Barrier(16)

    def work() -> None:
        try:
            start.wait()
            proc.reap()
            proc.spawn(["true"], env={}, cwd=tmp_path, log=tmp_path / "log")
            proc.reap()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert not {p.pid for p in proc._children} & set(pids)  # noqa: SLF001 - the exited ones are collected
    while proc._children and time.monotonic() < deadline:  # noqa: SLF001
        time.sleep(0.05)
        proc.reap()
    assert proc._children == []  # noqa: SLF001
