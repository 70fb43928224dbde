"""An HA instance's stable endpoint: 127.0.0.1:<the instance's port> (and the listen host) always reaching its
current primary, so every URL the engine hands out (outputs, `db connect`, bound apps' ``DBOS_DATABASE_URL``)
stays one ``host:port`` and follows failovers and switchovers.

Run as ``python3 endpoint.py LISTEN_PORT MEMBERS_FILE READY_FILE [HOST]`` (standard library only).
``MEMBERS_FILE``: JSON ``[[address, pg_port, patroni_api_url], ...]``, re-read when it changes (members added
or removed). It asks each member's Patroni ``GET /patroni``, each member on its own (a dead host's
timeout never delays the answers of the others), every 1 s while all is settled and every 50 ms while it is
not (no primary, a member not running or not answering: a failover or switchover under way, whose new primary
is then seen within ~50 ms), and takes as primary the running ``primary`` with the highest timeline among the
latest answers (an old primary cut off may still say primary until its lock expires: its timeline is the older
one). A connection arriving while no primary is known is held (retried every 20 ms, up to ``HOLD_SECONDS``)
instead of refused: a client sees a failover as a slow connect. When the primary changes, connections to the
old one are closed: nothing keeps writing to a demoted server. Each change is logged (``<unix time> primary
<address:port>``).

Chosen over libpq's multi-host URL (``?host=a:p&host=b:p&target_session_attrs=read-write``, which DBOS
Transact 3.x accepts in the query form): the same gap on failover in this engine's measurement (see
docs/design/high-availability.md), one ``host:port`` for every client (the CLI's URL, ``psql``, apps
that do not speak libpq's multi-host form, a port move), and no connection attempts to dead hosts (libpq tries
each host in turn, with ``connect_timeout`` each, when one is black-holed).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
import time
import urllib.request

#: settled: each poll costs the member's Patroni a query of its PostgreSQL (~9% of a core per 3-member instance at
#: 0.2 s); a change under way is noticed within 1 s (a member stops answering or running), and then polled fast
#: well before its new primary is up (a switchover's promotion ends ~2.5 s after it began)
POLL_SECONDS = 1.0
FAST_POLL_SECONDS = 0.05
ASK_TIMEOUT = 0.5
HOLD_SECONDS = 60.0


class State:
    def __init__(self, members_file: str) -> None:
        self.members_file = members_file
        self.members: list[tuple[str, int, str]] = []
        self.mtime = 0.0
        self.primary: tuple[str, int] | None = None
        self.answers: dict[tuple[str, int, str], dict[str, object]] = {}  #: each member's latest ``/patroni``
        self.conns: set[tuple[tuple[str, int], asyncio.StreamWriter, asyncio.StreamWriter]] = set()

    def reload(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            mtime = os.stat(self.members_file).st_mtime
            if mtime != self.mtime:
                with open(self.members_file) as fh:
                    self.members = [(str(a), int(p), str(u)) for a, p, u in json.load(fh)]
                self.mtime = mtime


def _ask(url: str) -> dict[str, object]:
    try:
        with urllib.request.urlopen(url + "/patroni", timeout=ASK_TIMEOUT) as r:  # noqa: S310 - the instance's members
            body = json.loads(r.read())
            return body if isinstance(body, dict) else {}
    except Exception:
        return {}


def _settled(state: State) -> bool:
    """A primary known and every member answering ``running``: nothing under way."""
    return state.primary is not None and len(state.answers) == len(state.members) and all(
        a.get("state") == "running" for a in state.answers.values())


def decide(state: State) -> None:
    """The primary from the latest answers; on a change, the connections to any other server closed."""
    best: tuple[int, tuple[str, int]] | None = None
    for (addr, port, _), a in list(state.answers.items()):
        if a.get("role") in ("primary", "master") and a.get("state") == "running":
            tl = int(str(a.get("timeline") or 0))
            if best is None or tl > best[0]:
                best = (tl, (addr, port))
    new = best[1] if best else None
    if new != state.primary:
        state.primary = new
        shown = f"{new[0]}:{new[1]}" if new else "none"
        print(f"{time.time():.3f} primary {shown}", flush=True)
        for target, cw, uw in list(state.conns):
            if target != new:  # nothing keeps talking to a server that is no longer the primary
                for w in (cw, uw):
                    with contextlib.suppress(Exception):
                        w.close()


async def poll(state: State, member: tuple[str, int, str]) -> None:
    """One member's answers, for as long as it is a member."""
    loop = asyncio.get_running_loop()
    while member in state.members:
        answer = await loop.run_in_executor(None, _ask, member[2])
        if member not in state.members:
            break
        state.answers[member] = answer
        decide(state)
        await asyncio.sleep(POLL_SECONDS if _settled(state) else FAST_POLL_SECONDS)
    state.answers.pop(member, None)
    decide(state)


async def watch(state: State) -> None:
    pollers: dict[tuple[str, int, str], asyncio.Task[None]] = {}
    while True:
        state.reload()
        for m in state.members:
            if m not in pollers or pollers[m].done():
                pollers[m] = asyncio.ensure_future(poll(state, m))
        for m in [m for m in pollers if m not in state.members]:
            pollers.pop(m)
        await asyncio.sleep(1)


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


async def _upstream(state: State) -> tuple[tuple[str, int], asyncio.StreamReader, asyncio.StreamWriter] | None:
    deadline = time.monotonic() + HOLD_SECONDS
    while time.monotonic() < deadline:
        target = state.primary
        if target is not None:
            with contextlib.suppress(OSError, asyncio.TimeoutError):
                r, w = await asyncio.wait_for(asyncio.open_connection(*target), 2)
                return target, r, w
        await asyncio.sleep(0.02)
    return None


async def main(listen: int, members_file: str, ready_file: str, host: str | None) -> None:
    state = State(members_file)

    async def handle(cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        up = await _upstream(state)
        if up is None:
            cw.close()
            return
        target, ur, uw = up
        entry = (target, cw, uw)
        state.conns.add(entry)
        try:
            await asyncio.gather(_pipe(cr, uw), _pipe(ur, cw))
        finally:
            state.conns.discard(entry)

    socks = []
    for h in dict.fromkeys(["127.0.0.1", *([host] if host else [])]):
        s = socket.socket(socket.AF_INET6 if ":" in h else socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((h, listen))
        s.listen(256)
        socks.append(s)
    servers = [await asyncio.start_server(handle, sock=s) for s in socks]
    watcher = asyncio.ensure_future(watch(state))
    with open(ready_file, "w") as fh:
        fh.write(str(os.getpid()))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    watcher.cancel()
    for server in servers:
        server.close()


if __name__ == "__main__":
    os.umask(0o077)
    asyncio.run(main(int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4] if len(sys.argv) > 4 else None))
