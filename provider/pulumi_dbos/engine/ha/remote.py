"""Real hosts: the engine's hosts when ``PULUMI_DBOS_HA_HOSTS`` names them, reached over SSH (no agent: see
docs/design/high-availability.md), and the lifetimes of the processes the engine starts there.

:class:`SshHosts` stands where :class:`~.hosts.Fabric` stands for simulated hosts (``members.fabric``): the same
``hosts``, ``networks``, ``ensure``, ``teardown``, but the hosts are the operator's: nothing is made or removed,
``ensure`` checks that every host can do its part and refuses with what is missing.

A process on a real host is started by ``ssh host [runuser|sudo -n] -u <cluster user> -- setsid -f sh -c 'cd DIR
&& echo $$ >pid && exec ARGV <>/dev/null >>log 2>&1'``: it runs in its own session on that host (the SSH
session ends at once and does not take it along), its pid is in ``DIR/pid`` *on that host*, and every later look
(``running``: ``pgrep -F DIR/pid -f MARKER``) and stop (``pkill -F``) is a command over SSH too, never a
signal from the engine's machine. Why not systemd units: see the design document ("Process lifetimes").
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
import shlex
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ...errors import EngineError
from .. import proc
from ..files import write_atomic
from .hosts import Host

log = logging.getLogger("pulumi_dbos.engine")

#: one ``[user@]address`` of PULUMI_DBOS_HA_HOSTS: no option-like or shell-meaningful characters
_ENTRY = re.compile(r"^(?:[A-Za-z0-9_][A-Za-z0-9_.-]*@)?[A-Za-z0-9][A-Za-z0-9.:-]*$")
SSH_TIMEOUT = 30.0
_DOWN = ": ssh failed: "
#: ``sh -c`` on a host: stop the process of pid file $1 if its command line says $2, SIGKILL after $3 tenths of a second
_STOP = ('pkill -TERM -F "$1" -f "$2" 2>/dev/null; i=0; while pgrep -F "$1" -f "$2" >/dev/null 2>&1; do '
         'i=$((i+1)); if [ "$i" -gt "$3" ]; then pkill -KILL -F "$1" -f "$2"; sleep 0.5; break; fi; sleep 0.1; done; '
         'rm -f -- "$1"')
#: ``sh -c`` on a host, as the cluster user: the first N arguments are probes (printed), the rest programs (each
#: one it cannot run is printed as ``missing: PATH``)
_CHECK = ('n=$1; shift; i=0; for f in "$@"; do i=$((i+1)); if [ "$i" -le "$n" ]; then cat -- "$f"; '
          'elif ! [ -x "$f" ]; then echo "missing: $f"; fi; done')


def parse(raw: str, ssh_config: Path | None = None, cluster_user: str | None = None) -> list[Host]:
    """``PULUMI_DBOS_HA_HOSTS`` as hosts ``h1``, ``h2``, ...; a bad entry is an error naming it."""
    hosts: list[Host] = []
    for i, entry in enumerate((e.strip() for e in raw.split(",") if e.strip()), 1):
        if not _ENTRY.match(entry):
            raise EngineError(f"PULUMI_DBOS_HA_HOSTS: {entry!r} is not [user@]address",
                              hint="e.g. PULUMI_DBOS_HA_HOSTS=root@10.0.0.11,root@10.0.0.12,root@10.0.0.13")
        user, _, address = entry.rpartition("@")
        hosts.append(Host(name=f"h{i}", address=address, ssh=f"{user or 'root'}@{address}",
                          ssh_config=str(ssh_config) if ssh_config else None, cluster_user=cluster_user))
    if len({h.address for h in hosts}) != len(hosts):
        raise EngineError(f"PULUMI_DBOS_HA_HOSTS names a host twice: {raw!r}",
                          hint="each member needs a host of its own (a host lost must cost one member)")
    if len(hosts) < 2:
        raise EngineError(f"PULUMI_DBOS_HA_HOSTS names {len(hosts)} host(s): high availability needs 2 or more "
                          "(3 for the default members and etcd's quorum)")
    return hosts


def run(host: Host, argv: list[str], run_as: proc.RunAs | None = None, *, check: bool = True,
        timeout: float = SSH_TIMEOUT) -> subprocess.CompletedProcess[str]:
    """``argv`` on ``host`` (as ``run_as`` when given) over SSH, to completion."""
    remote = [*(host.as_user(run_as) if run_as else []), *argv]
    return proc.run(host.ssh_argv(remote), check=check, timeout=timeout,
                    hint=f"the engine reaches host {host.name} as `ssh {host.ssh}` with a key (BatchMode): see "
                         "docs/engines.md, \"Real hosts\"")


def start(host: Host, argv: list[str], run_as: proc.RunAs, where: Path, env: dict[str, str] | None = None) -> None:
    """``argv`` on ``host`` as ``run_as``, in its own session there, output to ``where/log``, pid in
    ``where/pid`` (both on the host). ``env``: the only variables set beyond what ``runuser``/``sudo`` keep
    (never a secret: they are visible in the process's environment)."""
    words = ["env", *(f"{k}={v}" for k, v in (env or {}).items()), *argv] if env else argv
    script = (f"cd {shlex.quote(str(where))} && echo $$ >pid && exec {shlex.join(words)} "
              "</dev/null >>log 2>&1")
    run(host, ["setsid", "-f", "sh", "-c", script], run_as)


def running(host: Host, where: Path, marker: str) -> bool:
    """The process of ``where/pid`` runs on ``host`` and its command line says ``marker``."""
    return run(host, ["pgrep", "-F", str(where / "pid"), "-f", marker], check=False).returncode == 0


def stop(host: Host, where: Path, marker: str, timeout: float = 30) -> None:
    """SIGTERM (Patroni stops its PostgreSQL on it), SIGKILL after ``timeout``, the pid file removed: one round trip
    (the waiting is done on the host). A host that does not answer is an error: the process may still run there."""
    run(host, ["sh", "-c", _STOP, "stop", str(where / "pid"), marker, str(int(timeout * 10))],
        proc.RunAs(host.cluster_user) if host.cluster_user else None, timeout=timeout + SSH_TIMEOUT)


class SshHosts:
    """The operator's hosts (``PULUMI_DBOS_HA_HOSTS``): see the module's docstring."""

    def __init__(self, data_dir: Path, raw: str, ssh_config: Path | None = None,
                 cluster_user: str | None = None) -> None:
        self.data_dir = data_dir
        self.hosts = parse(raw, ssh_config, cluster_user)
        self.count = len(self.hosts)
        #: the etcd cluster's token: the data dir and the hosts (another engine's etcd on them never joins ours)
        self.tag = "dbos" + hashlib.sha256(f"{data_dir.resolve()}|{raw}".encode()).hexdigest()[:6]

    @property
    def networks(self) -> list[str]:
        return [f"{h.address}/128" if ":" in h.address else f"{h.address}/32" for h in self.hosts]

    def can_grow(self) -> bool:
        return False

    def by_name(self, name: str) -> Host:
        for h in self.hosts:
            if h.name == name:
                return h
        raise EngineError(f"no host named {name!r} among {[h.name for h in self.hosts]} (PULUMI_DBOS_HA_HOSTS)",
                          hint="a host an instance runs on was removed from PULUMI_DBOS_HA_HOSTS: put it back")

    def present(self) -> bool:
        return True

    def ensure(self, run_as: proc.RunAs, shared: list[Path], programs: list[str], *,
               tolerate_down: bool = False) -> list[Host]:
        """Every host answers over SSH, switches to ``run_as`` without a password, has ``programs`` (the same
        paths as here) and sees each of ``shared`` (the data dir; a posix repository) as this machine does: a
        file written here is read there as ``run_as``. Refuses with every problem found; returns the hosts that
        answered. ``tolerate_down``: hosts that do not answer at all are no problem while a majority does (they are
        logged and left out: a lost host must not stop the others' members from being started)."""
        nonce = secrets.token_hex(8)
        probes = []
        for d in shared:
            p = d / f".host-probe-{nonce}"
            write_atomic(p, nonce + "\n", 0o600, uid=run_as.uid if run_as.user else None,
                         gid=run_as.gid if run_as.user else None)
            probes.append(p)
        try:
            with ThreadPoolExecutor(len(self.hosts)) as pool:  # the hosts at once: a round trip each, not N
                found = list(pool.map(lambda h: _check(h, run_as, probes, nonce, programs), self.hosts))
        finally:
            for p in probes:
                p.unlink(missing_ok=True)
        down = [h for h, ps in zip(self.hosts, found, strict=True) if ps and _DOWN in ps[0]]
        if tolerate_down and down and 2 * len(down) < len(self.hosts):
            for h in down:
                log.warning("host %s (%s) does not answer over SSH: its members are left down", h.name, h.ssh)
            found = [ps for h, ps in zip(self.hosts, found, strict=True) if h not in down]
        else:
            down = []
        problems = [p for ps in found for p in ps]
        if problems:
            raise EngineError("the hosts of PULUMI_DBOS_HA_HOSTS cannot run high availability: " + "; ".join(problems),
                              hint="docs/engines.md, \"Real hosts\": keys, the cluster user, the shared data dir, "
                                   "the repository, etcd and Patroni at the same paths")
        return [h for h in self.hosts if h not in down]

    def teardown(self) -> None:
        """Nothing to remove: the hosts are the operator's (their processes are stopped by their owners)."""


def _check(h: Host, run_as: proc.RunAs, probes: list[Path], nonce: str, programs: list[str]) -> list[str]:
    """``SshHosts.ensure``'s problems on ``h``: one SSH round trip (as the cluster user: what it cannot read or run
    is missing)."""
    cp = run(h, ["sh", "-c", _CHECK, "check", str(len(probes)), *map(str, probes), *programs], run_as, check=False)
    if cp.returncode == 255:  # ssh's own failure (a command's own status is never 255 here)
        return [f"{h.name} ({h.ssh}){_DOWN}{cp.stderr.strip()[-300:]}"]
    out = cp.stdout.splitlines()
    problems = [f"{h.name}: {line.removeprefix('missing: ')} (not found or not runnable as {run_as.name})"
                for line in out if line.startswith("missing: ")]
    seen = [line for line in out if line == nonce]
    if len(seen) < len(probes):
        problems.append(f"{h.name}: as {run_as.name}, {', '.join(str(p.parent) for p in probes)} is not this "
                        "machine's (a shared mount at the same path)")
    return problems
