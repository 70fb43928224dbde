"""The long-running processes of HA (etcd and Patroni members, the endpoint): started on a host through its
command prefix, detached, their pid in a file beside their log. On a real host (``host.ssh``) every one of these
is a command over SSH (``remote``): the pid is that host's."""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

import psutil

from .. import proc
from ..waits import wait_until
from . import remote
from .hosts import Host


def _pid(pidfile: Path) -> int | None:
    try:
        return int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return None


def live_pid(pidfile: Path, marker: str) -> int | None:
    """The pid in ``pidfile`` if that process runs and its command line says ``marker``."""
    pid = _pid(pidfile)
    if pid is None:
        return None
    try:
        p = psutil.Process(pid)
        if p.status() == psutil.STATUS_ZOMBIE or marker not in " ".join(p.cmdline()):
            return None
    except psutil.Error:
        return None
    return pid


def running(pidfile: Path, marker: str, host: Host | None = None) -> bool:
    if host is not None and host.ssh is not None:
        return remote.running(host, pidfile.parent, marker)
    return live_pid(pidfile, marker) is not None


def start(host: Host, argv: list[str], run_as: proc.RunAs, where: Path, env: dict[str, str] | None = None) -> int | None:
    """``argv`` on ``host`` as ``run_as``, detached, output to ``where/log``, pid in ``where/pid``; returns the pid
    when it is this machine's (None on a real host)."""
    if host.ssh is not None:
        remote.start(host, argv, run_as, where, env)
        return None
    pid = proc.spawn(host.wrap(argv, run_as), env=proc.clean_env(env, run_as=run_as), cwd=where, log=where / "log")
    (where / "pid").write_text(str(pid))
    return pid


def stop(pidfile: Path, timeout: float = 30, host: Host | None = None, marker: str = "") -> None:
    """SIGTERM (Patroni stops its PostgreSQL on it), then SIGKILL after ``timeout``."""
    if host is not None and host.ssh is not None:
        remote.stop(host, pidfile.parent, marker, timeout)
        return
    pid = _pid(pidfile)
    if pid is None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signal.SIGTERM)
    if not wait_until(lambda: not _exists(pid), timeout, f"process {pid} exiting", raise_on_timeout=False):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
        wait_until(lambda: not _exists(pid), 10, f"process {pid} exiting", raise_on_timeout=False)
    proc.reap()
    with contextlib.suppress(FileNotFoundError):
        pidfile.unlink()


def kill(pidfile: Path, marker: str, sig: int = signal.SIGKILL, timeout: float = 10) -> None:
    """``sig`` to the process of ``pidfile`` (its first line) if it runs and says ``marker``; then wait until it
    is gone, and SIGKILL it if ``sig`` did not end it within ``timeout``."""
    try:
        pid = int(pidfile.read_text().split("\n", 1)[0].strip())
        p = psutil.Process(pid)
        if marker not in " ".join(p.cmdline()):
            return
    except (OSError, ValueError, psutil.Error):
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)
    if not wait_until(lambda: not _exists(pid), timeout, f"process {pid} exiting", raise_on_timeout=False,
                      interval=0.02):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
        wait_until(lambda: not _exists(pid), 10, f"process {pid} exiting", raise_on_timeout=False, interval=0.02)
    proc.reap()


def alive(pid: int) -> bool:
    """``pid`` runs (not a zombie)."""
    return _exists(pid)


def _exists(pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False
