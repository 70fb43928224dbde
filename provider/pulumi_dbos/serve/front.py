"""Connections: no client holds serve's connections without sending requests, none holds more than its share.

uvicorn counts every open connection against ``--max-connections`` (``limit_concurrency``: beyond it every
request is answered 503) and never times out one that has not sent a request yet: one client opening
``--max-connections`` connections and sending nothing turned everyone else away for as long as it liked.
:func:`guarded_protocol` is uvicorn's own HTTP/1.1 protocol (h11) with two rules added:

- **a request's headers within ``--request-timeout``** (default 15 s): a connection that has sent no
  complete request head by then — after it opened, or after its previous response — is closed (a slow drip
  of bytes does not extend it; uvicorn's 5 s keep-alive timer restarts on every byte). A request's body is
  not timed (a deploy's 32 MiB on a slow link), it is capped (``--max-body-mib``).
- **``--max-client-connections`` per client address** (default a quarter of ``--max-connections``): one more
  is answered 429 naming the flag and closed, before it counts; so one address cannot fill
  ``--max-connections``, and the others' requests go on being answered.

What it does not cover: TCP connections that never finish the TLS handshake are not HTTP connections yet
(uvicorn does not see them, and they count against no limit); asyncio closes them after 60 s. Many
addresses together (a botnet, several organizations colluding) can still fill ``--max-connections``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import Counter

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger("pulumi_dbos.serve")


def _refusal(per_client: int) -> bytes:
    body = json.dumps({"message": f"too many connections from this address (more than {per_client}, this server's "
                                  "--max-client-connections): close some and retry", "statusCode": 429}).encode()
    head = (f"HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
            "retry-after: 1\r\nconnection: close\r\n\r\n")
    return head.encode() + body


def guarded_protocol(per_client: int, request_timeout: float) -> type[H11Protocol]:
    """uvicorn's h11 protocol with a per-address cap and a request-head timeout (see the module docstring)."""
    open_by_address: Counter[str] = Counter()
    refusal = _refusal(per_client)

    class Guarded(H11Protocol):
        _address: str | None = None
        _head_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            address = self.client[0] if self.client else ""
            if open_by_address[address] >= per_client:
                self.connections.discard(self)  # never counted against --max-connections
                log.warning("refused a connection from %s: it holds %d already (--max-client-connections)",
                            address, per_client)
                transport.write(refusal)
                transport.close()
                return
            self._address = address
            open_by_address[address] += 1
            self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            if self._address is not None:
                open_by_address[self._address] -= 1
                if open_by_address[self._address] <= 0:
                    del open_by_address[self._address]
                self._address = None
            super().connection_lost(exc)

        def handle_events(self) -> None:
            super().handle_events()
            if self.conn.their_state is not h11.IDLE:  # a request's head arrived: its handling is not timed
                self._disarm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm()  # the next request's head, in its turn

        def _arm(self) -> None:
            self._disarm()
            self._head_timer = self.loop.call_later(request_timeout, self._head_timeout)

        def _disarm(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _head_timeout(self) -> None:
            self._head_timer = None
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                self.transport.close()

    return Guarded
