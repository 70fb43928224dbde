"""A real ``pulumi-dbos serve`` for tests: its own process on a free 127.0.0.1 port and data dir, tokens from
its own ``serve token``, stop / crash / restart, and a clean-up that removes everything it made."""

from __future__ import annotations

import contextlib
import gc
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from pulumi_dbos.engine.local.runtime import org_user, remove_user
from tests.conftest import _short_tmpdir, cleanup_data_dir, kill_servers_under

READY_DEADLINE = 60.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cli() -> list[str]:
    return [sys.executable, "-m", "pulumi_dbos.cli"]


@dataclass
class Serve:
    data_dir: Path
    port: int
    ca_cert: Path
    proc: subprocess.Popen[bytes] | None
    backup_interval: float | None = None
    advertise_host: str | None = None
    extra_args: tuple[str, ...] = ()  # more flags of `pulumi-dbos serve` (limits, --link-allow...)
    _log: Path | None = field(default=None, repr=False)

    @property
    def domain(self) -> str:
        """What ``DBOS_DOMAIN`` / ``dbos:cloudDomain`` take."""
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"https://{self.domain}"

    @property
    def log_path(self) -> Path:
        return self._log or self.data_dir.parent / f"serve-{self.data_dir.name}.log"

    def token(self, org: str = "acme", user: str = "alice", ttl_hours: float = 24) -> str:
        cp = subprocess.run(  # noqa: S603 - argument list
            [*_cli(), "serve", "token", "--org", org, "--user", user, "--data-dir", str(self.data_dir),
             f"--ttl-hours={ttl_hours}"], capture_output=True, text=True, timeout=60, check=False)
        if cp.returncode != 0:
            raise AssertionError(f"`pulumi-dbos serve token` failed: {cp.stderr.strip()}")
        return cp.stdout.strip()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def _tail(self, lines: int = 40) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def stop(self) -> None:
        """SIGTERM, then wait (requests in flight finish; the background thread stops)."""
        if self.proc is None:
            return
        # Clients this process no longer uses (a test's engine or httpx client in a reference cycle) still
        # hold TLS connections: serve's graceful shutdown would wait 30 s (asyncio's TLS shutdown timeout)
        # for each to answer its close_notify. Collected, their sockets close and serve exits at once.
        gc.collect()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(90)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

    def kill(self) -> None:
        """SIGKILL: a crash (what it started, clusters and apps, keeps running)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        self.proc = None

    def start(self) -> None:
        """(Re)start on the same port and data dir; return once GET /v1alpha1/user/profile answers 401."""
        if self.proc is not None and self.proc.poll() is None:
            raise AssertionError("serve is already running")
        argv = [*_cli(), "serve", "--listen", self.domain, "--data-dir", str(self.data_dir)]
        if self.backup_interval is not None:
            argv += ["--backup-interval", str(self.backup_interval)]
        if self.advertise_host is not None:
            argv += ["--advertise-host", self.advertise_host]
        argv += list(self.extra_args)
        with open(self.log_path, "ab") as out:
            out.write(f"\n==== start {time.strftime('%H:%M:%S')}\n".encode())
            out.flush()
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,  # noqa: S603
                                         stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        deadline = time.monotonic() + READY_DEADLINE
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"serve exited with code {self.proc.returncode}:\n{self._tail()}")
            if self.ca_cert.is_file():
                with contextlib.suppress(httpx.HTTPError, OSError):
                    r = httpx.get(f"{self.url}/v1alpha1/user/profile", verify=ssl.create_default_context(cafile=str(self.ca_cert)),
                                  timeout=2)
                    if r.status_code == 401:
                        return
            if time.monotonic() > deadline:
                raise AssertionError(f"serve was not ready within {READY_DEADLINE:.0f}s:\n{self._tail()}")
            time.sleep(0.1)


@contextlib.contextmanager
def running_serve(data_dir: Path | None = None, *, backup_interval: float | None = None,
                  advertise_host: str | None = None, extra_args: Sequence[str] = ()) -> Iterator[Serve]:
    """A started serve; stopped and everything it made removed afterwards, also when the test fails."""
    root = None
    if data_dir is None:
        root = _short_tmpdir("sv")
        data_dir = root / "d"
    serve = Serve(data_dir=data_dir, port=free_port(), ca_cert=data_dir / "serve" / "tls" / "cert.pem", proc=None,
                  backup_interval=backup_interval, advertise_host=advertise_host, extra_args=tuple(extra_args))
    try:
        serve.start()
        yield serve
    finally:
        with contextlib.suppress(Exception):
            serve.stop()
        for org in sorted((data_dir / "orgs").glob("*")):
            cleanup_data_dir(org)
            with contextlib.suppress(Exception):
                remove_user(org_user(data_dir, org.name))  # the organization's OS user (serve makes one per org)
        kill_servers_under(data_dir)
        shutil.rmtree(data_dir, ignore_errors=True)
        with contextlib.suppress(OSError):
            serve.log_path.unlink()
        if root is not None:
            shutil.rmtree(root, ignore_errors=True)
