"""Ports: free on 127.0.0.1, unique in the catalog, and claimed machine-wide.

A claim is a file ``<ports dir>/<port>`` holding ``<data dir>\\n<name>\\n``, created with
``O_EXCL``, so engines using other data dirs never take the port of a *stopped* instance.
A claim whose instance no longer exists (its data dir has no catalog, or the catalog gives that
port to nobody of that name) is stale and reclaimed.

Only the engine writes claims (issue 18: an app, running as another OS user, filled a world-writable
claims directory with fake, backdated claims and blocked every provision). The directory is the
engine's own: as root ``/var/tmp/pulumi-dbos-ports``, root-owned 0755; otherwise
``/var/tmp/pulumi-dbos-ports-<uid>``, 0700 (so engines of different OS users no longer see each
other's stopped instances' ports: a port in use is still never taken). ``$PULUMI_DBOS_PORTS_DIR``
overrides it. A directory there that is not ours (another owner, a symlink, not a directory) is
replaced when it is the default path and refused when configured; ours with group or other write
permission (the old 1777) is repaired, and every entry in it not owned by us removed. Only regular
files owned by the engine's user count as claims: anything else met where a claim should be is
removed. Paths there are never followed: the directory is opened with ``O_NOFOLLOW`` and its entries
reached through that descriptor, each with ``O_NOFOLLOW``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import socket
import sqlite3
import stat
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from ...errors import EngineError
from .. import settings
from .catalog import Catalog

log = logging.getLogger("pulumi_dbos.engine")

HOST = "127.0.0.1"
#: instances and apps' stable ports, and app backends: below Linux's default ephemeral range (32768-60999), so
#: the kernel never hands one of ours to an outgoing connection between our choice and our bind (it did with
#: 54320-59999 on a busy machine: "Address already in use"); narrowed by :func:`outside_ephemeral` when
#: this kernel's ``ip_local_port_range`` says otherwise. ``$PULUMI_DBOS_PORT_RANGE`` and
#: ``$PULUMI_DBOS_APP_BACKEND_PORTS`` (``LO-HI``) set them.
DEFAULT_PORT_RANGE = (15432, 19999)
DEFAULT_BACKEND_PORTS = (20000, 22999)
#: how often a server, proxy or app start is tried on another port when its chosen one was taken meanwhile
BIND_ATTEMPTS = 3
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


DEFAULT_PORTS_DIR = "/var/tmp/pulumi-dbos-ports"
_dir_lock = threading.Lock()
_MAX_CLAIM = 4096  # a claim is two lines; anything longer is not one of ours


def ports_dir() -> Path:
    """``$PULUMI_DBOS_PORTS_DIR``, else root's shared directory, else one per OS user."""
    given = settings.from_env().ports_dir
    if given:
        return given
    uid = os.geteuid()
    return Path(DEFAULT_PORTS_DIR if uid == 0 else f"{DEFAULT_PORTS_DIR}-{uid}")


def _dir_mode() -> int:
    return 0o755 if os.geteuid() == 0 else 0o700


def _trusted_dir(st: os.stat_result) -> bool:
    return stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid() and not st.st_mode & 0o022


def _replace_untrusted(d: Path, st: os.stat_result) -> None:
    """``d`` is not a directory of ours: remove it (never following it) so that a new one can be made."""
    configured = settings.from_env().ports_dir is not None
    what = ("a symlink" if stat.S_ISLNK(st.st_mode) else "not a directory" if not stat.S_ISDIR(st.st_mode)
            else f"owned by uid {st.st_uid}")
    if configured or (st.st_uid != os.geteuid() and os.geteuid() != 0):
        raise EngineError(f"the port claims directory {d} is {what}: only the engine's own OS user may write claims",
                          hint="remove it, or set PULUMI_DBOS_PORTS_DIR to a directory of this user's "
                               "that no one else can write")
    log.warning("port claims directory %s was %s: replaced", d, what)
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(d)  # fd-based on Linux: symlinks inside are removed, never followed
    else:
        os.unlink(d)


def _sweep(dfd: int) -> None:
    """Remove every entry not a regular file owned by us (claims others made while the directory was open)."""
    me = os.geteuid()
    for entry in os.listdir(dfd):
        with contextlib.suppress(OSError):
            st = os.stat(entry, dir_fd=dfd, follow_symlinks=False)
            if not stat.S_ISREG(st.st_mode) or st.st_uid != me:
                if stat.S_ISDIR(st.st_mode):
                    shutil.rmtree(entry, dir_fd=dfd)
                else:
                    os.unlink(entry, dir_fd=dfd)


def _open_dir() -> int:
    """A descriptor of the claims directory, made or repaired first (see the module's docstring)."""
    d = ports_dir()
    with _dir_lock:
        for _ in range(3):
            try:
                st = os.lstat(d)
            except FileNotFoundError:
                d.parent.mkdir(parents=True, exist_ok=True)
                with contextlib.suppress(FileExistsError):
                    os.mkdir(d, _dir_mode())
                continue
            if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
                _replace_untrusted(d, st)
                continue
            try:
                dfd = os.open(d, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
            except OSError:
                continue  # replaced under us: look again
            fst = os.fstat(dfd)
            if stat.S_ISDIR(fst.st_mode) and fst.st_uid == os.geteuid() and fst.st_mode & 0o022:
                log.warning("port claims directory %s was writable by others (mode %o): repaired", d,
                            fst.st_mode & 0o7777)
                os.fchmod(dfd, _dir_mode())
                _sweep(dfd)
                fst = os.fstat(dfd)
            if _trusted_dir(fst):
                return dfd
            os.close(dfd)
    raise EngineError(f"cannot make the port claims directory {d} (it keeps changing under us)",
                      hint="is another process replacing it? set PULUMI_DBOS_PORTS_DIR to a directory of your own")


@contextlib.contextmanager
def _claims_dir() -> Iterator[int]:
    dfd = _open_dir()
    try:
        yield dfd
    finally:
        os.close(dfd)


def _read_claim(dfd: int, entry: str) -> tuple[str, float] | None:
    """(text, age in seconds) of a claim we wrote; None when there is no entry. An entry that is not a
    regular file owned by us is removed (it is nobody's claim), then None."""
    try:
        fd = os.open(entry, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dfd)
    except FileNotFoundError:
        return None
    except OSError:  # a symlink (ELOOP), a socket...: not a claim
        with contextlib.suppress(OSError):
            os.unlink(entry, dir_fd=dfd)
        return None
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        if stat.S_ISREG(st.st_mode) and st.st_uid == os.geteuid():
            return fh.read(_MAX_CLAIM).decode(errors="replace"), time.time() - st.st_mtime
    log.warning("removing port claim %s not written by this engine's OS user (uid %d)", entry, st.st_uid)
    with contextlib.suppress(OSError):
        if stat.S_ISDIR(st.st_mode):
            shutil.rmtree(entry, dir_fd=dfd)
        else:
            os.unlink(entry, dir_fd=dfd)
    return None


def ephemeral_range() -> tuple[int, int]:
    """The kernel's range for outgoing connections' local ports (``ip_local_port_range``)."""
    try:
        lo, hi = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(lo), int(hi)
    except (OSError, ValueError):
        return 32768, 60999


def outside_ephemeral(lo: int, hi: int) -> tuple[int, int]:
    """The longest part of ``lo-hi`` outside the ephemeral range (unchanged when they do not overlap)."""
    elo, ehi = ephemeral_range()
    if hi < elo or lo > ehi:
        return lo, hi
    below, above = (lo, min(hi, elo - 1)), (max(lo, ehi + 1), hi)
    best = max((r for r in (below, above) if r[0] <= r[1]), key=lambda r: r[1] - r[0], default=None)
    if best is None:
        raise EngineError(f"ports {lo}-{hi} all lie in the kernel's ephemeral range {elo}-{ehi}",
                          hint="set PULUMI_DBOS_PORT_RANGE / PULUMI_DBOS_APP_BACKEND_PORTS (LO-HI) outside it")
    return best


def port_range() -> tuple[int, int]:
    """Instances' ports and apps' stable ports (``$PULUMI_DBOS_PORT_RANGE`` as set, else the default outside
    the ephemeral range)."""
    return settings.from_env().port_range or outside_ephemeral(*DEFAULT_PORT_RANGE)


def backend_ports() -> tuple[int, int]:
    """Ports of the apps' serving processes behind their stable ports (``$PULUMI_DBOS_APP_BACKEND_PORTS``)."""
    return settings.from_env().app_backend_ports or outside_ephemeral(*DEFAULT_BACKEND_PORTS)


def bind_failed(text: str) -> bool:
    """Whether a start failed because its port was taken (PostgreSQL's, Python's and Node's words)."""
    lowered = text.lower()
    return any(w in lowered for w in ("address already in use", "could not create any tcp/ip sockets",
                                      "eaddrinuse", "could not bind"))


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
    if parts[1].startswith("fwd:"):  # the old port of a moved instance, while its forwarder lives (forward.py)
        return (Path(parts[0]) / "forwards" / str(port)).is_dir()
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
    entry = str(port)
    mine = _claim_text(data_dir, name)
    with _claims_dir() as dfd:
        for _ in range(3):
            try:
                fd = os.open(entry, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW, 0o644, dir_fd=dfd)
            except FileExistsError:
                held = _read_claim(dfd, entry)
                if held is None:
                    continue  # gone, or not a claim (removed): try again
                holder, age = held
                if holder == mine:
                    return True
                if _claim_is_live(holder, port, age):
                    return False
                with contextlib.suppress(OSError):
                    os.unlink(entry, dir_fd=dfd)
                continue
            with os.fdopen(fd, "w") as fh:
                fh.write(mine)
            return True
    return False


def release(port: int, data_dir: Path, name: str) -> None:
    with contextlib.suppress(OSError), _claims_dir() as dfd:
        held = _read_claim(dfd, str(port))
        if held is not None and held[0] == _claim_text(data_dir, name):
            os.unlink(str(port), dir_fd=dfd)


def release_all(data_dir: Path, name: str, keep: Iterable[int] = ()) -> list[int]:
    """Release every claim of (data_dir, name) but those of ``keep`` (an app's claims left by a deploy that a
    killed server never finished); the ports released."""
    mine, kept, released = _claim_text(data_dir, name), set(keep), []
    with contextlib.suppress(OSError), _claims_dir() as dfd:
        for entry in os.listdir(dfd):
            if not entry.isdigit() or int(entry) in kept:
                continue
            held = _read_claim(dfd, entry)
            if held is not None and held[0] == mine:
                with contextlib.suppress(OSError):
                    os.unlink(entry, dir_fd=dfd)
                    released.append(int(entry))
    return released


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
