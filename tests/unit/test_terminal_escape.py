"""cli/terminal.py: what the CLI prints never drives the terminal (issue 31, item 5; the attack itself is
tests/security/test_terminal.py)."""

from __future__ import annotations

import io

import pytest

from pulumi_dbos.cli import main
from pulumi_dbos.cli.terminal import Escaping, escape_controls


def test_controls_are_escaped_newline_and_tab_kept() -> None:
    assert escape_controls("a\tb\nc") == "a\tb\nc"
    assert escape_controls("\x1b]0;t\x07") == "\\x1b]0;t\\x07"
    assert escape_controls("\r\x00\x7f\x9b\u202e") == "\\x0d\\x00\\x7f\\x9b\\u202e"
    assert escape_controls("héllo ✓") == "héllo ✓"


def test_escaping_stream_delegates() -> None:
    inner = io.StringIO()
    out = Escaping(inner)
    assert out.write("\x1b[2J") == 4
    out.flush()
    assert inner.getvalue() == "\\x1b[2J"


def test_error_messages_are_escaped(capsys: pytest.CaptureFixture[str]) -> None:
    """An error's text (a server's or an app's) reaches stderr escaped too."""
    code = main(["db", "status", "x\x1b]52;c;AAAA\x07", "--data-dir", "/nonexistent-\x1b[2J"])
    err = capsys.readouterr().err
    assert code == 1 and "\x1b" not in err and "\\x1b" in err, err
