"""The warm pool (engine/local/pool.py): what a provision may take from it, and what it never takes."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
import pytest

from pulumi_dbos.engine import LocalEngine
from pulumi_dbos.engine.local.pool import STAMP, Pool
from pulumi_dbos.engine.local.workers import worker_env
from pulumi_dbos.timeutil import to_rfc3339
from tests.support.trees import snapshot

PW = "Integr4tion-pw"


def connect(port: int) -> psycopg.Connection:
    return psycopg.connect(host="127.0.0.1", port=port, user="app_user", password=PW, dbname="postgres",
                           connect_timeout=5)


def wait_settled(pool: Pool, timeout: float = 120) -> None:
    """Until the pool is full and no refill is at work (the refill spawned by a provision)."""
    deadline = time.monotonic() + timeout
    while pool.wanted() or any(p.name.startswith(".tmp-") for p in pool.dir.iterdir()):
        assert time.monotonic() < deadline, sorted(p.name for p in pool.dir.iterdir())
        time.sleep(0.1)
    with pool.refilling() as free:  # the refill process has let go of its lock
        assert free or wait_lock(pool, deadline)


def wait_lock(pool: Pool, deadline: float) -> bool:
    while time.monotonic() < deadline:
        with pool.refilling() as free:
            if free:
                return True
        time.sleep(0.1)
    return False


def mark(entry: Path, what: str) -> None:
    (entry / "data" / f"MARK_{what}").write_text(what)


def test_provision_takes_a_ready_entry_and_the_pool_refills(data_dir: Path) -> None:
    eng = LocalEngine(data_dir, pool=2)
    pool = eng.pool()
    assert pool.refill() == 2
    entries = pool.entries()
    mark(entries[0], "first")
    info = eng.provision("pool_a", "app_user", PW)
    assert (eng.pgdata("pool_a") / "MARK_first").exists()  # it was the entry
    assert not (eng.inst_dir("pool_a") / STAMP).exists()
    with connect(info.port) as c:
        assert c.execute("SELECT current_user").fetchone() == ("app_user",)
    # its first base backup is the template's, as without the pool: restorable from the start
    assert [b.backup_id for b in eng.catalog.backups("pool_a")] == ["base-000"]
    r = eng.restore_to_new("pool_a", "pool_ar", "latest", password=PW)
    with connect(r.port) as c:
        assert c.execute("SELECT 1").fetchone() == (1,)
    wait_settled(pool)  # the provision started a refill
    assert len(pool.entries()) == 2


def test_an_entry_of_another_postgres_version_or_template_is_never_used(data_dir: Path) -> None:
    eng = LocalEngine(data_dir, pool=2)
    pool = eng.pool()
    pool.refill()
    old_version, other_template = pool.entries()
    mark(old_version, "old_version")
    (old_version / STAMP).write_text("14.9|14.9|1|1\n")  # made by another server version
    mark(other_template, "other_template")
    # the template is rebuilt (another initdb): its identity changes, the entry made from the old one is stale
    ready = eng.template().parent / "READY"
    ready.write_text(ready.read_text())
    os.utime(ready, ns=(time.time_ns(), time.time_ns() + 10**9))
    # and a pool of another template key (another major version or WAL size) beside it
    foreign = data_dir / "templates" / "pg99-wal4" / "pool" / "e-foreign"
    foreign.mkdir(parents=True)
    (foreign / STAMP).write_text(pool.stamp)  # even stamped like ours: it is not in our pool
    assert not pool.take(data_dir / "nowhere")
    fresh = LocalEngine(data_dir, pool=2)  # another process's engine
    info = fresh.provision("pool_b", "app_user", PW)
    assert not list(eng.pgdata("pool_b").glob("MARK_*"))
    with connect(info.port) as c:
        assert c.execute("SELECT 1").fetchone() == (1,)
    wait_settled(pool)
    entries = pool.entries()
    assert len(entries) == 2 and old_version not in entries and other_template not in entries
    assert all((e / STAMP).read_text() == pool.stamp for e in entries)
    assert not (data_dir / "templates" / "pg99-wal4" / "pool").exists()  # other keys' pools are removed


def test_a_refill_killed_half_way_leaves_nothing_usable(data_dir: Path) -> None:
    eng = LocalEngine(data_dir, pool=2)
    template = eng.template()
    pool = eng.pool()
    pool.dir.mkdir(exist_ok=True)
    argv = [sys.executable, "-m", "pulumi_dbos.engine.local.workers_run", "refill", str(data_dir), str(template), "2"]
    if eng.run_as.user:
        argv += ["--run-as", eng.run_as.user]
    # killed while its first entry is being copied (the worker and its cp: the whole session)
    p = subprocess.Popen(argv, env=worker_env(), cwd=pool.dir, start_new_session=True,  # noqa: S603
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not any((t / "data").exists() for t in pool.dir.glob(".tmp-*")):
        assert time.monotonic() < deadline and p.poll() is None
        time.sleep(0.005)
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    half = list(pool.dir.glob(".tmp-*"))
    assert half and not pool.entries()  # the half-made entry was never renamed into the pool
    for h in half:
        mark(h, "half")
    assert not pool.take(data_dir / "nowhere")
    info = eng.provision("pool_c", "app_user", PW)  # an empty pool: the template is copied as before
    assert not list(eng.pgdata("pool_c").glob("MARK_*"))
    with connect(info.port) as c:
        assert c.execute("SELECT 1").fetchone() == (1,)
    wait_settled(pool)
    assert not list(pool.dir.glob(".tmp-*")) and len(pool.entries()) == 2


def test_pool_size_zero_disables_it(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PULUMI_DBOS_POOL_SIZE", "0")
    eng = LocalEngine(data_dir)
    assert eng.pool_size == 0
    info = eng.provision("pool_z", "app_user", PW)
    with connect(info.port) as c:
        assert c.execute("SELECT 1").fetchone() == (1,)
    time.sleep(1)
    assert not eng.pool().dir.exists() and eng.pool().refill() == 0


def test_four_provisions_at_once_from_a_pool_of_two(data_dir: Path) -> None:
    eng = LocalEngine(data_dir, pool=2)
    eng.pool().refill()
    names = [f"pool_{i}" for i in range(4)]
    with ThreadPoolExecutor(4) as ex:
        infos = list(ex.map(lambda n: eng.provision(n, "app_user", PW), names))
    assert len({i.port for i in infos}) == 4
    for info in infos:
        with connect(info.port) as c:
            assert c.execute("SELECT 1").fetchone() == (1,)
    # two engines (two provider processes) on one data dir never take the same entry: a rename is atomic
    wait_settled(eng.pool())
    other = LocalEngine(data_dir, pool=2)
    with ThreadPoolExecutor(2) as ex:
        got = list(ex.map(lambda e: e[0].provision(e[1], "app_user", PW), [(eng, "pool_x"), (other, "pool_y")]))
    assert got[0].port != got[1].port


def test_a_restore_writes_the_base_over_an_entry_byte_for_byte(data_dir: Path) -> None:
    """What a restore's server starts from: the base backup exactly (names, bytes, modes, owners),
    whatever the entry held: a file the base lacks, a file it has with other bytes, files it has that
    the template lacks (a user table), and the entry's own first backup gone."""
    eng = LocalEngine(data_dir, pool=2)
    info = eng.provision("pool_s", "app_user", PW)
    with connect(info.port) as c:
        c.execute("CREATE TABLE t AS SELECT generate_series(1, 1000) x")
        c.commit()
    eng.backup("pool_s")
    base = Path(eng.catalog.backups("pool_s")[-1].path)
    pool = eng.pool()
    wait_settled(pool)
    for entry in pool.entries():
        mark(entry, "stale")
        (entry / "data" / "global" / "pg_control").write_bytes(b"\0" * 8192)
    assert pool.take_copy_of(eng.inst_dir("pool_x"), base)
    try:
        assert snapshot(eng.pgdata("pool_x")) == snapshot(base)
        assert sorted(p.name for p in (eng.inst_dir("pool_x") / "backups").iterdir()) == []
    finally:
        eng.server.kill("pool_x")
        shutil.rmtree(eng.inst_dir("pool_x"))


@pytest.mark.parametrize("size", [2, 0], ids=["from-the-pool", "without-a-pool"])
def test_a_restore_with_or_without_a_pool_entry(data_dir: Path, size: int,
                                               caplog: pytest.LogCaptureFixture) -> None:
    eng = LocalEngine(data_dir, pool=size)
    info = eng.provision("pool_r", "app_user", PW)
    with connect(info.port) as c:
        c.execute("CREATE TABLE t AS SELECT generate_series(1, 100) x")
        c.commit()
        t = c.execute("SELECT now()").fetchone()[0]  # type: ignore[index]
        c.commit()
        c.execute("INSERT INTO t VALUES (-1)")
        c.commit()
    if size:
        wait_settled(eng.pool())
        for entry in eng.pool().entries():
            mark(entry, "stale")
    with caplog.at_level(logging.INFO, logger="pulumi_dbos.engine"):
        r = eng.restore_to_new("pool_r", "pool_rr", to_rfc3339(t), password=PW)
    assert ("written over a warm-pool entry" if size else "base base-000 copied") in caplog.text
    with connect(r.port) as c:
        assert [x for (x,) in c.execute("SELECT x FROM t ORDER BY x")] == list(range(1, 101))
    assert not list(eng.pgdata("pool_rr").glob("MARK_*"))
    assert [b.backup_id for b in eng.catalog.backups("pool_rr")] == ["base-000-inherited"]
    uid = eng.run_as.uid if eng.run_as.user else os.geteuid()
    assert {os.lstat(p).st_uid for p in eng.pgdata("pool_rr").rglob("*")} == {uid}
    eng.destroy("pool_r")  # the restored instance stands alone
    r2 = eng.restore_to_new("pool_rr", "pool_r2", "latest", password=PW)
    with connect(r2.port) as c:
        assert c.execute("SELECT count(*) FROM t").fetchone() == (100,)
    if size:
        wait_settled(eng.pool())
        assert len(eng.pool().entries()) == 2


def _system_id(pgdata: Path) -> str:
    out = subprocess.run(["pg_controldata", str(pgdata)], capture_output=True, text=True, check=True,  # noqa: S603,S607
                         env={**os.environ, "PATH": f"{pgbin_dir()}:{os.environ['PATH']}"}).stdout
    return next(line.split(":", 1)[1].strip() for line in out.splitlines()
                if line.startswith("Database system identifier"))


def pgbin_dir() -> str:
    from pulumi_dbos.engine import pgbin
    return str(Path(pgbin.tool("initdb")).parent)


def test_the_machines_template_cache_spares_each_new_data_dir_its_initdb(tmp_root: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """PULUMI_DBOS_TEMPLATE_CACHE: the first data dir's template is kept in the cache, a second data dir's is a copy
    of it (the same cluster: its system identifier; no initdb), and instances provisioned from it work; a cache
    directory that others may write to is refused, naming the variable."""
    cache = tmp_root / "cache"
    monkeypatch.setenv("PULUMI_DBOS_TEMPLATE_CACHE", str(cache))
    first = LocalEngine(tmp_root / "d1", pool=0)
    made = first.template()
    kept = [p for p in cache.iterdir() if not p.name.startswith(".")]
    assert len(kept) == 1 and (kept[0] / "READY").exists(), kept
    assert _system_id(kept[0] / "data") == _system_id(made)

    second = LocalEngine(tmp_root / "d2", pool=0)
    copied = second.template()
    assert copied != made and _system_id(copied) == _system_id(made)  # a copy, not another initdb
    info = second.provision("cached_a", "app_user", PW)
    with connect(info.port) as c:
        assert c.execute("SELECT 1").fetchone() == (1,)
    second.destroy("cached_a")

    os.chmod(cache, 0o777)
    with pytest.raises(Exception, match="PULUMI_DBOS_TEMPLATE_CACHE"):
        LocalEngine(tmp_root / "d3", pool=0).template()
