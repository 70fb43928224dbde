"""Real hosts over SSH, on this machine: an ``sshd`` in each simulated host's network namespace (its own host key and
config, listening on that host's address only, key-only with a throwaway key), and an engine told its hosts the
one way an operator does (``PULUMI_DBOS_HA_HOSTS``, ``PULUMI_DBOS_HA_SSH_CONFIG``). Every etcd and Patroni member
is then started, looked at and stopped through ``ssh`` (not ``nsenter``): the instance turns HA on, is available
with 3 members, switches over, is started again with one host unreachable, is destroyed, and nothing of it is left
on the hosts."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from pulumi_dbos.engine import LocalEngine
from pulumi_dbos.engine.ha import cluster
from pulumi_dbos.engine.ha.hosts import Fabric
from pulumi_dbos.engine.ha.remote import SshHosts
from pulumi_dbos.engine.settings import EngineSettings
from pulumi_dbos.errors import EngineError
from tests.conftest import _short_tmpdir, cleanup_data_dir, kill_servers_under
from tests.ha.conftest import _skip_reason

pytestmark = pytest.mark.ha

SSHD = "/usr/sbin/sshd"
PRIVSEP = Path("/run/sshd")  # sshd's privilege separation directory (the system's sshd service makes it)


@dataclass
class SshLab:
    root: Path
    fabric: Fabric
    client_config: Path
    sshds: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def hosts_setting(self) -> str:
        return ",".join(f"root@{h.address}" for h in self.fabric.hosts)

    def sshd(self, i: int, up: bool) -> None:
        """Host ``i``'s sshd stopped (the host unreachable over SSH; its processes live on) or started again."""
        h = self.fabric.host(i)
        assert h.netns is not None
        if not up:
            os.killpg(self.sshds[i - 1].pid, 9)
            self.sshds[i - 1].wait(10)
            return
        conf, log = self.root / f"sshd-{h.name}.conf", self.root / f"sshd-{h.name}.log"
        self.sshds[i - 1] = subprocess.Popen(  # noqa: S603 - argument list
            ["nsenter", f"--net=/run/netns/{h.netns}", "--", SSHD, "-D", "-f", str(conf), "-E", str(log)],
            stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 20
        while not _listening(h.netns, h.address):
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)

    def logins(self) -> int:
        return sum((self.root / f"sshd-{h.name}.log").read_text().count("Accepted publickey for root")
                   for h in self.fabric.hosts)


def _keygen(path: Path) -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "tests-ha", "-f", str(path)],  # noqa: S603,S607
                   check=True, timeout=30)
    return path.with_suffix(".pub").read_text().strip()


def _listening(ns: str, address: str) -> bool:
    out = subprocess.run(["ip", "netns", "exec", ns, "ss", "-ltnH", f"src {address}:22"],  # noqa: S603,S607
                         capture_output=True, text=True, timeout=10).stdout
    return bool(out.strip())


@contextlib.contextmanager
def ssh_lab(data_dir: Path, root: Path) -> Iterator[SshLab]:
    """The data dir's simulated hosts, each with an sshd; everything (sshds, keys, hosts) gone after."""
    fab = Fabric(data_dir)
    made_privsep = not PRIVSEP.exists()
    lab = SshLab(root, fab, root / "ssh_config")
    try:
        root.mkdir(mode=0o700)
        fab.ensure()
        if made_privsep:
            PRIVSEP.mkdir(mode=0o755)
        client_pub = _keygen(root / "id")
        (root / "authorized_keys").write_text(client_pub + "\n")
        known = []
        for h in fab.hosts:
            assert h.netns is not None
            known.append(f"{h.address} {_keygen(root / f'hostkey-{h.name}')}")
            conf = root / f"sshd-{h.name}.conf"
            conf.write_text("\n".join([
                f"ListenAddress {h.address}:22", f"HostKey {root / f'hostkey-{h.name}'}",
                f"PidFile {root / f'sshd-{h.name}.pid'}", f"AuthorizedKeysFile {root / 'authorized_keys'}",
                "PubkeyAuthentication yes", "PasswordAuthentication no", "KbdInteractiveAuthentication no",
                "PermitRootLogin prohibit-password", "AllowUsers root", "UsePAM no", "PrintMotd no",
                "StrictModes no",  # the keys live in a temporary directory, not in ~root/.ssh
                "LogLevel VERBOSE", ""]))
            lab.sshds.append(subprocess.Popen(  # noqa: S603 - argument list
                ["nsenter", f"--net=/run/netns/{h.netns}", "--", SSHD, "-D", "-f", str(conf),
                 "-E", str(root / f"sshd-{h.name}.log")], stdin=subprocess.DEVNULL, start_new_session=True))
        # (the same command as SshLab.sshd's, which restarts one)
        (root / "known_hosts").write_text("\n".join(known) + "\n")
        lab.client_config.write_text("\n".join([
            "Host *", f"  IdentityFile {root / 'id'}", "  IdentitiesOnly yes",
            f"  UserKnownHostsFile {root / 'known_hosts'}", "  GlobalKnownHostsFile /dev/null",
            "  StrictHostKeyChecking yes", "  LogLevel ERROR", ""]))
        deadline = time.monotonic() + 20
        for h in fab.hosts:
            assert h.netns is not None
            while not _listening(h.netns, h.address):
                assert time.monotonic() < deadline, (root / f"sshd-{h.name}.log").read_text()
                time.sleep(0.05)
        yield lab
    finally:
        for p in lab.sshds:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, 9)
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(10)
        fab.teardown()
        if made_privsep:
            shutil.rmtree(PRIVSEP, ignore_errors=True)
        shutil.rmtree(root, ignore_errors=True)  # the throwaway keys with the rest


def _environ(pid: int) -> dict[str, str]:
    with contextlib.suppress(OSError):
        raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        return dict(kv.decode(errors="replace").split("=", 1) for kv in raw if b"=" in kv)
    return {}


def _cmdline(pid: int) -> str:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    return ""


def test_an_instance_on_ssh_hosts_turns_ha_on_switches_over_and_leaves_nothing() -> None:
    reason = _skip_reason() or (None if Path(SSHD).exists() else "openssh-server is not installed (scripts/setup.sh)")
    if reason:
        pytest.skip(reason)
    top_dir = _short_tmpdir("phs")
    data_dir = top_dir / "d"
    t0 = time.monotonic()
    try:
        with ssh_lab(data_dir, top_dir / "ssh") as lab:
            settings = EngineSettings.from_env().replace(ha_hosts=lab.hosts_setting, ha_ssh_config=lab.client_config)
            eng = LocalEngine(data_dir, pool=0, settings=settings)
            try:
                eng.provision("sshdb", "app_user", "Ssh-hosts-pw-123", owner="tests/ha")
                t1 = time.monotonic()
                eng.set_high_availability("sshdb", True)
                top = cluster.wait_healthy(eng, "sshdb", 60)
                t2 = time.monotonic()
                assert len(top.members) == 3 and top.leader and top.sync_standby
                assert isinstance(cluster.fabric(eng), SshHosts)
                # every member and etcd process on every host was started through ssh: it runs in that host's network
                # namespace with the SSH session's environment (the nsenter path gives a clean one)
                for h in lab.fabric.hosts:
                    started = {w: [p for p in h.pids() if w in _cmdline(p)] for w in ("patroni", "etcd")}
                    for what, pids in started.items():
                        assert pids, f"no {what} on {h.name}"
                        assert all("SSH_CONNECTION" in _environ(p) for p in pids), (h.name, what)
                assert lab.logins() > 6

                t3 = time.monotonic()
                new = cluster.switchover(eng, "sshdb")
                assert new.leader not in (None, top.leader)
                assert cluster.wait_healthy(eng, "sshdb", 60).leader == new.leader
                t4 = time.monotonic()

                # a host the engine cannot reach any more (its sshd gone; its members live on): the next start of the
                # instance (every `pulumi up` of it) goes on with the others instead of failing
                lab.sshd(3, up=False)
                info = eng.ensure_running("sshdb")
                assert info.status == "available" and info.leader == new.leader
                lab.sshd(3, up=True)
                t5 = time.monotonic()

                eng.destroy("sshdb")
                for h in lab.fabric.hosts:  # only the sshd (and the sessions it is closing) left on each host
                    deadline = time.monotonic() + 10
                    while left := [_cmdline(p) for p in h.pids() if not _cmdline(p).startswith(SSHD)
                                   and "sshd" not in _cmdline(p)]:
                        assert time.monotonic() < deadline, (h.name, left)
                        time.sleep(0.1)
                assert not (data_dir / "ha" / "etcd").exists()
                assert not (eng.inst_dir("sshdb") / "m").exists()
                t6 = time.monotonic()
                print(f"\nHA-FIGURES ssh hosts: hosts with sshd + provision {t1 - t0:.1f} s, HA on {t2 - t1:.1f} s, "
                      f"switchover {t4 - t3:.1f} s, start with a host unreachable {t5 - t4:.1f} s, "
                      f"destroy {t6 - t5:.1f} s; {lab.logins()} ssh logins")
            finally:
                with contextlib.suppress(Exception):
                    for info in eng.list():
                        eng.destroy(info.name)
                kill_servers_under(data_dir)
                cleanup_data_dir(data_dir)
    finally:
        shutil.rmtree(top_dir, ignore_errors=True)


def test_ssh_hosts_that_do_not_answer_are_refused_before_anything_starts(tmp_path: Path) -> None:
    """Hosts the engine cannot log in to (here: no sshd at all) are each named in one error, and nothing starts."""
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    (tmp_path / "none").write_text("Host *\n  IdentitiesOnly yes\n")
    # loopback addresses nothing listens on: refused at once
    settings = EngineSettings.from_env().replace(ha_hosts="root@127.0.0.2,root@127.0.0.3,root@127.0.0.4",
                                                 ha_ssh_config=tmp_path / "none")
    data_dir = _short_tmpdir("phr") / "d"
    try:
        eng = LocalEngine(data_dir, pool=0, settings=settings)
        with pytest.raises(EngineError, match=r"h1 \(root@127.0.0.2\): ssh failed.*h2 .*h3 "):
            cluster.ensure_hosts(eng)
        assert not (data_dir / "ha" / "etcd").exists()  # no member of etcd was started
        assert not list((data_dir / "ha").glob(".host-probe-*"))  # the probe is removed
    finally:
        cleanup_data_dir(data_dir)
        shutil.rmtree(data_dir.parent, ignore_errors=True)
