"""Forwarders: the old port of a moved instance keeps answering while its bound apps still use it.

A port move (``LocalEngine.set_port``) must restart the server (Postgres listens on one port), but
the apps bound to the instance keep running with the old port in their URLs and password files
until their own update redeploys them (the App's update in the same ``pulumi up``). So the move
starts a forwarder on the old port before it stops the server: ``proxy.py --wait-bind --hold``,
which binds the old port 5 ms after the server let go of it, holds each connection until the server
answers on the new port, then pipes it. The apps' pooled connections end with the old server;
their next ones (SQLAlchemy's ``pool_pre_ping``, libpq's per-connection password file, same host,
same port) go through the forwarder: requests wait for the restart instead of failing.

State: ``data_dir/forwards/<old port>/`` (the engine's own, 0700): ``instance``, ``pid``, ``target``
(the new port, written once the server is ready there), ``ready``, ``log``. The old port stays
claimed (claimant ``fwd:<instance>``, live while its directory exists) so no other instance takes it.
A forwarder lives as long as an app's password file still names its port and the instance still
exists with another port; :func:`sweep` (after every deploy, app deletion, destroy, start and port
move) stops the others, and restarts a needed one that died (a crash, a reboot). The forwarder runs
as the engine's own user, like its workers: it holds no secret (the bytes it pipes are Postgres'
wire protocol, SCRAM-authenticated end to end).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil

from ...errors import EngineError
from .. import proc, settings
from ..files import write_atomic
from ..waits import wait_until
from . import ports
from .paths import Layout
from .server import alive

log = logging.getLogger("pulumi_dbos.engine")

PROXY = Path(__file__).with_name("proxy.py")
#: how long a forwarder waits for the old port and holds a connection for the new one (a server start)
HOLD_SECONDS = settings.from_env().start_timeout + 30


def claimant(instance: str) -> str:
    return f"fwd:{instance}"


def root(layout: Layout) -> Path:
    return layout.data_dir / "forwards"


@dataclass(frozen=True)
class Forward:
    """One forwarder: ``port`` (the instance's old one) → whatever ``target`` says."""

    port: int
    instance: str
    dir: Path
    pid: int | None

    def running(self) -> bool:
        """Its process is alive and is this forwarder (a pid read back may be anyone's by now)."""
        if not self.pid or not alive(self.pid):
            return False
        try:
            cmd = psutil.Process(self.pid).cmdline()
        except psutil.Error:
            return False
        return str(PROXY) in cmd and str(self.dir / "target") in cmd

    def _exited(self) -> bool:
        """False while the forwarder this process started runs (its pid: our unreaped child, so no one else's;
        its command line is empty for a moment while it execs); raises once it has exited (its last log line)."""
        if self.pid and alive(self.pid):
            return False
        log_file = self.dir / "log"
        tail = log_file.read_text(errors="replace").strip().splitlines()[-1:] if log_file.exists() else []
        raise EngineError(f"the forwarder of instance {self.instance!r} on its old port {self.port} exited"
                          + (f": {' '.join(tail)}" if tail else " without a word"), hint="retry `pulumi up`")

    def point(self, port: int) -> None:
        """Send held and new connections to ``port`` (the server is ready there)."""
        write_atomic(self.dir / "target", str(port), 0o600)

    def stop(self, layout: Layout) -> None:
        if self.running():
            assert self.pid is not None
            with contextlib.suppress(OSError):
                os.killpg(self.pid, signal.SIGTERM)
            if wait_until(lambda: not alive(self.pid or 0), 5, "", interval=0.02, raise_on_timeout=False) is None:
                with contextlib.suppress(OSError):
                    os.killpg(self.pid, signal.SIGKILL)
        proc.reap()
        ports.release(self.port, layout.data_dir, claimant(self.instance))
        shutil.rmtree(self.dir, ignore_errors=True)


def start(layout: Layout, instance: str, port: int, listen_host: str | None, target: int | None = None) -> Forward:
    """A forwarder for ``instance`` on ``port`` (its old port; the server may still hold it: the forwarder
    binds it as soon as it is free). ``target``: where to forward at once (else: held until ``point``)."""
    d = root(layout) / str(port)
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(mode=0o700, parents=True)
    (d / "instance").write_text(instance)
    if target is not None:
        Forward(port, instance, d, None).point(target)
    ports.release(port, layout.data_dir, instance)
    ports.claim(port, layout.data_dir, claimant(instance))
    argv = [sys.executable, str(PROXY), "--wait-bind", str(HOLD_SECONDS), "--hold", str(HOLD_SECONDS), str(port),
            str(d / "target"), str(d / "ready"), *ports.listen_hosts(listen_host)[1:]]
    pid = proc.spawn(argv, env=proc.clean_env(), cwd=d, log=d / "log")
    (d / "pid").write_text(str(pid))
    fwd = Forward(port, instance, d, pid)
    # started (Python's start-up takes longer than a checkpointed server's stop): it binds as soon as it can
    wait_until(lambda: fwd._exited() or (d / "ready.wait").exists() or (d / "ready").exists(), 15,
               f"the forwarder of instance {instance!r} did not start", interval=0.005)
    return fwd


def wait_bound(fwd: Forward, timeout: float = 15) -> None:
    """Until the forwarder listens on its port (the server let go of it)."""
    def bound() -> bool:
        return not fwd._exited() and (fwd.dir / "ready").exists()

    wait_until(bound, timeout, f"the forwarder of instance {fwd.instance!r} did not listen on port {fwd.port}",
               interval=0.005)


def existing(layout: Layout) -> list[Forward]:
    found: list[Forward] = []
    if not root(layout).is_dir():
        return found
    for d in sorted(root(layout).iterdir()):
        if not d.name.isdigit():
            continue
        try:
            instance = (d / "instance").read_text().strip()
        except OSError:
            instance = ""
        try:
            pid: int | None = int((d / "pid").read_text().strip())
        except (OSError, ValueError):
            pid = None
        found.append(Forward(int(d.name), instance, d, pid))
    return found


def ports_of(layout: Layout, instance: str) -> list[int]:
    """The old ports forwarded for ``instance`` (apps still connect there: a password reset rewrites their
    password files too)."""
    return [f.port for f in existing(layout) if f.instance == instance]


def sweep(layout: Layout, listen_host: str | None, port_of: Callable[[str], int | None], used: set[int]) -> None:
    """Stop the forwarders no app needs any more: ``port_of(instance)`` is the instance's port now (None:
    gone), ``used`` the database ports the apps' password files name. A needed one that is not running
    (a crash, a reboot) starts again, forwarding to the instance's port."""
    for fwd in existing(layout):
        now = port_of(fwd.instance) if fwd.instance else None
        if now is None or now == fwd.port or fwd.port not in used:
            log.info("forwarder of %s on port %d: no longer used, stopped", fwd.instance or "?", fwd.port)
            fwd.stop(layout)
        elif not fwd.running():
            fwd.stop(layout)
            start(layout, fwd.instance, fwd.port, listen_host, target=now)
