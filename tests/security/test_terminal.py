"""Issue 31, item 5: an app's log never drives the operator's terminal.

Alpha's app writes to its log what a hostile tenant would: a window title, a clear screen, a carriage return
and a forged green "deploy OK" over the line before it, an OSC 52 clipboard write, a bell, an 8-bit CSI. The
operator reads the log with ``pulumi-dbos app logs`` (the real CLI, against serve, as DBOS Cloud's own CLI
would): no control character but newline and tab reaches its output, each is shown escaped; ``--raw``
prints the log as it is.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from tests.security.conftest import Tenants

MARK = "tenant-says"
#: what the app writes (after MARK); the escapes the CLI must show in its place
ATTACK = ("\x1b]0;pwned-title\x07" "\x1b[2J\x1b[H" "\r\x1b[32mdeploy OK\x1b[0m"
          "\x1b]52;c;cm0gLXJmIH4K\x07" "\x07" "\x9b31m" "\x1bP+q\x1b\\")


def app_logs(t: Tenants, cwd: Path, *extra: str) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "DBOS_CLOUD_TOKEN": t.serve.token("alpha", "mallory")}
    env.pop("PULUMI_DBOS_ENGINE", None)
    return subprocess.run(  # noqa: S603 - argument list
        [sys.executable, "-m", "pulumi_dbos.cli", "app", "logs", "shell", "--engine", "dbos-cloud",
         "--cloud-domain", t.serve.domain, "--cloud-ca-cert", str(t.serve.ca_cert), "-n", "400", *extra],
        capture_output=True, timeout=120, cwd=cwd, env=env, check=False)


def test_app_logs_escape_control_sequences(tenants: Tenants, tmp_path: Path) -> None:
    tenants.run(f"import os\nos.write(1, {(MARK + ATTACK + chr(10)).encode()!r})\n"
                f"os.write(2, {(MARK + '-err' + ATTACK + chr(10)).encode()!r})\n")
    deadline = time.monotonic() + 30
    while True:
        cp = app_logs(tenants, tmp_path)
        assert cp.returncode == 0, cp.stderr.decode(errors="replace")
        if cp.stdout.count(MARK.encode()) >= 2 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    out = cp.stdout
    assert out.count(MARK.encode()) >= 2, out[-2000:]
    for raw in (b"\x1b", b"\x07", b"\r", "\x9b".encode()):
        assert raw not in out, f"{raw!r} reached the terminal: {out[-600:]!r}"
    text = out.decode()
    assert "\\x1b]0;pwned-title\\x07" in text and "\\x1b]52;c;cm0gLXJmIH4K\\x07" in text, text[-1200:]
    assert "\\x1b[32mdeploy OK" in text and "\\x9b31m" in text  # (the log's reader turns \r into a newline)
    assert text.count("\n") >= 2  # newlines stay newlines

    raw_cp = app_logs(tenants, tmp_path, "--raw")
    assert raw_cp.returncode == 0, raw_cp.stderr.decode(errors="replace")
    assert b"\x1b]0;pwned-title\x07" in raw_cp.stdout and b"\x1b]52;c;cm0gLXJmIH4K\x07" in raw_cp.stdout
