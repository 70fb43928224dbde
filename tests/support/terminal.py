"""Run a command in a pseudo-terminal and answer its prompts, as a person at a terminal does.

The pulumi CLI asks its questions (`pulumi new`'s project name and config, `pulumi up`'s "Do you want to
perform this update?") only on a terminal; tests that follow the README literally drive it through one.
"""

from __future__ import annotations

import os
import pty
import re
import select
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

ANSI = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Z0-9]|\r")

Answer = str | Callable[[], str]


@dataclass
class Session:
    """The transcript (escape sequences and carriage returns removed) and the exit code."""

    text: str = ""
    code: int | None = None
    answered: list[str] = field(default_factory=list)


def run(argv: Sequence[str], *, cwd: Path, env: dict[str, str], prompts: Sequence[tuple[str, Answer]],
        timeout: float, quiet: float = 180) -> Session:
    """Run ``argv`` on a pty; each time the next prompt's text appears, type its answer (a callable is called
    first: a check the test makes at that moment, returning what to type). Prompts are answered in order; the
    process group is killed at the deadline, after ``quiet`` seconds without output (it waits on a question
    nobody answers) or on any error."""
    master, slave = pty.openpty()
    p = subprocess.Popen(list(argv), cwd=cwd, env=env, stdin=slave, stdout=slave, stderr=slave,  # noqa: S603
                         start_new_session=True, close_fds=True)
    os.close(slave)
    out, pending, seen = Session(), list(prompts), b""
    deadline = time.monotonic() + timeout
    last = time.monotonic()
    try:
        while True:
            now = time.monotonic()
            if now > deadline or now - last > quiet:
                raise TimeoutError(f"{argv[0]} still running ({now - last:.0f}s without output); its output:\n"
                                   f"{out.text[-4000:]}")
            ready, _, _ = select.select([master], [], [], 0.5)
            if not ready:
                if p.poll() is not None:
                    break
                continue
            last = time.monotonic()
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the other side closed
                break
            if not chunk:
                break
            clean = ANSI.sub(b"", chunk)
            seen += clean
            out.text += clean.decode(errors="replace")
            while pending and pending[0][0].encode() in seen:
                text, answer = pending.pop(0)
                seen = seen[seen.index(text.encode()) + len(text):]
                typed = answer() if callable(answer) else answer
                time.sleep(0.3)  # the prompt finishes drawing before it reads
                os.write(master, typed.encode())
                out.answered.append(text)
        out.code = p.wait(timeout=max(deadline - time.monotonic(), 1))
        return out
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
        os.close(master)
