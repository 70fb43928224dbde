"""What the CLI prints never drives the terminal it is printed on.

App logs, drill reasons and error messages carry text an app or a server chose; written raw, an escape
sequence in it sets the window title, clears the screen, rewrites the line before it (a forged "deploy OK"),
or writes the clipboard (OSC 52). Every command but ``serve`` (a daemon: its log is a file or the journal)
prints through :class:`Escaping` streams: each control character but newline and tab is shown as its
``\\xNN`` (C0, DEL, C1) or ``\\uNNNN`` (bidirectional overrides, which reorder what a line shows) escape.
``app logs --raw`` prints the log as it is.
"""

from __future__ import annotations

import contextlib
import re
import sys
from collections.abc import Iterator
from typing import TextIO

#: C0 controls but tab and newline, DEL, C1 controls (CSI is \x9b on its own), bidirectional overrides
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def _escape(m: re.Match[str]) -> str:
    c = ord(m.group())
    return f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}"


def escape_controls(text: str) -> str:
    """``text`` with every control character but ``\\n`` and ``\\t`` written as its escape."""
    return _CONTROL.sub(_escape, text)


class Escaping:
    """A text stream writing through ``inner`` with :func:`escape_controls` applied (the rest delegated)."""

    def __init__(self, inner: TextIO) -> None:
        self._inner = inner

    def write(self, text: str) -> int:
        self._inner.write(escape_controls(text))
        return len(text)

    def writelines(self, lines: list[str]) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, attr: str) -> object:
        return getattr(self._inner, attr)


@contextlib.contextmanager
def escaped(enabled: bool = True) -> Iterator[None]:
    """``sys.stdout`` and ``sys.stderr`` escaping control characters while inside (when ``enabled``)."""
    if not enabled:
        yield
        return
    out, err = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = Escaping(out), Escaping(err)  # type: ignore[assignment]
    try:
        yield
    finally:
        sys.stdout, sys.stderr = out, err
