"""The local engine against real PostgreSQL servers."""

from __future__ import annotations

import contextlib
import os
import socket
import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
import pytest

from pulumi_dbos.engine import Kind, LocalEngine, Preflight
from pulumi_dbos.engine.local import paths, ports, server
from pulumi_dbos.errors import AlreadyExistsError, EngineError

PW = "Integr4tion-pw"


def connect(port: int, password: str = PW, user: str = "app_user") -> psycopg.Connection:
    return psycopg.connect(host="127.0.0.1", port=port, user=user, password=password, dbname="postgres",
                           connect_timeout=5)


def test_provision_then_connect_with_the_password(engine: LocalEngine) -> None:
    info = engine.provision("inst_a", "app_user", PW)
    assert info.status == "available" and info.hostname == "127.0.0.1"
    with connect(info.port) as conn:
        conn.execute("CREATE TABLE t (x int)")  # the user owns database postgres
        assert conn.execute("SELECT current_user").fetchone() == ("app_user",)
    with pytest.raises(psycopg.OperationalError):
        connect(info.port, "wrong-password")
    # the internal admin role is refused over TCP
    with pytest.raises(psycopg.OperationalError):
        connect(info.port, PW, user="postgres")
    assert [i.name for i in engine.list()] == ["inst_a"]
    assert info.earliest_restorable_time and info.latest_restorable_time


def test_data_and_archive_dirs_are_private(engine: LocalEngine) -> None:
    engine.provision("inst_p", "app_user", PW)
    for d in (engine.pgdata("inst_p"), engine.inst_dir("inst_p") / "archive", engine.data_dir):
        assert stat.S_IMODE(d.stat().st_mode) == 0o700, d


def test_reset_password_old_fails_new_works(engine: LocalEngine) -> None:
    info = engine.provision("inst_b", "app_user", PW)
    engine.reset_credentials("inst_b", "app_user", "Brand-new-pw9")
    with pytest.raises(psycopg.OperationalError):
        connect(info.port, PW)
    with connect(info.port, "Brand-new-pw9") as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_password_never_in_server_log(engine: LocalEngine) -> None:
    engine.provision("inst_l", "app_user", PW)
    engine.reset_credentials("inst_l", "app_user", "Other-pw-123")
    log = (engine.inst_dir("inst_l") / "server.log").read_text()
    assert PW not in log and "Other-pw-123" not in log


def test_concurrent_provisions_get_distinct_ports(engine: LocalEngine) -> None:
    names = ["conc_1", "conc_2", "conc_3", "conc_4"]
    with ThreadPoolExecutor(4) as pool:
        infos = list(pool.map(lambda n: engine.provision(n, "app_user", PW), names))
    ports = [i.port for i in infos]
    assert len(set(ports)) == len(ports)
    for i in infos:
        with connect(i.port) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)


def test_two_engines_in_one_data_dir_do_not_collide(data_dir: Path) -> None:
    a, b = LocalEngine(data_dir), LocalEngine(data_dir)
    with ThreadPoolExecutor(2) as pool:
        fa = pool.submit(a.provision, "twin_a", "app_user", PW)
        fb = pool.submit(b.provision, "twin_b", "app_user", PW)
        assert fa.result().port != fb.result().port


def test_duplicate_name_refused(engine: LocalEngine) -> None:
    engine.provision("inst_d", "app_user", PW)
    with pytest.raises(AlreadyExistsError, match="adopt=True"):
        engine.provision("inst_d", "app_user", PW)


def test_destroy_leaves_no_process_and_no_directory(engine: LocalEngine) -> None:
    engine.provision("inst_c", "app_user", PW)
    pidfile = engine.pgdata("inst_c") / "postmaster.pid"
    pid = int(pidfile.read_text().split()[0])
    engine.destroy("inst_c")
    assert not engine.inst_dir("inst_c").exists()
    assert not server.alive(pid)
    assert engine.info("inst_c") is None and engine.list() == []
    engine.destroy("inst_c")  # deleting again is safe


def test_stop_start_and_status(engine: LocalEngine) -> None:
    info = engine.provision("inst_s", "app_user", PW)
    assert engine.stop("inst_s").status == "stopped"
    assert engine.start("inst_s").status == "available"
    with connect(info.port) as conn:
        conn.execute("SELECT 1")


def test_failed_provision_midway_leaves_nothing(engine: LocalEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    """The port is taken by another process after allocation: the server cannot start."""
    engine.template()
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    taken = blocker.getsockname()[1]
    try:
        monkeypatch.setattr(ports, "port_free", lambda port: True)  # allocation does not see it
        monkeypatch.setenv("PULUMI_DBOS_PORT_RANGE", f"{taken}-{taken}")
        with pytest.raises(EngineError) as err:
            engine.provision("inst_f", "app_user", PW)
        assert "rolled back" in str(err.value) and "failed to start" in str(err.value)
        assert PW not in str(err.value)
    finally:
        blocker.close()
    assert not engine.inst_dir("inst_f").exists()
    assert engine.catalog.get("inst_f") is None
    assert not any(b"inst_f" in cmdline for cmdline in _cmdlines())


def _cmdlines() -> list[bytes]:
    """Every process's argv now (one that exits while being read is left out: other tests run beside this one)."""
    out = []
    for p in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            out.append(p.read_bytes())
    return out


def test_explicit_port_taken_is_refused_before_anything(engine: LocalEngine) -> None:
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    taken = blocker.getsockname()[1]
    try:
        problems = engine.preflight(Preflight(Kind.PROVISIONED, "inst_x", port=taken))
        assert [p.field for p in problems] == ["port"] and "in use" in problems[0].message
        with pytest.raises(EngineError, match="in use"):
            engine.provision("inst_x", "app_user", PW, port=taken)
    finally:
        blocker.close()
    assert not engine.inst_dir("inst_x").exists()


def test_unreachable_data_dir_is_reported(tmp_root: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to test another user's access")
    private = tmp_root / "private"
    private.mkdir(mode=0o700)
    problems = paths.check_data_dir(private / "d", "postgres")
    assert problems and "cannot reach" in problems[0]


def test_failed_port_change_leaves_the_old_instance_working(engine: LocalEngine,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    info = engine.provision("inst_pc", "app_user", PW)
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    taken = blocker.getsockname()[1]
    try:
        monkeypatch.setattr(ports, "port_free", lambda port: True)  # the check misses it: start fails
        with pytest.raises(EngineError):
            engine.set_port("inst_pc", taken)
    finally:
        blocker.close()
    assert engine.info("inst_pc").port == info.port
    with connect(info.port) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
