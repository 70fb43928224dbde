"""The one place that runs subprocesses.

Argument lists only (never a shell), a timeout on every call, an explicit and
minimal environment, optional switch to an unprivileged user, and output that is
masked before it can reach an error message.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import subprocess
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from ..errors import CommandError

DEFAULT_TIMEOUT = 120.0

_BASE_ENV_KEYS = ("PATH", "LANG", "LC_ALL", "TZ", "HOME")


@dataclass(frozen=True)
class RunAs:
    """An OS user to run a command as (``None`` fields = the current user)."""

    user: str | None = None

    @property
    def uid(self) -> int:
        return os.getuid() if self.user is None else pwd.getpwnam(self.user).pw_uid

    @property
    def gid(self) -> int:
        return os.getgid() if self.user is None else pwd.getpwnam(self.user).pw_gid

    @property
    def home(self) -> str:
        return pwd.getpwuid(self.uid).pw_dir

    @property
    def name(self) -> str:
        return pwd.getpwuid(self.uid).pw_name


def mask(text: str, secrets: Iterable[str | None]) -> str:
    for s in secrets:
        if s:
            text = text.replace(s, "[secret]")
    return text


def clean_env(extra: Mapping[str, str] | None = None, *, run_as: RunAs | None = None) -> dict[str, str]:
    """A minimal environment: no inherited secrets (PGPASSWORD, PULUMI_*...)."""
    env = {k: os.environ[k] for k in _BASE_ENV_KEYS if k in os.environ}
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    env["LC_ALL"] = "C.UTF-8"
    env["LANG"] = "C.UTF-8"
    if run_as is not None and run_as.user is not None:
        env["HOME"] = run_as.home
        env["USER"] = env["LOGNAME"] = run_as.name
    if extra:
        env.update(extra)
    return env


def spawn(argv: list[str], *, run_as: RunAs | None = None, env: Mapping[str, str], cwd: str | os.PathLike[str],
          log: str | os.PathLike[str], pass_fds: tuple[int, ...] = ()) -> int:
    """Start a long-running ``argv`` in its own session (it outlives the caller), output appended to
    ``log``; return its pid. The environment is exactly ``env`` (keep secrets out of it); ``pass_fds`` stay
    open in it (the sandbox's environment descriptor)."""
    switch = run_as is not None and run_as.user is not None and os.geteuid() == 0
    with open(log, "ab") as out:
        p = subprocess.Popen(  # noqa: S603 - argument list, no shell
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=dict(env), cwd=cwd,
            start_new_session=True, close_fds=True, pass_fds=pass_fds,
            user=run_as.uid if switch and run_as else None, group=run_as.gid if switch and run_as else None,
            extra_groups=[] if switch else None)
    with _children_lock:
        _children.append(p)
    return p.pid


_children: list[subprocess.Popen[bytes]] = []
_children_lock = threading.Lock()  # a provider runs its resources' calls in parallel threads


def reap() -> None:
    """Collect exited children started by :func:`spawn` (no zombies in a long-lived caller); safe from any
    number of threads at once (``pulumi up --parallel``: two provisions refilling the pool together once
    both removed the same child)."""
    with _children_lock:
        _children[:] = [p for p in _children if p.poll() is None]


def run(
    argv: list[str],
    *,
    timeout: float = DEFAULT_TIMEOUT,
    run_as: RunAs | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    check: bool = True,
    secrets: Iterable[str | None] = (),
    hint: str | None = None,
    input_text: str | None = None,
    pass_fds: tuple[int, ...] = (),
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` to completion; raise :class:`CommandError` on failure/timeout. ``pass_fds`` stay open in
    it."""
    switch = run_as is not None and run_as.user is not None and os.geteuid() == 0
    try:
        cp = subprocess.run(  # noqa: S603 - argument list, no shell
            argv,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=dict(env) if env is not None else clean_env(run_as=run_as),
            cwd=cwd,
            input=input_text,
            stdin=None if input_text is not None else subprocess.DEVNULL,
            check=False,
            pass_fds=pass_fds,
            user=run_as.uid if switch and run_as else None,
            group=run_as.gid if switch and run_as else None,
            extra_groups=[] if switch else None,
        )
    except subprocess.TimeoutExpired as exc:
        out = (exc.stdout or b"") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        text = out.decode(errors="replace") if isinstance(out, bytes) else out
        raise CommandError(argv, None, mask(text, secrets) + f"\n(deadline {timeout:.0f}s)", hint=hint) from None
    except FileNotFoundError as exc:
        raise CommandError(argv, 127, str(exc), hint=hint or "is the program installed and on PATH?") from None
    if check and cp.returncode != 0:
        raise CommandError(argv, cp.returncode, mask(cp.stdout + cp.stderr, secrets), hint=hint)
    return cp


def kill_under(path: os.PathLike[str] | str, timeout: float = 10) -> None:
    """Kill every process working in ``path`` (its working directory is there: a server, an app) or on it (an
    argument names it or a path under it: a copy, a recovering ``pg_ctl``), whatever any record says (a
    create or deploy killed midway), and wait until they are gone (one still writing would make the
    directory's removal fail)."""
    import psutil

    base = os.path.realpath(path)
    given = str(path)
    victims = []
    for p in psutil.process_iter(["cwd", "cmdline"]):
        with contextlib.suppress(psutil.Error):
            cwd = p.info["cwd"] or ""
            args = p.info["cmdline"] or ()
            if cwd == base or cwd.startswith(base + "/") or any(
                    a in (given, base) or a.startswith((given + "/", base + "/")) for a in args):
                p.kill()
                victims.append(p)
    psutil.wait_procs(victims, timeout=timeout)
    reap()
