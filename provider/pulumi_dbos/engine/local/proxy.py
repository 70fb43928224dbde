"""An app's stable port: a small TCP proxy in front of whichever process serves the app now.

Run as ``python3 proxy.py LISTEN_PORT TARGET_FILE READY_FILE [HOST]`` (standard library only: the engine copies this
file next to the apps and runs it with the apps' interpreter, as the apps' OS user). Each new
connection goes to the port written in ``TARGET_FILE``; a deploy starts the new version on its own
port, waits until it is healthy, rewrites the file (atomically), then stops the old process — so
clients of the app's port see no gap. Connections already open finish on the old process.
It listens on 127.0.0.1, and on ``HOST`` too when given.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys


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


async def main(listen: int, target_file: str, ready_file: str, host: str | None = None) -> None:
    async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        port = _target(target_file)
        if port is None:
            client_w.close()
            return
        try:
            up_r, up_w = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            client_w.close()
            return
        await asyncio.gather(_pipe(client_r, up_w), _pipe(up_r, client_w))

    hosts: str | list[str] = ["127.0.0.1", host] if host else "127.0.0.1"  # duplicates are bound once
    server = await asyncio.start_server(handle, hosts, listen, reuse_address=True)
    with open(ready_file, "w") as fh:  # the port is ours: the engine waits for this
        fh.write(str(os.getpid()))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


if __name__ == "__main__":
    os.umask(0o077)
    asyncio.run(main(int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4] if len(sys.argv) > 4 else None))
