"""A member's Patroni under a reaper: ``python3 reaper.py PATRONI_ARGV...`` (standard library only, Linux).

Patroni starts PostgreSQL through a short-lived intermediate process, so the postmaster is an orphan: its
parent is whatever reaps orphans, normally init (systemd on a real host, or Patroni itself when it is a
container's PID 1). Until that reaps it, a postmaster that has exited is a zombie, which Patroni (psutil's
``is_running``) takes for a running server: a switchover's demote keeps the leader key while it waits for the
old primary's zombie, and a killed postmaster is not noticed. On this kind of machine init may reap late (tens
of seconds have been seen), so the engine runs each member's Patroni under this process: a *child subreaper*
(``PR_SET_CHILD_SUBREAPER``: the orphans of its descendants become its children) that reaps at once, like
systemd on a real host. It forwards the stop signals to Patroni and exits with it; Patroni dies with it
(``PR_SET_PDEATHSIG``), as when Patroni itself was killed.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)


def main(argv: list[str]) -> int:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        print(f"reaper: prctl(PR_SET_CHILD_SUBREAPER) failed: errno {ctypes.get_errno()}", file=sys.stderr)
    me = os.getpid()
    child = os.fork()
    if child == 0:
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != me:  # the reaper died before the line above
            os._exit(1)
        os.execvp(argv[0], argv)

    def forward(signo: int, _frame: object) -> None:
        try:
            os.kill(child, signo)
        except ProcessLookupError:
            pass

    for s in FORWARDED:
        signal.signal(s, forward)
    while True:
        try:
            pid, status = os.wait()  # any child: Patroni, or an orphan of its (a postmaster) that exited
        except ChildProcessError:
            return 1
        if pid == child:
            code = os.waitstatus_to_exitcode(status)
            return code if code >= 0 else 128 - code  # killed by a signal: as a shell says it


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
