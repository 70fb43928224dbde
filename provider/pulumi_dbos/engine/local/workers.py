"""The local engine's detached workers: starting them, their locks, stopping them. Their entry point is
``workers_run`` (a module of its own: it imports what the workers do, which imports this library)::

    python -m pulumi_dbos.engine.local.workers_run refill DATA_DIR TEMPLATE SIZE [--run-as USER]
    python -m pulumi_dbos.engine.local.workers_run watch DATA_DIR [--run-as USER]

``refill`` fills the warm pool of one template (``pool``); ``watch`` takes base backups by WAL volume
while the data dir's instances run (``autobackup``). Each holds a lock file, so a second one exits at
once. Not a user command: nothing here is part of the CLI.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import signal
import sys
from contextlib import AbstractContextManager
from pathlib import Path

import psutil

from .. import proc, settings
from ..locks import file_lock
from ..waits import wait_until
from .paths import Layout

log = logging.getLogger("pulumi_dbos.engine")

_MODULE = "pulumi_dbos.engine.local.workers_run"


def try_lock(path: Path, *, record_pid: bool = False) -> AbstractContextManager[bool]:
    """An exclusive lock on ``path`` if free right now (``locks.file_lock``); never one on a file another OS user
    made (a shared directory). A worker writes its pid into the lock file it holds (``stop_workers`` reads it)."""
    return file_lock(path, own_only=True, record_pid=record_pid)


def spawn_worker(layout: Layout, args: list[str], *, cwd: Path, log_file: Path) -> int:
    """Start ``python -m pulumi_dbos.engine.local.workers_run ARGS`` detached (its own session), as this
    process's user (it switches to the cluster user for what runs as that user, as the engine does)."""
    argv = [sys.executable, "-m", _MODULE, args[0], str(layout.data_dir), *args[1:]]
    if layout.run_as.user:
        argv += ["--run-as", layout.run_as.user]
    proc.reap()
    return proc.spawn(argv, env=worker_env(), cwd=cwd, log=log_file)


def worker_env() -> dict[str, str]:
    """The environment of the engine's detached workers: a clean one, plus the settings they read (those marked
    ``worker`` in ``settings.EngineSettings``; nothing else: no secrets)."""
    env = settings.from_env().worker_env()
    if "PYTHONPATH" in os.environ:
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    return proc.clean_env(env)


def stop_workers(layout: Layout) -> None:
    """End this data dir's workers (and what they run: their sessions) and wait until they are gone: once
    none of its instances runs, nothing of the engine may be left working there (a refill cut short
    leaves nothing usable; the watcher has nothing to watch)."""
    locks = [layout.data_dir / "wal-watch.lock", *layout.data_dir.glob("templates/*/pool/refill.lock")]
    for lock in locks:
        with contextlib.suppress(OSError, ValueError, psutil.Error):
            pid = int(lock.read_text().strip() or "0")
            if not pid:
                continue
            p = psutil.Process(pid)
            cmd = p.cmdline()
            if _MODULE not in cmd or str(layout.data_dir) not in cmd:
                continue  # the pid of a worker that is gone, now someone else's
            with try_lock(lock) as free:
                if free:
                    continue  # it has let go: finishing or gone
            os.killpg(pid, signal.SIGKILL)
            wait_until(functools.partial(_gone, p), 10, f"worker {pid} exiting", raise_on_timeout=False)
            proc.reap()


def _gone(p: psutil.Process) -> bool:
    try:
        return not p.is_running() or p.status() == psutil.STATUS_ZOMBIE
    except psutil.Error:
        return True
