"""The apps' processes on this machine: their OS user and interpreter, environments (uv), liveness, stop.

Used by ``apps.py``; nothing here knows the catalog.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import sys
import time
from pathlib import Path

import psutil

from .. import proc
from ..contract import AppDatabaseAccess
from ..waits import wait_until
from . import server

ENV_TIMEOUT = float(os.environ.get("PULUMI_DBOS_ENV_TIMEOUT", "900"))


def default_app_user() -> str | None:
    env = os.environ.get("PULUMI_DBOS_APP_USER")
    if env:
        return env
    return "dbosapp" if os.geteuid() == 0 else None


def app_python() -> str:
    """The interpreter of the apps' environments; as root one the apps' user can run (not under /root)."""
    env = os.environ.get("PULUMI_DBOS_APP_PYTHON")
    if env:
        return env
    return "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable


def _uv() -> str:
    from uv import find_uv_bin

    return str(find_uv_bin())


def alive(pid: int | None) -> bool:
    """``server.alive`` after reaping our own exited children (spawned apps would stay zombies)."""
    if not pid:
        return False
    proc.reap()
    return server.alive(pid)


def listens(pid: int, port: int) -> bool:
    """Whether ``pid`` (or a child of it) listens on ``port``: a port that answers may be someone else's."""
    try:
        p = psutil.Process(pid)
        for q in (p, *p.children(recursive=True)):
            if any(c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port
                   for c in q.net_connections(kind="tcp")):
                return True
    except psutil.Error:
        return False
    return False


def runs_with(pid: int, args: list[str]) -> bool:
    """Whether ``pid``'s command line ends with ``args`` (True when it cannot be read: keep what runs)."""
    try:
        cmdline = psutil.Process(pid).cmdline()
    except psutil.Error:
        return True
    return len(cmdline) > len(args) and cmdline[-len(args):] == args


def stop(pid: int | None, grace: float = 10) -> None:
    if not alive(pid):
        return
    assert pid is not None
    with contextlib.suppress(psutil.Error):
        p = psutil.Process(pid)
        for child in p.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                child.terminate()
        p.terminate()
        if wait_until(lambda: not alive(pid), grace, f"process {pid} exiting", interval=0.05,
                      raise_on_timeout=False) is None:
            for child in p.children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    child.kill()
            p.kill()
    wait_until(lambda: not alive(pid), 5, f"process {pid} exiting", interval=0.05, raise_on_timeout=False)


def pgpass_line(db: AppDatabaseAccess) -> str:
    def esc(v: str) -> str:
        return v.replace("\\", "\\\\").replace(":", "\\:")

    return f"{esc(db.hostname)}:{db.port}:*:{esc(db.username)}:{esc(db.password)}\n"


def build_env(envs: Path, release: Path) -> Path:
    """The virtualenv under ``envs`` for the release's requirements.txt (built once per distinct content, with uv)."""
    req = release / "requirements.txt"
    python = app_python()
    content = req.read_bytes() if req.exists() else b""
    key = hashlib.sha256(content + python.encode()).hexdigest()[:16]
    env = envs / key
    if (env / ".ready").exists():
        return env
    with open(envs / f"{key}.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (env / ".ready").exists():
            return env
        shutil.rmtree(env, ignore_errors=True)
        # uv's own cache (per user, machine-wide): a package is downloaded once, then linked
        uv_env = proc.clean_env({"UV_PYTHON_DOWNLOADS": "never", "UV_NO_PROGRESS": "1"})
        for k in ("UV_CACHE_DIR", "XDG_CACHE_HOME", "PIP_INDEX_URL", "UV_INDEX_URL", "PIP_CERT", "SSL_CERT_FILE",
                  "REQUESTS_CA_BUNDLE"):
            if k in os.environ:
                uv_env[k] = os.environ[k]
        try:
            proc.run([_uv(), "venv", "--quiet", "--python", python, str(env)], env=uv_env, timeout=ENV_TIMEOUT,
                     hint="creating the app's virtualenv failed")
            if content:
                proc.run([_uv(), "pip", "install", "--quiet", "--python", str(env / "bin" / "python"), "-r",
                          str(req)], env=uv_env, timeout=ENV_TIMEOUT,
                         hint="installing the app's requirements.txt failed")
        except BaseException:
            shutil.rmtree(env, ignore_errors=True)
            raise
        (env / ".ready").write_text(python)
    return env


def kill_under(directory: Path) -> None:
    """Processes working in ``directory`` whatever the catalog says (a deploy killed midway)."""
    base = str(directory.resolve())
    for p in psutil.process_iter(["cwd"]):
        with contextlib.suppress(psutil.Error):
            if p.info["cwd"] and (p.info["cwd"] == base or p.info["cwd"].startswith(base + "/")):
                p.kill()
    time.sleep(0.05)
    proc.reap()
