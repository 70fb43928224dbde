"""A stable port in front of a backend that moves: an app's proxy, and an instance's forwarder after a port move.

Run as ``python3 proxy.py [--wait-bind S] [--hold S] LISTEN_PORT TARGET_FILE READY_FILE [HOST]`` (standard
library only: the engine copies this file next to the apps and runs it with the apps' interpreter, as
the apps' OS user). Each new connection goes to the port written in ``TARGET_FILE``. It listens on
127.0.0.1, and on ``HOST`` too when given; once it does, it writes its pid into ``READY_FILE``.

- An app's proxy (no options): a deploy starts the new version on its own port, waits until it is
  healthy, rewrites the file (atomically), then stops the old process — so clients of the app's port
  see no gap. Connections already open finish on the old process.
- An instance's forwarder (``forward.py``; ``--wait-bind``: the port is still the server's when it
  starts, so it tries to bind every 5 ms until it has it; ``--hold``: a connection that arrives while
  ``TARGET_FILE`` is missing or its port refuses is held, retried every 10 ms, for up to that many
  seconds, then piped) keeps the old port of a moved instance answering for the apps still connected
  to it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import time


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


def _target(path: str) -> int | None:
    try:
        with open(path) as fh:
            return int(fh.read().strip())
    except (OSError, ValueError):
        return None


async def _upstream(target_file: str, hold: float) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
    deadline = time.monotonic() + hold
    while True:
        port = _target(target_file)
        if port is not None:
            with contextlib.suppress(OSError):
                return await asyncio.open_connection("127.0.0.1", port)
        if time.monotonic() >= deadline:
            return None
        await asyncio.sleep(0.01)


def _bind(hosts: list[str], listen: int, wait_bind: float, waiting_file: str) -> list[socket.socket]:
    """Listening sockets on ``listen`` of each host; ``wait_bind``: retry every millisecond while the port is
    someone else's (a server shutting down), so it is ours as soon as it is free (``waiting_file`` says
    this process is at it: the engine stops the server only then)."""
    deadline = time.monotonic() + wait_bind
    if wait_bind:
        with open(waiting_file, "w") as fh:
            fh.write(str(os.getpid()))
    socks: list[socket.socket] = []
    # each address once: an advertised host may resolve to 127.0.0.1 again (asyncio.start_server dedups too)
    addrs = dict.fromkeys((family, kind, proto, addr) for host in hosts for family, kind, proto, _, addr
                          in socket.getaddrinfo(host, listen, type=socket.SOCK_STREAM))
    for family, kind, proto, addr in addrs:
        s = socket.socket(family, kind, proto)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        while True:
            try:
                s.bind(addr)
                break
            except OSError:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.001)
        s.listen(128)
        socks.append(s)
    return socks


async def main(listen: int, target_file: str, ready_file: str, host: str | None = None, *,
               wait_bind: float = 0, hold: float = 0) -> None:
    async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        up = await _upstream(target_file, hold)
        if up is None:
            client_w.close()
            return
        await asyncio.gather(_pipe(client_r, up[1]), _pipe(up[0], client_w))

    servers = [await asyncio.start_server(handle, sock=s) for s in _bind(
        ["127.0.0.1", *([host] if host else [])], listen, wait_bind, ready_file + ".wait")]
    with open(ready_file, "w") as fh:  # the port is ours: the engine waits for this
        fh.write(str(os.getpid()))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    for server in servers:
        server.close()


if __name__ == "__main__":
    os.umask(0o077)
    parser = argparse.ArgumentParser()
    parser.add_argument("--wait-bind", type=float, default=0)
    parser.add_argument("--hold", type=float, default=0)
    parser.add_argument("listen", type=int)
    parser.add_argument("target_file")
    parser.add_argument("ready_file")
    parser.add_argument("host", nargs="?")
    a = parser.parse_args()
    asyncio.run(main(a.listen, a.target_file, a.ready_file, a.host, wait_bind=a.wait_bind, hold=a.hold))
