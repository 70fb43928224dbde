"""The hosts an HA instance's members run on, and how the engine reaches them.

A :class:`Host` is a name, an address the other hosts and the endpoint reach it at, and a *command prefix*:
every process the engine starts on a host (an etcd member, a Patroni member, which runs PostgreSQL) is
``host.wrap(argv)`` started here. On one machine the hosts are network namespaces (:class:`Fabric`:
``nsenter --net=<ns> --setuid --setgid``); on real hosts (``remote.SshHosts``, named by
``PULUMI_DBOS_HA_HOSTS``) the prefix is ``ssh`` and the processes' lifetimes are ``remote``'s (see
docs/design/high-availability.md for why SSH and not an agent). Everything above is the same for both.

The namespaces of one data dir share a subnet ``10.<a>.<b>.0/24`` (from a hash of the data dir) behind a bridge
in the root namespace, which is how the engine and the endpoint reach the members. Two data dirs whose hashes
meet (about 1 in 30,000 per pair) would share a subnet and their namespaces' names: each fabric claims its subnet
(``/run/pulumi-dbos/fabrics/<subnet>``, holding its data dir; /run goes with the namespaces at a reboot), and a
second data dir is refused with the first one's name rather than wired into the other's hosts. Nothing leaves the subnet: a blackhole route for it is added in the root
namespace *before* anything else (if the bridge goes, packets for the subnet are dropped rather than routed
out), the namespaces have no default route, and forwarding is never switched on.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shlex
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from ...errors import EngineError
from .. import proc
from ..files import write_atomic

log = logging.getLogger("pulumi_dbos.engine")

IP = "ip"
NSENTER = "nsenter"
SSH = "ssh"
#: a route's metric below which the bridge's own (connected, metric 0) route wins while the bridge exists
BLACKHOLE_METRIC = 4095
#: which data dir each fabric's subnet belongs to (one file per subnet); a tmpfs, gone at a reboot with the hosts
CLAIMS = Path("/run/pulumi-dbos/fabrics")


@dataclass(frozen=True)
class Host:
    """One host of the engine. ``address``: where the other hosts, the endpoint and the engine reach it."""

    name: str
    address: str
    netns: str | None = None  #: set for a simulated host (a network namespace on this machine)
    ssh: str | None = None  #: ``user@host`` for a real one
    ssh_config: str | None = None  #: ``ssh -F`` (keys, known hosts, port), else the engine's user's own
    cluster_user: str | None = None  #: on a real host, the OS user its processes run as (who may stop them)

    def wrap(self, argv: list[str], run_as: proc.RunAs) -> list[str]:
        """``argv`` as a command that runs on this host as ``run_as`` (started by the engine as root)."""
        if self.netns is not None:
            switch = ["-S", str(run_as.uid), "-G", str(run_as.gid)] if run_as.user and os.geteuid() == 0 else []
            return [NSENTER, f"--net=/run/netns/{self.netns}", *switch, "--", *argv]
        if self.ssh is not None:
            return self.ssh_argv([*self.as_user(run_as), *argv])
        return argv

    def as_user(self, run_as: proc.RunAs) -> list[str]:
        """The prefix that switches to ``run_as`` on a real host: ``runuser`` when the engine logs in as root (no
        sudo rule needed, and minimal images have no sudo), else ``sudo -n`` (a rule the operator writes)."""
        if not run_as.user:
            return []
        if (self.ssh or "").partition("@")[0] == "root":
            return ["runuser", "-u", run_as.name, "--"]
        return ["sudo", "-n", "-u", run_as.name, "--"]

    def ssh_argv(self, remote: list[str]) -> list[str]:
        """``ssh`` running ``remote`` on this host: never a password prompt (BatchMode: keys set up by the operator);
        the remote shell gets the argv quoted word by word, so no word is ever interpreted."""
        assert self.ssh is not None
        cfg = ["-F", self.ssh_config] if self.ssh_config else []
        return [SSH, *cfg, "-o", "BatchMode=yes", "-o", "ConnectTimeout=10", "--", self.ssh, shlex.join(remote)]

    def pids(self) -> list[int]:
        """Every process running on this (simulated) host."""
        if self.netns is None:
            return []
        cp = proc.run([IP, "netns", "pids", self.netns], check=False, timeout=10)
        return [int(p) for p in cp.stdout.split() if p.isdigit()]


def _hash(data_dir: Path) -> bytes:
    return hashlib.sha256(str(data_dir.resolve()).encode()).digest()


class Fabric:
    """The simulated hosts of one data dir: ``count`` network namespaces on a bridge (see the module's docstring).

    Names derive from the data dir: namespaces ``dbos<6 hex>h<i>``, bridge ``dbos<6 hex>``, veths
    ``dbos<6 hex>v<i>`` (interface names are at most 15 characters)."""

    def __init__(self, data_dir: Path, count: int = 3) -> None:
        self.data_dir = data_dir
        h = _hash(data_dir)
        self.tag = "dbos" + h.hex()[:6]
        # 10.128.0.0/9 with a /24 per data dir: far from the usual 10.0.x / 10.1.x of other tools
        self.prefix = f"10.{128 + h[0] % 120}.{h[1]}"
        self.subnet = f"{self.prefix}.0/24"
        self.bridge = self.tag
        self.count = count

    @property
    def hosts(self) -> list[Host]:
        return [self.host(i) for i in range(1, self.count + 1)]

    @property
    def networks(self) -> list[str]:
        """Where the members' peers connect from (their pg_hba lines)."""
        return [self.subnet]

    def can_grow(self) -> bool:
        """More hosts can be made (``count`` raised): namespaces, yes; real hosts are the operator's."""
        return True

    def host(self, i: int) -> Host:
        return Host(name=f"h{i}", address=f"{self.prefix}.{i + 1}", netns=f"{self.tag}h{i}")

    def by_name(self, name: str) -> Host:
        for h in self.hosts:
            if h.name == name:
                return h
        raise EngineError(f"no host named {name!r} among {[h.name for h in self.hosts]}")

    # ---------------------------------------------------------------- making and removing
    def _ip(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return proc.run([IP, *args], check=check, timeout=20,
                        hint="network namespaces need root (CAP_NET_ADMIN) and the `ip` command (iproute2)")

    def _exists(self, kind: str, name: str) -> bool:
        if kind == "netns":
            return name in self._ip("netns", "list", check=False).stdout.split()
        return self._ip("link", "show", name, check=False).returncode == 0

    def ensure(self) -> None:
        """The blackhole route first, then the bridge and every host that is not there (idempotent)."""
        if os.geteuid() != 0:
            raise EngineError("simulated hosts (network namespaces) need root",
                              hint="run as root, or give the engine real hosts")
        self.claim()
        routes = self._ip("route", "show", "type", "blackhole", self.subnet, check=False).stdout
        if not routes.strip():
            self._ip("route", "add", "blackhole", self.subnet, "metric", str(BLACKHOLE_METRIC))
        if not self._exists("link", self.bridge):
            self._ip("link", "add", self.bridge, "type", "bridge")
            self._ip("addr", "add", f"{self.prefix}.1/24", "dev", self.bridge)
            self._ip("link", "set", self.bridge, "up")
        for h in self.hosts:
            self.up(h)

    def claim(self) -> None:
        """The subnet (and the names that come with it) is this data dir's, or EngineError naming the data dir
        whose fabric has it. A claim whose fabric is gone (no bridge of its name) is stale and taken over; an
        interface of another name on the subnet (a fabric that lost its claim, anything else) refuses too."""
        from ..locks import file_lock
        CLAIMS.mkdir(parents=True, exist_ok=True, mode=0o755)
        path = CLAIMS / self.subnet.replace("/", "_")
        mine = str(self.data_dir.resolve())
        with file_lock(CLAIMS / ".lock", wait=20) as locked:
            if not locked:
                raise EngineError(f"cannot lock {CLAIMS}/.lock to claim subnet {self.subnet}", hint="try again")
            other = _read_claim(path)
            if other is not None and other[0] != mine and Path(f"/sys/class/net/{other[1]}").exists():
                raise EngineError(
                    f"the simulated hosts of data dir {mine} would use subnet {self.subnet}, which data dir {other[0]}'s "
                    "hosts use (their data dirs' hashes meet)",
                    hint=f"use another data dir for one of them, or remove {other[0]}'s HA instances first")
            strangers = [dev for dev in self._on_subnet() if dev != self.bridge]
            if strangers:
                raise EngineError(f"subnet {self.subnet} of data dir {mine}'s simulated hosts is already on interface "
                                  f"{strangers[0]}", hint="use another data dir, or free the subnet")
            write_atomic(path, json.dumps({"data_dir": mine, "bridge": self.bridge}) + "\n", 0o644)

    def _on_subnet(self) -> list[str]:
        """The interfaces of the root namespace with an address on the subnet."""
        out = self._ip("-o", "-4", "addr", "show", "to", self.subnet, check=False).stdout
        return [line.split()[1] for line in out.splitlines() if len(line.split()) > 1]

    def release(self) -> None:
        """Drop this data dir's claim on its subnet (after the bridge is gone)."""
        path = CLAIMS / self.subnet.replace("/", "_")
        other = _read_claim(path)
        if other is not None and other[0] == str(self.data_dir.resolve()):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def up(self, h: Host) -> None:
        """Make host ``h`` (its namespace, its veth on the bridge, its address) if it is not there."""
        assert h.netns is not None
        i = h.name.removeprefix("h")
        veth = f"{self.tag}v{i}"
        if not self._exists("netns", h.netns):
            self._ip("netns", "add", h.netns)
        inside = proc.run([IP, "-n", h.netns, "link", "show", "eth0"], check=False, timeout=10).returncode == 0
        if inside:
            return
        with contextlib.suppress(EngineError):
            self._ip("link", "del", veth, check=False)
        self._ip("link", "add", veth, "type", "veth", "peer", "name", f"{veth}p")
        self._ip("link", "set", f"{veth}p", "netns", h.netns)
        self._ip("-n", h.netns, "link", "set", f"{veth}p", "name", "eth0")
        self._ip("-n", h.netns, "addr", "add", f"{h.address}/24", "dev", "eth0")
        self._ip("-n", h.netns, "link", "set", "eth0", "up")
        self._ip("-n", h.netns, "link", "set", "lo", "up")
        self._ip("link", "set", veth, "master", self.bridge)
        self._ip("link", "set", veth, "up")

    def kill(self, h: Host) -> list[int]:
        """The host dies: every process in it is killed (SIGKILL) and its namespace removed (its disk stays:
        a host that comes back has its files). Returns the pids killed."""
        assert h.netns is not None
        victims = h.pids()
        for pid in victims:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(_alive(p) for p in victims):
            time.sleep(0.02)
        proc.reap()
        if self._exists("netns", h.netns):
            self._ip("netns", "del", h.netns, check=False)
        self._ip("link", "del", f"{self.tag}v{h.name.removeprefix('h')}", check=False)
        return victims

    def present(self) -> bool:
        """The bridge exists (after a reboot it does not, nor the blackhole route: nothing may then be sent to the
        subnet, which the default route would carry off the machine)."""
        return Path(f"/sys/class/net/{self.bridge}").exists()

    def is_up(self, h: Host) -> bool:
        return h.netns is not None and self._exists("netns", h.netns)

    def partition(self, h: Host, cut: bool = True) -> None:
        """Cut ``h`` off the others (its link on the bridge down) or heal it."""
        self._ip("link", "set", f"{self.tag}v{h.name.removeprefix('h')}", "down" if cut else "up")

    def teardown(self) -> None:
        """Every host killed and removed, the bridge and the blackhole route too (best effort, idempotent)."""
        for h in self.hosts:
            with contextlib.suppress(EngineError, OSError):
                self.kill(h)
        self._ip("link", "del", self.bridge, check=False)
        if not self._on_subnet():  # the blackhole stays while another fabric (refused as ours was) is on the subnet
            self._ip("route", "del", "blackhole", self.subnet, "metric", str(BLACKHOLE_METRIC), check=False)
        self.release()


def _read_claim(path: Path) -> tuple[str, str] | None:
    """(data dir, bridge) of a subnet's claim file; None: no (readable) claim."""
    try:
        raw = json.loads(path.read_text())
        return str(raw["data_dir"]), str(raw["bridge"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError):
        if Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z"):
            return False
    return True
