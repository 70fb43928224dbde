"""One deadline loop for every wait of the engines (server start, archiving, recovery, shutdown).

Dynamic providers get no timeouts from Pulumi, so every wait has its own deadline and an error
naming what did not happen.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from ..errors import TimeoutExpired

T = TypeVar("T")


def wait_until(predicate: Callable[[], T], timeout: float, what: str, *, hint: str | None = None,
               interval: float = 0.05, raise_on_timeout: bool = True) -> T | None:
    """Call ``predicate`` until it returns something truthy (returned) or ``timeout`` seconds pass.

    ``predicate`` may raise to give up early (a server that died will never become ready). On
    timeout: :class:`TimeoutExpired` saying ``what`` did not happen, or None when
    ``raise_on_timeout`` is False (best-effort waits in clean-ups).
    """
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            if not raise_on_timeout:
                return None
            raise TimeoutExpired(f"{what} within {timeout:.0f}s", hint=hint)
        time.sleep(interval)
