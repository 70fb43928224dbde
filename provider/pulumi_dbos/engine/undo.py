"""An undo stack: each step that makes something says at once how to unmake it (pglift's task/revert idea).

    with undoing() as undo:
        port = ports.allocate(...)
        undo.push(ports.release, port, data_dir, name)
        server.start(...)
        undo.push(server.kill, name)
        ...                      # any failure from here: kill, then release, then the failure as it was

On a failure the reverts run newest first, each best effort (one that fails is logged and never stops the
others), then the failure propagates unchanged. On success nothing is undone. :func:`revert_all` runs a
stack built after the fact (a create a crash cut short: its steps are known, not which of them ran).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

log = logging.getLogger("pulumi_dbos.engine")


class Undo:
    def __init__(self) -> None:
        self._reverts: list[tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]] = []

    def push(self, revert: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """``revert(*args, **kwargs)`` is how to unmake the step just done."""
        self._reverts.append((revert, args, kwargs))

    def run(self) -> None:
        """Every revert, newest first, each best effort."""
        while self._reverts:
            revert, args, kwargs = self._reverts.pop()
            try:
                revert(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - a revert that fails must not hide the others, nor the cause
                log.warning("undo: %s failed: %s", getattr(revert, "__qualname__", revert), exc)


@contextmanager
def undoing() -> Iterator[Undo]:
    undo = Undo()
    try:
        yield undo
    except BaseException:
        undo.run()
        raise


def revert_all(*reverts: tuple[Callable[..., Any], tuple[Any, ...]]) -> None:
    """Run ``reverts`` (given in the order their steps would have run) as an undo stack would."""
    undo = Undo()
    for revert, args in reverts:
        undo.push(revert, *args)
    undo.run()
