"""Small servers the security tests aim serve at: a port that accepts and never answers, a TCP server that
is not PostgreSQL (it answers with a banner of its own), and serve's memory as the kernel counts it."""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from collections.abc import Iterator
from pathlib import Path

#: what the fake server says: a link's error must never carry it back to the tenant
BANNER = "corp-db7.internal: SecretWare 9.9 build 4711"


def _listener() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", 0))
    s.listen(512)
    s.settimeout(0.2)
    return s


@contextlib.contextmanager
def tcp_server(answer: bool) -> Iterator[tuple[int, list[socket.socket]]]:
    """A TCP server on 127.0.0.1: (port, the connections it accepted). With ``answer``, it plays the first
    steps of PostgreSQL's protocol and fails the start-up with an error message of its own (:data:`BANNER`):
    what a client library prints as the server's text. Without, it accepts and never says anything."""
    srv = _listener()
    conns: list[socket.socket] = []
    stop = threading.Event()

    def talk(c: socket.socket) -> None:
        with contextlib.suppress(OSError):
            c.settimeout(10)
            while not stop.is_set():
                head = c.recv(8)
                if len(head) < 8:
                    return
                length, code = struct.unpack("!ii", head)
                if length > 8:
                    c.recv(length - 8)
                if code in (80877103, 80877104):  # SSLRequest / GSSENCRequest: "not here"
                    c.sendall(b"N")
                    continue
                fields = b"SFATAL\x00VFATAL\x00C28000\x00M" + BANNER.encode() + b"\x00\x00"
                c.sendall(b"E" + struct.pack("!i", 4 + len(fields)) + fields)
                return

    def serve() -> None:
        while not stop.is_set():
            try:
                c, _ = srv.accept()
            except OSError:
                continue
            conns.append(c)
            if answer:
                threading.Thread(target=talk, args=(c,), daemon=True).start()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        yield int(srv.getsockname()[1]), conns
    finally:
        stop.set()
        t.join(5)
        srv.close()
        for c in conns:
            with contextlib.suppress(OSError):
                c.close()


def closed_port() -> int:
    """A 127.0.0.1 port nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def memory_kib(pid: int, field: str) -> int:
    """``VmRSS``, ``VmHWM``... of process ``pid``, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def reset_peak_memory(pid: int) -> None:
    """Start ``VmHWM`` (the peak resident size) over from the current size (Linux: ``clear_refs`` 5)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")
