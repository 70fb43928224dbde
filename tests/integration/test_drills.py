"""Restore drills against real servers, real base backups and real archived WAL, and a deliberately broken
archive (a missing WAL segment, a base backup without its pg_control)."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import psycopg
import pytest

from pulumi_dbos.engine import LocalEngine
from pulumi_dbos.engine.local.drills import DRILL_OWNER, Fence, compare

PW = "Drill-pw-123"


def conn(port: int, dbname: str = "postgres") -> psycopg.Connection:
    return psycopg.connect(host="127.0.0.1", port=port, user="app_user", password=PW, dbname=dbname,
                           autocommit=True)


def digests(d: Path) -> dict[str, str]:
    return {str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.rglob("*"))
            if p.is_file()}


def no_scratch_left(engine: LocalEngine) -> None:
    assert [r.name for r in engine.catalog.all() if r.owner == DRILL_OWNER] == []
    assert not list((engine.data_dir / "instances").glob("drill_*"))


@pytest.fixture(autouse=True)
def own_host(tmp_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PULUMI_DBOS_LOCK_DIR", str(tmp_root))  # this test's own "host": no other run delays it


@pytest.fixture
def source(engine: LocalEngine) -> int:
    info = engine.provision("drsrc", "app_user", PW)
    with conn(info.port) as c:
        c.execute("CREATE TABLE t (x int)")
        c.execute("CREATE SCHEMA s")
        c.execute("CREATE TABLE s.u (y text)")
        c.execute("INSERT INTO t SELECT generate_series(1, 100)")
        c.execute("INSERT INTO s.u VALUES ('a'), ('b')")
        c.execute("CREATE DATABASE other")
    with conn(info.port, "other") as c:
        c.execute("CREATE TABLE w (z int)")
        c.execute("INSERT INTO w VALUES (1), (2), (3)")
    for db in ("postgres", "other"):  # no autoanalyze (a transaction of its own) during the drill
        with conn(info.port, db) as c:
            c.execute("ANALYZE")
    return info.port


def test_drill_restores_compares_counts_and_removes_the_scratch(engine: LocalEngine, source: int,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    engine.backup("drsrc")
    caplog.set_level(logging.INFO, "pulumi_dbos.engine")
    r = engine.drill("drsrc")
    assert r.ok, r.reason
    assert r.counts_compared and r.reason is None
    assert r.tables >= 3 and not r.sql_checked, r.tables
    assert r.rto_seconds is not None and r.rto_seconds > 0
    assert r.rpo_seconds is not None and r.rpo_seconds >= 0
    assert r.restored_to is not None
    assert "restore drill of drsrc passed" in caplog.text
    no_scratch_left(engine)
    assert [i.name for i in engine.list()] == ["drsrc"]
    assert engine.drills("drsrc") == [r]
    with conn(source) as c:
        assert c.execute("SELECT count(*) FROM t").fetchone() == (100,)


def test_check_sql_is_kept_and_a_false_one_fails(engine: LocalEngine, source: int,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PULUMI_DBOS_DRILLS_KEPT", "2")
    ok = engine.drill("drsrc", check_sql="SELECT 1; SELECT count(*) = 3 FROM w", check_database="other")
    assert ok.ok and ok.sql_checked, ok.reason
    bad = engine.drill("drsrc", check_sql="SELECT count(*) = 4 FROM w")  # database: postgres, no table w
    assert not bad.ok and "check SQL failed" in (bad.reason or "") and "w" in (bad.reason or "")
    again = engine.drill("drsrc", check_sql="SELECT max(x) > 1000 FROM t")
    assert not again.ok and "returned False" in (again.reason or "")
    kept = engine.drills("drsrc")
    assert kept == [again, bad]  # newest first, the last 2
    later = engine.drill("drsrc")  # the kept check runs again
    assert not later.ok and "returned False" in (later.reason or "")
    assert engine.drill("drsrc", check_sql=" \n").ok  # an empty one removes it
    assert engine.drill("drsrc").ok and not engine.drills("drsrc")[0].sql_checked
    no_scratch_left(engine)


def _break_and_drill(engine: LocalEngine, source: int, caplog: pytest.LogCaptureFixture,
                     breaker: str) -> None:
    engine.backup("drsrc")
    for _ in range(3):  # WAL after the base backup, in several archived segments
        with conn(source) as c:
            c.execute("INSERT INTO t SELECT generate_series(1, 1000)")
        engine.pitr.archive_now("drsrc", source)
    with conn(source) as c:
        before_rows = c.execute("SELECT count(*) FROM t").fetchone()
    archive = engine.layout.archive("drsrc")
    backups = engine.layout.backups("drsrc")
    newest = Path(engine.catalog.backups("drsrc")[-1].path)
    segments = sorted(p for p in archive.iterdir() if len(p.name) == 24)
    if breaker == "wal":
        start = engine.catalog.backups("drsrc")[-1].start_wal
        after = [p for p in segments if p.name[8:] > start[8:]]
        assert len(after) >= 2
        after[0].unlink()  # a segment the replay needs, gone: from the local cache and from the repository
        stanza = engine.catalog.get("drsrc").stanza
        for f in Path(engine.repo.posix_path, "archive", stanza).glob(f"*/*/{after[0].name}-*"):
            f.unlink()
    else:
        (newest / "global" / "pg_control").unlink()  # a base backup that cannot start
    archive_before, backups_before = digests(archive), digests(backups)
    caplog.set_level(logging.INFO, "pulumi_dbos.engine")
    r = engine.drill("drsrc")
    assert not r.ok
    if breaker == "wal":  # found before any restore, and named
        assert (r.reason or "").startswith(f"WAL segment {after[0].name} is missing"), r.reason
    else:
        assert (r.reason or "").startswith("the restore failed")
    assert r.rto_seconds is None
    assert "RESTORE DRILL FAILED for instance drsrc" in caplog.text
    assert engine.drills("drsrc")[0] == r
    # the source: untouched (its archive only grew by the restore's own switch), answering with its data
    archive_after = digests(archive)
    assert {k: archive_after.get(k) for k in archive_before} == archive_before
    assert digests(backups) == backups_before
    with conn(source) as c:
        assert c.execute("SELECT count(*) FROM t").fetchone() == before_rows
    assert engine.info("drsrc").status == "available"
    no_scratch_left(engine)


def test_missing_wal_fails_loudly_and_leaves_the_source_alone(engine: LocalEngine, source: int,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    _break_and_drill(engine, source, caplog, "wal")


def test_broken_base_backup_fails_loudly_and_leaves_the_source_alone(engine: LocalEngine, source: int,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    _break_and_drill(engine, source, caplog, "base")


def test_a_killed_drills_scratch_is_hidden_and_removed_by_the_next(engine: LocalEngine, source: int) -> None:
    left = engine.restore_to_new("drsrc", "drill_0000dead", "latest", password=PW, owner=DRILL_OWNER)
    assert left.name not in [i.name for i in engine.list()]
    assert engine.drill("drsrc").ok
    no_scratch_left(engine)


def test_a_stopped_or_linked_instance_is_refused(engine: LocalEngine, source: int) -> None:
    from pulumi_dbos.errors import EngineError, NotFoundError

    engine.stop("drsrc")
    with pytest.raises(EngineError, match="not running"):
        engine.drill("drsrc")
    with pytest.raises(NotFoundError):
        engine.drill("nosuch")
    assert engine.drills("drsrc") == []


def test_fence_and_compare() -> None:
    a = Fence(100, frozenset({98}))
    assert a.writes_until(Fence(102, frozenset({98})), 2) == 0
    assert a.writes_until(Fence(103, frozenset({98})), 2) == 1  # someone else's transaction
    assert a.writes_until(Fence(102, frozenset()), 2) == 1  # one in progress before has ended
    assert compare({"d/s.t": 1}, {"d/s.t": 1}) is None
    assert "2 rows restored, 1 in the source" in (compare({"d/s.t": 1}, {"d/s.t": 2}) or "")
    assert "d/s.u missing" in (compare({"d/s.u": 1}, {}) or "")


def test_cli_drill_and_drills(engine: LocalEngine, data_dir: Path, source: int, tmp_path: Path,
                              capsys: pytest.CaptureFixture[str]) -> None:
    from pulumi_dbos.cli import main

    base = ["--data-dir", str(data_dir), "db"]
    assert main([*base, "drills", "drsrc"]) == 0
    assert "no restore drills of drsrc yet" in capsys.readouterr().out
    assert main([*base, "drill", "drsrc"]) == 0
    out = capsys.readouterr().out
    assert "restore drill of drsrc: ok" in out and "row counts compared" in out and "RTO" in out
    check = tmp_path / "check.sql"
    check.write_text("SELECT count(*) = 0 FROM t;\n")
    assert main([*base, "drill", "drsrc", "--sql", str(check), "--json"]) == 1
    captured = capsys.readouterr()
    failed = json.loads(captured.out)
    assert failed["ok"] is False and "returned False" in failed["reason"]
    assert "RESTORE DRILL FAILED for drsrc" in captured.err
    assert main([*base, "drills", "drsrc", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["ok"] for r in rows] == [False, True]
    assert main([*base, "drills", "drsrc"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "FAILED" in lines[0] and " ok " in lines[1]
    assert main([*base, "drill", "nope_db"]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert main([*base, "drill", "drsrc", "--sql", str(tmp_path / "missing.sql")]) == 1
    assert "cannot read it" in capsys.readouterr().err


def test_database_instance_reads_its_last_drill_on_refresh(engine: LocalEngine, data_dir: Path, source: int) -> None:
    from pulumi_dbos.resources.instance import DatabaseInstanceProvider

    props = {"instance_name": "drsrc", "username": "app_user", "password": PW, "engine": "local",
             "data_dir": str(data_dir), "retention_hours": 24}
    assert DatabaseInstanceProvider().read("drsrc", props).outs["last_drill"] is None
    r = engine.drill("drsrc")
    outs = DatabaseInstanceProvider().read("drsrc", props).outs
    assert outs["last_drill"] == {"at": r.at, "ok": True, "rto_seconds": r.rto_seconds, "rpo_seconds": r.rpo_seconds}
    assert outs["status"] == "available"


def test_busy_host(engine: LocalEngine, source: int, monkeypatch: pytest.MonkeyPatch) -> None:
    from pulumi_dbos.engine.local import autobackup
    from pulumi_dbos.engine.local.drills import busy_reason, host_lock_path
    from pulumi_dbos.engine.local.workers import try_lock

    monkeypatch.setenv("PULUMI_DBOS_DRILL_MAX_LOAD", "1000")
    assert busy_reason(engine) is None
    with try_lock(autobackup.host_lock_path()) as held:  # a base backup running on this host
        assert held
        assert busy_reason(engine) == "a base backup is running on this host"
    engine.catalog.update("drsrc", status="restoring")
    assert busy_reason(engine) == "instance drsrc is being created or restored"
    engine.catalog.update("drsrc", status="available")
    monkeypatch.setenv("PULUMI_DBOS_DRILL_MAX_LOAD", "-1")
    assert "load average" in (busy_reason(engine) or "")
    with try_lock(host_lock_path()) as held:  # another drill: an explicit one waits, then says so
        assert held
        from pulumi_dbos.engine.local.drills import DrillBusyError

        with pytest.raises(DrillBusyError, match="another restore drill"):
            engine.drill("drsrc", wait=0.5)
