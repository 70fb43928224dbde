"""Base backups by WAL volume (engine/local/autobackup.py): the watcher a provision starts takes them."""

from __future__ import annotations

import time
from pathlib import Path

import psutil
import psycopg
import pytest

from pulumi_dbos.engine import LocalEngine
from pulumi_dbos.engine.local import autobackup
from pulumi_dbos.engine.local.pitr import instance_lock
from pulumi_dbos.engine.local.workers import try_lock

PW = "Integr4tion-pw"


def connect(port: int) -> psycopg.Connection:
    return psycopg.connect(host="127.0.0.1", port=port, user="app_user", password=PW, dbname="postgres",
                           connect_timeout=5, autocommit=True)


def write_wal(port: int, mb: int) -> None:
    with connect(port) as c:
        c.execute("CREATE TABLE IF NOT EXISTS w (x int, pad text)")
        for _ in range(mb):  # ~1.2 MB of WAL each
            c.execute("INSERT INTO w SELECT g, repeat('x', 100) FROM generate_series(1, 8000) g")
        c.execute("INSERT INTO w VALUES (-1, 'last')")


def wait_for(pred, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


@pytest.fixture
def small_limit(monkeypatch: pytest.MonkeyPatch, tmp_root: Path) -> None:
    monkeypatch.setenv("PULUMI_DBOS_WAL_BACKUP_MB", "8")
    monkeypatch.setenv("PULUMI_DBOS_WAL_CHECK_SECONDS", "0.5")
    monkeypatch.setenv("PULUMI_DBOS_LOCK_DIR", str(tmp_root))  # this test's own "host": no other run delays it
    monkeypatch.setenv("PULUMI_DBOS_POOL_SIZE", "0")


def test_a_backup_is_taken_once_enough_wal_is_archived(engine: LocalEngine, small_limit: None) -> None:
    info = engine.provision("wal_a", "app_user", PW)
    assert [b.backup_id for b in engine.catalog.backups("wal_a")] == ["base-000"]
    write_wal(info.port, 4)  # below the limit: nothing
    engine.pitr.archive_now("wal_a", info.port)
    time.sleep(2)
    assert len(engine.catalog.backups("wal_a")) == 1
    write_wal(info.port, 40)  # past 8 MB and past the newest backup's size (the template's, 31 MB)
    engine.pitr.archive_now("wal_a", info.port)
    wait_for(lambda: len(engine.catalog.backups("wal_a")) >= 2, 90, "no backup by WAL volume")
    newest = engine.catalog.backups("wal_a")[-1]
    assert Path(newest.path).is_dir() and newest.start_wal
    assert autobackup.wal_since_backup(engine.layout, engine.catalog, "wal_a") < \
        autobackup.limit_for(engine.catalog, "wal_a")
    # a restore to now starts from that backup, and has everything
    r = engine.restore_to_new("wal_a", "wal_ar", "latest", password=PW)
    assert [b.backup_id for b in engine.catalog.backups("wal_ar")] == [f"{newest.backup_id}-inherited"]
    with connect(r.port) as c:
        assert c.execute("SELECT count(*) FROM w WHERE x = -1").fetchone() == (2,)


def test_the_watcher_leaves_once_no_instance_runs(engine: LocalEngine, small_limit: None) -> None:
    engine.provision("wal_b", "app_user", PW)
    lock = engine.data_dir / autobackup.WATCH_LOCK

    def watcher_holds() -> bool:
        with try_lock(lock) as free:
            return not free

    wait_for(watcher_holds, 30, "no watcher started")
    engine.stop("wal_b")
    wait_for(lambda: not watcher_holds(), 30, "the watcher did not leave")
    engine.ensure_running("wal_b")  # a start brings it back
    wait_for(watcher_holds, 30, "no watcher after a start")


def test_busy_instance_or_host_skips_a_round(engine: LocalEngine, small_limit: None,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PULUMI_DBOS_WAL_BACKUP_MB", "100000")  # the watcher started below stays out of it
    info = engine.provision("wal_c", "app_user", PW)
    # the watcher's first repository backup holds the instance's lock while it runs: let it finish
    wait_for(lambda: engine.catalog.get("wal_c").repo_backup_at is not None, 120, "the first repository backup")
    monkeypatch.setenv("PULUMI_DBOS_WAL_BACKUP_MB", "8")  # this process's view
    write_wal(info.port, 40)
    engine.pitr.archive_now("wal_c", info.port)
    rec = engine.catalog.get("wal_c")
    assert rec is not None
    with try_lock(autobackup.host_lock_path()) as mine:
        assert mine
        assert not autobackup.backup_if_due(engine.layout, engine.catalog, engine.server, rec)
    with instance_lock(engine.layout, "wal_c", 0) as mine:
        assert mine
        assert not autobackup.backup_if_due(engine.layout, engine.catalog, engine.server, rec)
    assert len(engine.catalog.backups("wal_c")) == 1
    assert autobackup.backup_if_due(engine.layout, engine.catalog, engine.server, rec)  # free: taken
    assert len(engine.catalog.backups("wal_c")) == 2
    # and destroy waits for a backup in progress instead of removing the directory under it
    engine.destroy("wal_c")
    assert not engine.inst_dir("wal_c").exists()


def test_destroying_the_last_instance_leaves_no_worker_running(engine: LocalEngine, small_limit: None,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PULUMI_DBOS_POOL_SIZE", "2")
    engine.pool_size = 2
    engine.provision("wal_d", "app_user", PW)  # starts the watcher and a refill
    engine.provision("wal_e", "app_user", PW)

    def workers() -> list[str]:
        found = []
        for p in psutil.process_iter(["cmdline"]):
            cmd = " ".join(p.info["cmdline"] or [])
            if "pulumi_dbos.engine.local.workers" in cmd and str(engine.data_dir) in cmd:
                found.append(cmd)
        return found

    wait_for(lambda: bool(workers()), 30, "no worker started")
    engine.destroy("wal_d")
    engine.destroy("wal_e")
    assert not workers()
