"""The sandbox of every piece of tenant code: app processes, their migrations, their environment builds.

As root, tenant code runs under **bubblewrap** (Debian's ``bubblewrap``; ``bwrap`` is the tool Flatpak
uses, kept up to date by distributions — preferred over hand-made namespace code), then drops to the
app's OS user with ``setpriv`` and lowers its own limits with ``prlimit`` (both util-linux)::

    [cgroup entry] bwrap <namespaces, mounts> -- setpriv <uid, gid, no groups, no caps, no_new_privs>
                   -- prlimit <nproc, nofile, core[, as]> -- launcher <env fd> -- ARGV

- **Environment**: the app's (its secrets among it) is in no root process's: the trampoline and ``bwrap`` get a
  fixed minimal one, and the app's reaches the launcher, the last step, as a sealed in-memory file
  (``memfd``) it reads as the app's user and closes before it execs ``ARGV`` (issue 31: a tenant's
  ``LD_PRELOAD`` ran its library as root in ``bwrap``). Names are checked first (``config.rules.check_env``).

- **Namespaces**: PID (sees only its own processes), IPC, UTS; for apps, migrations and builds (:class:`Net`)
  a network namespace of the sandbox's own, made by the trampoline of :mod:`.netgate`: only ``lo``, the
  app's port relayed in from the host's 127.0.0.1 and its database's relayed out (issue 31: in the host's
  network a tenant took other organizations' ports, exhausted the engine's ranges, reached root's abstract
  sockets). The apps' proxies (our code, on their stable ports) stay in the host's network.
- **Mounts**: a fresh root holding only ``/usr`` (and its ``/bin``, ``/lib*`` links), ``/etc``
  read-only, a new ``/proc`` and ``/dev``, a private ``/tmp``, and the binds the caller names
  (:class:`Bind`): the release and its environment read-only, the app's home writable. The data
  dir, other organizations, serve's state, ``/root``, ``/home``, ``/var`` do not exist inside.
- **User**: the app's OS user (one per organization under serve), no supplementary groups, every
  capability dropped (bounding set too), ``no_new_privs`` (setuid binaries cannot raise it).
- **Limits**: memory (``ExecutorsMemoryMib``) and a task cap per process through cgroups — v2 where
  ``/sys/fs/cgroup`` is the unified hierarchy, else v1's ``memory`` and ``pids`` controllers — entered
  before ``bwrap`` runs (the trampoline below writes its own pid to ``cgroup.procs``, then runs it), so
  nothing escapes them; ``RLIMIT_NPROC`` per OS user (so per organization) always; where no memory
  cgroup can be made, ``RLIMIT_AS`` instead, and a warning is logged once.
- A trampoline is the sandbox's parent (``--die-with-parent``; not the deploying process, which may
  be a provider process or a request thread that ends long before the app): killing it (the pid the
  catalog records) ends the whole sandbox, SIGTERM reaches the app for a graceful stop, and what is
  left in the app's cgroups is killed after a stop.

Not root (a user running the local engine for themselves): tenant code is the user's own, it runs
as the user without a sandbox.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ...errors import EngineError
from .. import proc, settings

log = logging.getLogger("pulumi_dbos.sandbox")

# tasks of one sandboxed tree (pids cgroup) and of one OS user (RLIMIT_NPROC): settings.app_max_tasks/_procs
MAX_FILES = 4096
CGROUP_NAME = "pulumi-dbos"


def _cgroup_root() -> Path:
    return settings.from_env().cgroup_root

#: the trampoline, the sandbox's parent: enter the cgroups named before ``--``, run the rest as a child,
#: pass SIGTERM/SIGINT/SIGHUP on to it, exit with its status. ``bwrap --die-with-parent`` ties the
#: sandbox to it: killing the trampoline (the pid the catalog records) ends everything inside.
_ENTER = """import os, signal, sys
a = sys.argv[1:]
i = a.index('--')
for p in a[:i]:
    with open(p, 'w') as f:
        f.write(str(os.getpid()))
pid = os.fork()
if pid == 0:
    os.execv(a[i + 1], a[i + 1:])
def fwd(s, _f):
    try:
        os.kill(pid, s)
    except OSError:
        pass
for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
    signal.signal(s, fwd)
_, st = os.waitpid(pid, 0)
code = os.waitstatus_to_exitcode(st)
os._exit(code if code >= 0 else 128 - code)
"""


#: the launcher, the last step inside the sandbox, run as the app's user once every privilege is gone: read the
#: environment (``NAME=value`` NUL-separated) from the descriptor named first, close it, exec the rest with
#: exactly that environment (its ``PATH`` finds the program). Nothing before it (the trampoline, ``bwrap``,
#: ``setpriv``, ``prlimit``: root until ``setpriv``) has the app's environment: ``LD_PRELOAD``, ``GCONV_PATH``
#: and the like of a tenant would otherwise run its code as root (issue 31).
_LAUNCH = """import os, sys
fd = int(sys.argv[1])
chunks = []
while True:
    b = os.read(fd, 65536)
    if not b:
        break
    chunks.append(b)
os.close(fd)
env = dict(kv.split('=', 1) for kv in b''.join(chunks).decode('utf-8', 'surrogateescape').split('\\0') if kv)
a = sys.argv[3:]
os.execvpe(a[0], a, env)
"""
#: the environment of the trampoline and of ``bwrap`` (root): nothing of the app's
_ROOT_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}


def env_fd(env: Mapping[str, str]) -> int:
    """A sealed in-memory file holding ``env`` for :data:`_LAUNCH` (the caller closes it). Never a file on disk:
    nothing to clean, nothing another process could open by path."""
    for k, v in env.items():
        if "=" in k or "\0" in k or "\0" in v:
            raise EngineError(f"environment variable {k!r} cannot be handed to the app (a NUL, or = in its name)")
    fd = os.memfd_create("pulumi-dbos-env", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        data = b"".join(f"{k}={v}".encode("utf-8", "surrogateescape") + b"\0" for k, v in env.items())
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        import fcntl

        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW
                    | fcntl.F_SEAL_WRITE)
        os.lseek(fd, 0, os.SEEK_SET)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _inside_python() -> str:
    from .runtime import app_python  # runtime imports this module

    return app_python()


@dataclass(frozen=True)
class Net:
    """A network namespace of the sandbox's own (:mod:`.netgate`): only ``lo``. ``inbound``: ports of the host's
    127.0.0.1 relayed to the same port inside (the app's backend port); ``outbound``: ``(port inside, host,
    port)``, a port of the namespace's 127.0.0.1 relayed to ``host:port`` outside (its database); ``connect``:
    ``(port inside, hosts)``, an HTTPS ``CONNECT`` proxy to those hosts only (a build's package index)."""

    inbound: tuple[int, ...] = ()
    outbound: tuple[tuple[int, str, int], ...] = ()
    connect: tuple[int, tuple[str, ...]] | None = None

    def args(self) -> list[str]:
        out = [a for port in self.inbound for a in ("--in", str(port))]
        out += [a for port, host, remote in self.outbound for a in ("--out", f"{port}=[{host}]:{remote}")]
        if self.connect:
            out += ["--connect", f"{self.connect[0]}={','.join(self.connect[1])}"]
        return out


NETGATE = Path(__file__).with_name("netgate.py")


@dataclass(frozen=True)
class Bind:
    """``host`` mounted at ``inside`` (read-only unless ``writable``)."""

    host: Path
    inside: str
    writable: bool = False


def bwrap() -> str | None:
    return shutil.which("bwrap")


def enabled() -> bool:
    """Whether tenant code is sandboxed here (as root; ``bwrap`` missing is an error, not a fallback)."""
    return os.geteuid() == 0


def require() -> str:
    path = bwrap()
    if path is None:
        raise EngineError("bubblewrap (`bwrap`) is not installed: apps run in its sandbox when the engine runs as "
                          "root", hint="the set-up installs it (`apt-get install bubblewrap`)")
    return path


# ---------------------------------------------------------------- cgroups
_warned: set[str] = set()


def _warn_once(what: str) -> None:
    if what not in _warned:
        _warned.add(what)
        log.warning("%s", what)


@dataclass(frozen=True)
class Limits:
    memory_mib: int | None = None
    tasks: int = field(default_factory=lambda: settings.from_env().app_max_tasks)


def _cgroup_dirs(unit: str) -> dict[str, Path] | None:
    """The cgroup directories for ``unit`` (created), by controller: ``{"memory": ..., "pids": ...}``;
    None when no cgroup can be made here (the rlimit fallback)."""
    if _cgroup_root().joinpath("cgroup.controllers").is_file():  # v2, unified
        base = _cgroup_root() / CGROUP_NAME
        try:
            base.mkdir(exist_ok=True)
            controllers = set(_cgroup_root().joinpath("cgroup.controllers").read_text().split())
            want = {"memory", "pids"} & controllers
            for parent in (_cgroup_root(), base):
                with contextlib.suppress(OSError):
                    parent.joinpath("cgroup.subtree_control").write_text(" ".join(f"+{c}" for c in sorted(want)))
            d = base / unit
            d.mkdir(exist_ok=True)
            return {c: d for c in want} or None
        except OSError as exc:
            _warn_once(f"cgroups v2 not usable ({exc}): apps get rlimits instead of memory/task limits")
            return None
    dirs: dict[str, Path] = {}
    for controller in ("memory", "pids"):
        root = _cgroup_root() / controller
        if not root.joinpath("cgroup.procs").is_file():
            continue
        try:
            d = root / CGROUP_NAME / unit
            d.mkdir(parents=True, exist_ok=True)
            dirs[controller] = d
        except OSError as exc:
            _warn_once(f"cgroup v1 {controller} not usable ({exc})")
    if "memory" not in dirs:
        _warn_once("no memory cgroup can be made here: apps' memory is limited by RLIMIT_AS instead")
    return dirs or None


def _set_limits(dirs: dict[str, Path], limits: Limits) -> None:
    v2 = _cgroup_root().joinpath("cgroup.controllers").is_file()
    if "memory" in dirs and limits.memory_mib:
        b = str(limits.memory_mib * 1024 * 1024)
        dirs["memory"].joinpath("memory.max" if v2 else "memory.limit_in_bytes").write_text(b)
        if not v2:
            with contextlib.suppress(OSError):  # swap accounting may be off
                dirs["memory"].joinpath("memory.memsw.limit_in_bytes").write_text(b)
        else:
            with contextlib.suppress(OSError):
                dirs["memory"].joinpath("memory.swap.max").write_text("0")
    if "pids" in dirs:
        dirs["pids"].joinpath("pids.max").write_text(str(limits.tasks))


def unit_name(*parts: str) -> str:
    """A cgroup name for parts (user, app, port): characters a path component may hold."""
    return "/".join("".join(c if c.isalnum() or c in "._-" else "_" for c in p) for p in parts)


def release_unit(unit: str) -> None:
    """Remove ``unit``'s cgroups (once its processes are gone; a busy one is left for the next time)."""
    for controller in ("", "memory", "pids"):
        base = _cgroup_root() / controller / CGROUP_NAME if controller else _cgroup_root() / CGROUP_NAME
        d = base / unit
        with contextlib.suppress(OSError):
            d.rmdir()
        for parent in list(d.parents)[: unit.count("/")]:
            with contextlib.suppress(OSError):
                parent.rmdir()


def kill_units(prefix: str) -> None:
    """:func:`kill_unit` and :func:`release_unit` for every unit named ``prefix*`` (an app's processes,
    migrations and proxy when it is deleted)."""
    parent, _, start = prefix.rpartition("/")
    names: set[str] = set()
    for controller in ("", "memory", "pids"):
        base = _cgroup_root() / controller / CGROUP_NAME if controller else _cgroup_root() / CGROUP_NAME
        with contextlib.suppress(OSError):
            names |= {d.name for d in (base / parent).iterdir() if d.is_dir() and d.name.startswith(start)}
    for name in names:
        unit = f"{parent}/{name}" if parent else name
        kill_unit(unit)
        release_unit(unit)


def kill_unit(unit: str) -> None:
    """SIGKILL every process left in ``unit``'s cgroups (a deploy killed midway, a stop that timed out)."""
    import signal

    for controller in ("", "memory", "pids"):
        base = _cgroup_root() / controller / CGROUP_NAME if controller else _cgroup_root() / CGROUP_NAME
        with contextlib.suppress(OSError):
            for pid in (base / unit).joinpath("cgroup.procs").read_text().split():
                with contextlib.suppress(OSError):
                    os.kill(int(pid), signal.SIGKILL)


# ---------------------------------------------------------------- argv
def _root_binds() -> list[str]:
    args = ["--ro-bind", "/usr", "/usr"]
    for top in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        p = Path("/") / top
        if p.is_symlink():
            args += ["--symlink", os.readlink(p), str(p)]
        elif p.is_dir():
            args += ["--ro-bind", str(p), str(p)]
    return args + ["--ro-bind", "/etc", "/etc", "--proc", "/proc", "--dev", "/dev", "--perms", "1777", "--tmpfs",
                   "/tmp"]


def _parents(inside: str, made: set[str]) -> list[str]:
    args: list[str] = []
    parts = Path(inside).parts[1:-1]
    for i in range(len(parts)):
        d = "/" + "/".join(parts[: i + 1])
        if d not in made and not d.startswith(("/usr", "/etc", "/proc", "/dev", "/tmp")):
            made.add(d)
            args += ["--perms", "0755", "--dir", d]
    return args


def command(argv: Sequence[str], *, user: proc.RunAs, binds: Sequence[Bind], cwd: str,
            limits: Limits, unit: str | None, tmpfs: Sequence[str] = (), env_fd: int | None = None,
            net: Net | None = None) -> list[str]:
    """``argv`` wrapped in the sandbox (see the module docstring); ``unit`` names its cgroups; ``env_fd``: the
    descriptor (:func:`env_fd`) the launcher reads the app's environment from, once it runs as the app's user."""
    assert user.user is not None
    args = [require(), "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--die-with-parent", "--new-session",
            *_root_binds()]
    made: set[str] = set()
    for b in binds:
        args += _parents(b.inside, made)
        args += ["--bind" if b.writable else "--ro-bind", str(b.host), b.inside]
    for t in tmpfs:
        args += _parents(t, made)
        args += ["--perms", "0777", "--tmpfs", t]
    args += ["--chdir", cwd]
    dirs = _cgroup_dirs(unit) if unit else None
    if dirs:
        _set_limits(dirs, limits)
    rlimits = [f"--nproc={settings.from_env().app_max_procs}", f"--nofile={MAX_FILES}", "--core=0"]
    if limits.memory_mib and not (dirs and "memory" in dirs):
        rlimits.append(f"--as={limits.memory_mib * 1024 * 1024 * 4}")  # address space, not RSS: leave room
    args += ["--", "/usr/bin/setpriv", f"--reuid={user.uid}", f"--regid={user.gid}", "--clear-groups",
             "--no-new-privs", "--inh-caps=-all", "--bounding-set=-all", "--",
             "/usr/bin/prlimit", *rlimits, "--"]
    if env_fd is not None:
        args += [_inside_python(), "-I", "-S", "-c", _LAUNCH, str(env_fd), "--"]
    args += list(argv)
    procs = sorted({str(d / "cgroup.procs") for d in dirs.values()}) if dirs else []
    if net is not None:  # the trampoline that also makes the network namespace (issue 31)
        return [_trampoline_python(), "-I", "-S", str(NETGATE), *(a for p in procs for a in ("--procs", p)),
                *net.args(), "--uid", str(user.uid), "--gid", str(user.gid), "--", *args]
    return [_trampoline_python(), "-I", "-S", "-c", _ENTER, *procs, "--", *args]


def _trampoline_python() -> str:
    return sys.executable or "/usr/bin/python3"


def spawn(argv: Sequence[str], *, user: proc.RunAs, binds: Sequence[Bind], cwd: str, env: Mapping[str, str],
          host_cwd: Path, log_path: Path, limits: Limits, unit: str, net: Net | None = None) -> int:
    """A long-running sandboxed process (see :func:`proc.spawn`); its pid is the trampoline's. ``env`` reaches
    only the app (through :func:`env_fd`), never the root processes that set the sandbox up."""
    fd = env_fd(env)
    try:
        full = command(argv, user=user, binds=binds, cwd=cwd, limits=limits, unit=unit, env_fd=fd, net=net)
        return proc.spawn(full, env=_ROOT_ENV, cwd=host_cwd, log=log_path, pass_fds=(fd,))
    finally:
        os.close(fd)


def run(argv: Sequence[str], *, user: proc.RunAs, binds: Sequence[Bind], cwd: str, env: Mapping[str, str],
        host_cwd: Path, limits: Limits, unit: str, timeout: float, secrets: Sequence[str] = (),
        hint: str | None = None, check: bool = True, tmpfs: Sequence[str] = (),
        net: Net | None = None) -> subprocess.CompletedProcess[str]:
    """A sandboxed command to completion (see :func:`proc.run`); its cgroups (``unit`` and a suffix of this
    run's own: two runs of one unit at once, e.g. two data dirs building the same environment as the same
    user, must not remove each other's) are removed afterwards."""
    unit = f"{unit}.{os.getpid()}-{os.urandom(4).hex()}"
    fd = env_fd(env)
    try:
        full = command(argv, user=user, binds=binds, cwd=cwd, limits=limits, unit=unit, tmpfs=tmpfs, env_fd=fd,
                       net=net)
        return proc.run(full, env=_ROOT_ENV, cwd=host_cwd, timeout=timeout, secrets=secrets, hint=hint, check=check,
                        pass_fds=(fd,))
    finally:
        os.close(fd)
        kill_unit(unit)
        release_unit(unit)
