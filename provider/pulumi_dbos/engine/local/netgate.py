"""The sandbox's trampoline with a network namespace of its own (standard library only: run as a script by root,
``python -I -S netgate.py``, before ``bwrap``; see :mod:`.sandbox`).

::

    netgate.py [--procs FILE]... [--in PORT]... [--out PORT=HOST:PORT]... [--connect PORT=HOST,...]
               --uid UID --gid GID -- ARGV

1. Enters the cgroups named by ``--procs`` (as :data:`.sandbox._ENTER` does).
2. Binds each ``--in`` port on the host's 127.0.0.1 (the app's backend port: a bind that fails ends it here
   with "could not bind port N: Address already in use", which the deploy retries on another port).
3. Leaves the host's network namespace for a new one (``unshare(CLONE_NEWNET)``) holding only ``lo``: no
   interface, no route, no other address, and its own ports and abstract Unix sockets. Binds there each
   ``--out`` port on 127.0.0.1 (the app's database port) and each ``--connect`` port (an HTTPS proxy).
4. Starts two relays, both as ``UID:GID`` with no capability and ``no_new_privs``, joined by a Unix socket
   pair. The *inside* one accepts on the ``--in`` ports (sockets of the host's network: a listening socket
   accepts where it was made, whoever holds it) and connects each connection to the same port on the
   namespace's 127.0.0.1; it accepts on the ``--out`` ports too and hands each connection to the *outside*
   one (back in the host's namespace), which connects it to ``HOST:PORT`` there. ``--connect``: an HTTP
   ``CONNECT`` proxy, outside, that lets through only ``CONNECT <one of HOSTS>:443`` (an environment build's
   package index).
5. Runs ARGV (``bwrap ...``) in the new namespace as its child, passes SIGTERM/SIGINT/SIGHUP on, and when it
   exits ends the relays and exits with its status. The namespace ends with the last process in it.

An outgoing connection is a file descriptor passed between the relays (``SCM_RIGHTS``): a socket stays in the
namespace it was made in, so each relay makes sockets only in its own and nothing is ever routed between them.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import signal
import socket
import struct
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import asyncio
    import ipaddress


def _load() -> None:
    """The relays' modules (~0.3 s of imports, not the trampoline's: the app starts meanwhile), imported as root
    before the relays drop to a user that may not read the interpreter's files."""
    global asyncio, ipaddress  # noqa: PLW0603
    import asyncio
    import concurrent.futures.thread  # noqa: F401 - asyncio's getaddrinfo runs in its executor
    import encodings.idna  # noqa: F401 - getaddrinfo of a host name encodes it with this codec
    import ipaddress


CLONE_NEWNET = 0x40000000
PR_SET_PDEATHSIG = 1
PR_SET_NO_NEW_PRIVS = 38
SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1
_libc = ctypes.CDLL(None, use_errno=True)


def _check(rc: int, what: str) -> None:
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _listen(port: int) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", port))
    s.listen(256)
    return s


def _lo_up() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        req = struct.pack("16sH22x", b"lo", 0)
        flags = struct.unpack("16sH22x", fcntl.ioctl(s, SIOCGIFFLAGS, req))[1]
        fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sH22x", b"lo", flags | IFF_UP))


def _drop(uid: int, gid: int) -> None:
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)
    _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(NO_NEW_PRIVS)")
    _check(_libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "prctl(PDEATHSIG)")


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


async def _join(sock: socket.socket, host: str, port: int) -> None:
    with contextlib.suppress(OSError, asyncio.TimeoutError):
        cr, cw = await asyncio.open_connection(sock=sock)
        try:
            ur, uw = await asyncio.wait_for(asyncio.open_connection(host, port), 30)
        except (OSError, asyncio.TimeoutError):
            cw.close()
            return
        await asyncio.gather(_pipe(cr, uw), _pipe(ur, cw))


def _public(addr: str) -> bool:
    """Not an address of this host (loopback, or one it can bind: the outside relay is in the host's network),
    nor link-local, unspecified or multicast: a build never reaches the host itself through a requirements.txt
    URL naming 127.0.0.1 or the host's own address."""
    ip = ipaddress.ip_address(addr.split("%", 1)[0])
    if ip.is_loopback or ip.is_link_local or ip.is_unspecified or ip.is_multicast:
        return False
    with socket.socket(socket.AF_INET6 if ip.version == 6 else socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((str(ip), 0))
        except OSError:
            return True  # not ours (EADDRNOTAVAIL)
    return False


async def _connect_proxy(sock: socket.socket, allowed: frozenset[str]) -> None:
    """One ``CONNECT host:443`` to an allowed host, then bytes both ways; anything else is answered 403."""
    with contextlib.suppress(OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                             ValueError):
        cr, cw = await asyncio.open_connection(sock=sock, limit=8192)
        head = await asyncio.wait_for(cr.readuntil(b"\r\n\r\n"), 30)
        parts = head.split(b"\r\n", 1)[0].decode("ascii", "replace").split()
        host, _, port = parts[1].rpartition(":") if len(parts) == 3 and parts[0] == "CONNECT" else ("", "", "")
        if host.lower() not in allowed or port != "443":
            cw.write(b"HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\n\r\n")
            await cw.drain()
            cw.close()
            return
        try:
            loop = asyncio.get_running_loop()
            infos = await asyncio.wait_for(loop.getaddrinfo(host, 443, type=socket.SOCK_STREAM), 30)
            addrs = [str(i[4][0]) for i in infos if _public(str(i[4][0]))]
            if not addrs:
                raise OSError(f"{host} is not a public address")
            ur, uw = await asyncio.wait_for(asyncio.open_connection(addrs[0], 443), 30)
        except (OSError, asyncio.TimeoutError):
            cw.write(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n")
            await cw.drain()
            cw.close()
            return
        cw.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await cw.drain()
        await asyncio.gather(_pipe(cr, uw), _pipe(ur, cw))


async def _relay(pair: socket.socket, listeners: dict[str, socket.socket], targets: dict[str, tuple[str, int]],
                 allowed: frozenset[str]) -> None:
    """Connect what ``listeners`` accept, and what the other relay hands over, to ``targets[tag]`` when this relay
    has that target; hand the rest to the other relay (tagged)."""
    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Task[None]] = set()

    def spawn(coro: object) -> None:
        task = asyncio.ensure_future(coro)  # type: ignore[call-overload]
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    def accept(tag: str, lsock: socket.socket) -> None:
        with contextlib.suppress(BlockingIOError, InterruptedError):
            conn, _ = lsock.accept()
            if tag in targets:  # an inbound connection: accepted from the host's network, joined in this one
                spawn(_join(conn, *targets[tag]))
                return
            try:
                socket.send_fds(pair, [tag.encode()], [conn.fileno()])
            except OSError:
                os._exit(0)  # the other relay is gone: the sandbox is ending
            finally:
                conn.close()

    def received() -> None:
        try:
            msg, fds, _flags, _addr = socket.recv_fds(pair, 64, 1)
        except BlockingIOError:
            return
        if not msg and not fds:
            os._exit(0)
        for fd in fds:
            conn = socket.socket(fileno=fd)
            tag = msg.decode(errors="replace")
            if tag == "c":
                spawn(_connect_proxy(conn, allowed))
            elif tag in targets:
                spawn(_join(conn, *targets[tag]))
            else:
                conn.close()

    pair.setblocking(False)
    loop.add_reader(pair.fileno(), received)
    for tag, lsock in listeners.items():
        lsock.setblocking(False)
        loop.add_reader(lsock.fileno(), accept, tag, lsock)
    await asyncio.Event().wait()


def _out_target(spec: str) -> tuple[int, str, int]:
    local, _, remote = spec.partition("=")
    host, _, port = remote.rpartition(":")
    return int(local), host.strip("[]"), int(port)


class _Args:
    """The options (argparse would cost the trampoline's start 50 ms)."""

    def __init__(self, argv: list[str]) -> None:
        self.procs: list[str] = []
        self.inbound: list[int] = []
        self.out: list[tuple[int, str, int]] = []
        self.connect: str | None = None
        self.uid = self.gid = -1
        it = iter(argv)
        for opt in it:
            value = next(it)
            if opt == "--procs":
                self.procs.append(value)
            elif opt == "--in":
                self.inbound.append(int(value))
            elif opt == "--out":
                self.out.append(_out_target(value))
            elif opt == "--connect":
                self.connect = value
            elif opt == "--uid":
                self.uid = int(value)
            elif opt == "--gid":
                self.gid = int(value)
            else:
                raise SystemExit(f"netgate: unknown option {opt}")
        if self.uid <= 0 or self.gid <= 0:
            raise SystemExit("netgate: --uid and --gid (not root) are required")


def main(argv: list[str]) -> int:
    i = argv.index("--")
    a = _Args(argv[:i])
    cmd = argv[i + 1:]
    for path in a.procs:
        with open(path, "w") as f:
            f.write(str(os.getpid()))
    host_ns = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    outside: dict[str, socket.socket] = {}
    for port in a.inbound:
        try:
            outside[f"i{port}"] = _listen(port)
        except OSError as exc:
            print(f"netgate: could not bind port {port}: {exc.strerror}", file=sys.stderr, flush=True)
            return 1
    _check(_libc.unshare(CLONE_NEWNET), "unshare(CLONE_NEWNET)")
    _lo_up()
    inside: dict[str, socket.socket] = {f"o{n}": _listen(port) for n, (port, _h, _p) in enumerate(a.out)}
    allowed: frozenset[str] = frozenset()
    if a.connect:
        port_text, _, hosts = a.connect.partition("=")
        inside["c"] = _listen(int(port_text))
        allowed = frozenset(h.strip().lower() for h in hosts.split(",") if h.strip())
    out_pair, in_pair = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    child = os.fork()  # first: the app starts while the relays load; what it sends early waits in the backlogs
    if child == 0:
        os.execv(cmd[0], cmd)  # the listeners and the pair are close-on-exec
    relays = []
    for role in ("outside", "inside"):
        pid = os.fork()
        if pid == 0:
            try:
                _load()
                # a listening socket accepts in the namespace it was made in, whoever holds it: the inside relay
                # takes the inbound ones too and joins their connections in its namespace (no hand-over)
                if role == "outside":
                    _check(_libc.setns(host_ns, CLONE_NEWNET), "setns(host)")
                    mine, pair = {}, out_pair
                    targets = {f"o{n}": (h, q) for n, (_port, h, q) in enumerate(a.out)}
                    in_pair.close()
                else:
                    mine, pair = {**inside, **outside}, in_pair
                    targets = {f"i{port}": ("127.0.0.1", port) for port in a.inbound}
                    out_pair.close()
                for s in (*inside.values(), *outside.values()):
                    if s not in mine.values():
                        s.close()
                keep = {0, 1, 2, pair.fileno(), *(s.fileno() for s in mine.values())}
                for fd in [int(f) for f in os.listdir("/proc/self/fd")]:
                    if fd not in keep:  # host_ns, the app's environment (sandbox.env_fd), the listing's own
                        with contextlib.suppress(OSError):
                            os.close(fd)
                _drop(a.uid, a.gid)
                for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):  # a stop reaches the app first; the
                    signal.signal(sig, signal.SIG_IGN)  # relays go when it has exited (or with the trampoline)
                if os.getppid() == 1:
                    os._exit(0)
                asyncio.run(_relay(pair, mine, targets, allowed if role == "outside" else frozenset()))
            except BaseException as exc:  # noqa: BLE001 - a relay never returns into the trampoline's code
                print(f"netgate: {role} relay: {exc}", file=sys.stderr, flush=True)
            os._exit(1)
        relays.append(pid)
    for s in (*outside.values(), *inside.values(), out_pair, in_pair):
        s.close()
    os.close(host_ns)

    def fwd(sig: int, _frame: object) -> None:
        with contextlib.suppress(OSError):
            os.kill(child, sig)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, fwd)
    while True:
        try:
            _, status = os.waitpid(child, 0)
            break
        except ChildProcessError:
            status = 0
            break
        except InterruptedError:
            continue
    for pid in relays:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
