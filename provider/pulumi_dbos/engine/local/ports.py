"""Ports: free on 127.0.0.1, unique in the catalog, and claimed machine-wide.

A claim is a file ``<ports dir>/<port>`` holding ``<data dir>\\n<name>\\n``, created with
``O_EXCL``, so engines using other data dirs never take the port of a *stopped* instance.
A claim whose instance no longer exists is stale and reclaimed.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import sqlite3
import time
from pathlib import Path

from ...errors import EngineError
from .catalog import Catalog

HOST = "127.0.0.1"
DEFAULT_PORT_RANGE = (54320, 59999)
#: a listen host: a host name, an IPv4 or an IPv6 address (it goes into postgresql.conf and argv)
_LISTEN_HOST_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.:-]{0,252}$")


def check_listen_host(host: str) -> str:
    """``host`` if it can be an extra listen address (a name or an address, no lists or quotes)."""
    if not _LISTEN_HOST_RE.match(host):
        raise EngineError(f"invalid listen host {host!r}",
                          hint="a host name or an IP address of this machine, e.g. db1.example.com or 10.0.0.5")
    return host


def listen_hosts(listen_host: str | None) -> list[str]:
    """Where instances and app proxies listen: always 127.0.0.1, and ``listen_host`` when given."""
    return [HOST] if listen_host in (None, HOST) else [HOST, str(listen_host)]


def port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


def ports_dir() -> Path:
    return Path(os.environ.get("PULUMI_DBOS_PORTS_DIR", "/var/tmp/pulumi-dbos-ports"))


def port_range() -> tuple[int, int]:
    env = os.environ.get("PULUMI_DBOS_PORT_RANGE")
    if env:
        lo, hi = env.split("-")
        return int(lo), int(hi)
    return DEFAULT_PORT_RANGE


def _claim_text(data_dir: Path, name: str) -> str:
    return f"{data_dir}\n{name}\n"


CLAIM_GRACE = 120.0  # a fresh claim may belong to a create whose catalog row is not committed yet


def _claim_is_live(owner: str, port: int, age: float = CLAIM_GRACE + 1) -> bool:
    if age < CLAIM_GRACE:
        return True
    parts = owner.split("\n")
    if len(parts) < 2:
        return False
    catalog = Path(parts[0]) / "catalog.db"
    if not catalog.exists():
        return False
    try:
        db = sqlite3.connect(f"file:{catalog}?mode=ro", uri=True, timeout=10)
        try:
            if parts[1].startswith("app:"):
                row = db.execute("SELECT port FROM apps WHERE name = ?", (parts[1][4:],)).fetchone()
            elif parts[1].startswith("appb:"):  # an app's serving process
                row = db.execute("SELECT backend_port FROM apps WHERE name = ?", (parts[1][5:],)).fetchone()
            else:
                row = db.execute("SELECT port FROM instances WHERE name = ?", (parts[1],)).fetchone()
        finally:
            db.close()
    except sqlite3.OperationalError as exc:
        return "no such table" not in str(exc)  # an older catalog without apps: not live; else cannot tell
    except sqlite3.Error:
        return True  # cannot tell: leave it alone
    return bool(row) and row[0] is not None and int(row[0]) == port


def claim(port: int, data_dir: Path, name: str) -> bool:
    """Reserve ``port`` for (data_dir, name) machine-wide; False when someone else holds it."""
    d = ports_dir()
    if not d.exists():
        d.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(OSError):
            os.chmod(d, 0o1777)
    path = d / str(port)
    mine = _claim_text(data_dir, name)
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                holder = path.read_text()
            except OSError:
                continue
            if holder == mine:
                return True
            try:
                age = time.time() - path.stat().st_mtime
            except OSError:
                continue
            if _claim_is_live(holder, port, age):
                return False
            with contextlib.suppress(OSError):
                path.unlink()
            continue
        with os.fdopen(fd, "w") as fh:
            fh.write(mine)
        return True
    return False


def release(port: int, data_dir: Path, name: str) -> None:
    path = ports_dir() / str(port)
    with contextlib.suppress(OSError):
        if path.read_text() == _claim_text(data_dir, name):
            path.unlink()


def problem(catalog: Catalog | None, port: int, name: str) -> str | None:
    """Why instance ``name`` cannot use ``port`` (None = usable). Creates nothing."""
    current = None
    if catalog is not None:
        for other in catalog.all():
            if other.name == name:
                current = other.port
            elif other.port == port and not other.linked:
                return f"port {port} is already used by instance {other.name!r}"
    if current != port and not port_free(port):
        return f"port {port} on {HOST} is already in use by another process"
    return None


def allocate(db: sqlite3.Connection, data_dir: Path, wanted: int | None, name: str) -> int:
    """Inside the catalog lock: ``wanted`` if usable (else an error saying why), or the first free port."""
    used = Catalog.used_ports(db)
    if wanted is not None:
        if wanted in used:
            raise EngineError(f"port {wanted} is already used by another instance",
                              hint="leave port unset to get a free one")
        if not port_free(wanted):
            raise EngineError(f"port {wanted} on {HOST} is already in use by another process",
                              hint="choose another port or leave port unset")
        if not claim(wanted, data_dir, name):
            raise EngineError(f"port {wanted} belongs to a (stopped) instance of another pulumi-dbos data dir",
                              hint="choose another port or leave port unset")
        return wanted
    lo, hi = port_range()
    for port in range(lo, hi + 1):
        if port not in used and port_free(port) and claim(port, data_dir, name):
            return port
    raise EngineError(f"no free port in {lo}-{hi}", hint="set PULUMI_DBOS_PORT_RANGE")
