"""Faults survived: real processes, real signals, real full and read-only file systems."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import psycopg
import pytest
from pulumi import automation as auto

from pulumi_dbos.engine import LocalEngine
from pulumi_dbos.errors import EngineError
from tests.conftest import _short_tmpdir, cleanup_data_dir, kill_servers_under

PW = "Fault-passw0rd1"

FIVE = """
import pulumi, pulumi_dbos as dbos
n = int(pulumi.Config().get("n") or 5)
pw = pulumi.Config().require_secret("pw")
urls = {}
for i in range(n):
    r = dbos.DatabaseInstance(f"f{i}", instance_name=f"flt_{i}", username="app_user", password=pw)
    urls[f"flt_{i}"] = r.database_url
pulumi.export("urls", pulumi.Output.secret(urls))
"""


def postgres_pids_under(path: Path) -> dict[int, str]:
    out = {}
    for p in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            cmd = p.read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if cmd.startswith("/usr/lib/postgresql") or " -D " in cmd and "postgres" in cmd:
                if str(path) in cmd:
                    out[int(p.parent.name)] = cmd
    return out


def assert_converged(eng: LocalEngine, names: list[str]) -> None:
    assert sorted(i.name for i in eng.list()) == sorted(names)
    assert sorted(p.name for p in (eng.data_dir / "instances").iterdir()) == sorted(names)
    servers = postgres_pids_under(eng.data_dir / "instances")
    for name in names:
        info = eng.info(name)
        assert info is not None and info.status == "available"
        with psycopg.connect(host="127.0.0.1", port=info.port, user="app_user", password=PW,
                             dbname="postgres", connect_timeout=5) as c:
            c.execute("SELECT 1")
    # exactly one postmaster per instance, none for anything else
    postmasters = [cmd for cmd in servers.values() if " -D " in cmd]
    assert len(postmasters) == len(names), postmasters


def test_sigkill_during_up_of_five_then_documented_recovery(make_project: Any) -> None:
    p = make_project(FIVE)
    p.stack.set_config("pw", auto.ConfigValue(PW, secret=True))
    env = {**os.environ, **p.ws_opts.env_vars}
    proc = subprocess.Popen(["pulumi", "up", "--yes", "--non-interactive", "--stack", "test",  # noqa: S603,S607
                             "--cwd", str(p.work)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    inst = p.data_dir / "instances"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (inst.exists() and any(inst.iterdir())):
        time.sleep(0.02)
    time.sleep(0.15)  # some creates done, some in flight
    # pulumi, language host, program and provider at once; pulumi starts its plugins in process groups
    # of their own, so the provider is not in pulumi's group: every descendant is killed by pid (a
    # provider left running would go on creating beside the recovery, and outlive the test)
    tree = psutil.Process(proc.pid).children(recursive=True)
    os.killpg(proc.pid, signal.SIGKILL)
    for child in tree:
        with contextlib.suppress(psutil.Error):
            child.kill()
    proc.wait()

    # the documented recovery
    def pulumi(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["pulumi", *args, "--stack", "test", "--cwd", str(p.work),  # noqa: S603,S607
                               "--non-interactive"], env=env, capture_output=True, text=True, timeout=600)

    pulumi("cancel", "--yes")  # only meaningful on backends with update locks; harmless here
    cp = pulumi("refresh", "--yes", "--clear-pending-creates")
    assert cp.returncode == 0, cp.stdout + cp.stderr
    cp = pulumi("up", "--yes")
    assert cp.returncode == 0, cp.stdout + cp.stderr
    assert_converged(LocalEngine(p.data_dir), [f"flt_{i}" for i in range(5)])
    assert "flt_" in p.export_text() and PW not in p.export_text()
    p.destroy()
    assert not postgres_pids_under(p.data_dir) and list((p.data_dir / "instances").iterdir()) == []


def test_twenty_instances_in_parallel(make_project: Any) -> None:
    p = make_project(FIVE)
    p.stack.set_config("pw", auto.ConfigValue(PW, secret=True))
    p.stack.set_config("n", auto.ConfigValue("20"))
    p.up(parallel=20)
    eng = LocalEngine(p.data_dir)
    infos = eng.list()
    assert len(infos) == 20 and len({i.port for i in infos}) == 20
    assert_converged(eng, [f"flt_{i}" for i in range(20)])
    import sqlite3

    with sqlite3.connect(p.data_dir / "catalog.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    p.destroy()


def test_kill_9_then_immediate_start(engine: LocalEngine) -> None:
    """``kill -9`` of the postmaster and, at once, ``ensure_running`` (bench/failover.py's single-host crash): for
    a moment the killed postmaster still looks like a running ``postgres``, then it is a zombie whose pid still
    holds the pid file's lock, and its children still hold its shared memory. The restart waits for all of them
    (before: "lock file postmaster.pid already exists", or a dying server taken for a running one)."""
    engine.provision("kill9_db", "app_user", PW)
    for i in range(5):
        pid = engine.server.pid("kill9_db")
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        info = engine.ensure_running("kill9_db")
        assert info.status == "available", (i, info.status)
        assert engine.server.pid("kill9_db") not in (None, pid), i
        with psycopg.connect(host="127.0.0.1", port=info.port, user="app_user", password=PW, dbname="postgres",
                             connect_timeout=5) as c:
            assert c.execute("SELECT 1").fetchone() == (1,)


def test_server_killed_before_a_password_reset_is_repaired(make_project: Any) -> None:
    p = make_project(FIVE)
    p.stack.set_config("pw", auto.ConfigValue(PW, secret=True))
    p.stack.set_config("n", auto.ConfigValue("1"))
    p.up()
    eng = LocalEngine(p.data_dir)
    with psycopg.connect(p.outputs()["urls"]["flt_0"], autocommit=True) as c:
        c.execute("CREATE TABLE keep (x int)")
        c.execute("INSERT INTO keep VALUES (1)")
    pid = int((eng.pgdata("flt_0") / "postmaster.pid").read_text().split()[0])
    os.kill(pid, signal.SIGKILL)
    p.stack.set_config("pw", auto.ConfigValue("Fault-passw0rd2", secret=True))
    p.up()
    with psycopg.connect(p.outputs()["urls"]["flt_0"]) as c:
        assert c.execute("SELECT x FROM keep").fetchone() == (1,)
    # deleting an instance someone already deleted is safe
    eng.destroy("flt_0")
    p.destroy()


def test_server_killed_during_restore_cleans_up_and_retry_works(engine: LocalEngine) -> None:
    src = engine.provision("src_db", "app_user", PW)
    with psycopg.connect(host="127.0.0.1", port=src.port, user="app_user", password=PW, dbname="postgres",
                         autocommit=True) as c:
        c.execute("CREATE TABLE t AS SELECT g AS x, md5(g::text) AS y FROM generate_series(1, 400000) g")
    result: dict[str, Any] = {}

    def restore() -> None:
        try:
            engine.restore_to_new("src_db", "rst_db", "latest", password=PW)
        except EngineError as exc:
            result["error"] = exc

    t = threading.Thread(target=restore)
    t.start()
    pidfile = engine.pgdata("rst_db") / "postmaster.pid"
    deadline = time.monotonic() + 60
    killed = False
    while t.is_alive() and time.monotonic() < deadline and not killed:
        with contextlib.suppress(OSError, ValueError, IndexError):
            os.kill(int(pidfile.read_text().split()[0]), signal.SIGKILL)
            killed = True
        time.sleep(0.005)
    t.join(120)
    if not killed:
        pytest.skip("the restore finished before the server could be killed")
    assert "error" in result and "rolled back" in str(result["error"])
    assert engine.info("rst_db") is None and not engine.inst_dir("rst_db").exists()
    # the source is untouched, and the retry works
    r = engine.restore_to_new("src_db", "rst_db", "latest", password=PW)
    with psycopg.connect(host="127.0.0.1", port=r.port, user="app_user", password=PW, dbname="postgres") as c:
        assert c.execute("SELECT count(*) FROM t").fetchone() == (400000,)
    assert engine.info("src_db").status == "available"


@pytest.fixture
def small_fs() -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    root = _short_tmpdir("pf")
    mnt = root / "m"
    mnt.mkdir()
    cp = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=60m,mode=0755", "tmpfs", str(mnt)],  # noqa: S603,S607
                        capture_output=True, text=True, check=False)
    if cp.returncode != 0:
        pytest.skip(f"cannot mount tmpfs here: {cp.stderr.strip()}")
    try:
        yield mnt
    finally:
        kill_servers_under(mnt)
        subprocess.run(["umount", "-l", str(mnt)], check=False)  # noqa: S603,S607
        cleanup_data_dir(root)


def test_disk_full_during_provision(small_fs: Path) -> None:
    eng = LocalEngine(small_fs / "d")
    eng.template()  # ~39 MB: fits; a clone does not
    with pytest.raises(EngineError) as err:
        eng.provision("full_db", "app_user", PW)
    assert "rolled back" in str(err.value) and "No space left" in str(err.value)
    assert eng.list() == [] and list((small_fs / "d" / "instances").iterdir()) == []
    assert PW not in str(err.value)


def test_read_only_data_dir_during_provision(small_fs: Path) -> None:
    eng = LocalEngine(small_fs / "d")
    eng.template()
    subprocess.run(["mount", "-o", "remount,ro", str(small_fs)], check=True)  # noqa: S603,S607
    with pytest.raises(EngineError) as err:
        eng.provision("ro_db", "app_user", PW)
    assert "Read-only file system" in str(err.value) and "writable" in str(err.value)
    subprocess.run(["mount", "-o", "remount,rw", str(small_fs)], check=True)  # noqa: S603,S607
    assert eng.list() == [] and list((small_fs / "d" / "instances").iterdir()) == []
