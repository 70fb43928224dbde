"""Point-in-time restore from archived WAL into a new instance, against real servers."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
from datetime import timedelta, timezone
from pathlib import Path

import psycopg
import pytest

from pulumi_dbos.engine import LocalEngine
from pulumi_dbos.engine.waits import wait_until
from pulumi_dbos.errors import EngineError
from pulumi_dbos.timeutil import parse_rfc3339, to_rfc3339

PW = "Restore-pw-123"


def conn(port: int) -> psycopg.Connection:
    return psycopg.connect(host="127.0.0.1", port=port, user="app_user", password=PW, dbname="postgres",
                           autocommit=True)


def rows(port: int) -> list[int]:
    with conn(port) as c:
        return [r[0] for r in c.execute("SELECT x FROM t ORDER BY x")]


@pytest.fixture
def source(engine: LocalEngine) -> int:
    info = engine.provision("src_db", "app_user", PW)
    with conn(info.port) as c:
        c.execute("CREATE TABLE t (x int)")
        c.execute("INSERT INTO t SELECT generate_series(1, 100)")
    return info.port


def test_restore_at_t_has_exactly_the_rows_before_t(engine: LocalEngine, source: int) -> None:
    with conn(source) as c:
        t = c.execute("SELECT now()").fetchone()[0]
        c.execute("INSERT INTO t VALUES (1000)")
    r = engine.restore_to_new("src_db", "rst_t", to_rfc3339(t), password=PW)
    assert rows(r.port) == list(range(1, 101))
    assert r.source_instance == "src_db" and r.restored_to == to_rfc3339(t)
    # the source is untouched and still available
    assert rows(source) == [*range(1, 101), 1000]
    assert engine.info("src_db").status == "available"
    # the restored instance is independent: writes don't reach the source
    with conn(r.port) as c:
        c.execute("INSERT INTO t VALUES (-1)")
    assert -1 not in rows(source)


def test_restore_latest_has_all_rows(engine: LocalEngine, source: int) -> None:
    with conn(source) as c:
        c.execute("INSERT INTO t VALUES (2000)")
    r = engine.restore_to_new("src_db", "rst_latest", "latest", password=PW)
    assert rows(r.port)[-1] == 2000
    assert r.restored_to is not None and r.earliest_restorable_time is not None


def test_offset_and_fractional_times(engine: LocalEngine, source: int) -> None:
    with conn(source) as c:
        t = c.execute("SELECT now()").fetchone()[0].astimezone(timezone(timedelta(hours=5, minutes=30)))
        c.execute("INSERT INTO t VALUES (3000)")
    text = t.isoformat()  # e.g. 2026-11-26T01:04:05.123456+05:30
    assert text.endswith("+05:30")
    r = engine.restore_to_new("src_db", "rst_ist", text, password=PW)
    assert rows(r.port) == list(range(1, 101))


def test_one_microsecond_after_creation(engine: LocalEngine, source: int) -> None:
    earliest = parse_rfc3339(engine.info("src_db").earliest_restorable_time)
    r = engine.restore_to_new("src_db", "rst_early", to_rfc3339(earliest + timedelta(microseconds=1)), password=PW)
    with conn(r.port) as c:  # the user's role exists; the table does not yet
        assert c.execute("SELECT to_regclass('t')").fetchone() == (None,)


def test_restore_after_fresh_backup_and_outside_window(engine: LocalEngine, source: int) -> None:
    b = engine.backup("src_db")
    with conn(source) as c:
        c.execute("INSERT INTO t VALUES (4000)")
    r = engine.restore_to_new("src_db", "rst_bk", "latest", password=PW)
    assert 4000 in rows(r.port)
    with pytest.raises(EngineError, match="outside"):
        engine.restore_to_new("src_db", "rst_old", "2000-01-01T00:00:00Z", password=PW)
    assert engine.info("rst_old") is None
    assert parse_rfc3339(b.finished_at) >= parse_rfc3339(b.started_at)


def test_missing_wal_fails_clearly_and_leaves_nothing(engine: LocalEngine, source: int) -> None:
    with conn(source) as c:
        t = c.execute("SELECT now()").fetchone()[0]
        c.execute("INSERT INTO t VALUES (5000)")
    archive = engine.inst_dir("src_db") / "archive"
    engine.pitr.archive_now("src_db", engine.info("src_db").port)
    for seg in archive.iterdir():
        seg.unlink()  # someone deleted the local archive: the backup repository still has every segment
    healed = engine.restore_to_new("src_db", "rst_healed", to_rfc3339(t), password=PW)
    assert rows(healed.port) == list(range(1, 101))
    stanza = engine.catalog.get("src_db").stanza
    shutil.rmtree(Path(engine.repo.posix_path, "archive", stanza, "15-1"))  # and the repository's: truly gone
    with pytest.raises(EngineError, match="rolled back"):
        engine.restore_to_new("src_db", "rst_broken", to_rfc3339(t), password=PW)
    assert engine.info("rst_broken") is None and not engine.inst_dir("rst_broken").exists()
    assert engine.info("src_db").status == "available"
    assert 5000 in rows(source)


def test_restore_of_a_restored_instance(engine: LocalEngine, source: int) -> None:
    """A restored instance has its own backup and archive: it can be restored in turn."""
    r1 = engine.restore_to_new("src_db", "rst_one", "latest", password=PW)
    with conn(r1.port) as c:
        c.execute("INSERT INTO t VALUES (6000)")
        t = c.execute("SELECT now()").fetchone()[0]
        c.execute("INSERT INTO t VALUES (7000)")
    engine.destroy("src_db")  # the chain no longer needs the original source
    r2 = engine.restore_to_new("rst_one", "rst_two", to_rfc3339(t), password=PW)
    got = rows(r2.port)
    assert 6000 in got and 7000 not in got and got[:100] == list(range(1, 101))


def test_targets_at_a_base_backups_start_and_stop(engine: LocalEngine, source: int) -> None:
    b = engine.backup("src_db")
    with conn(source) as c:
        c.execute("INSERT INTO t VALUES (8000)")
    for i, edge in enumerate((b.started_at, b.finished_at)):
        r = engine.restore_to_new("src_db", f"rst_edge{i}", edge, password=PW)
        got = rows(r.port)
        assert got == list(range(1, 101)), (edge, got[-3:])  # before the later insert, nothing lost


def _digests(d: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.iterdir()) if p.is_file()}


def test_linked_wal_leaves_the_sources_archive_byte_identical(engine: LocalEngine, source: int,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    """The restore hard-links archived segments into the new cluster's pg_wal; the restored instance then
    runs, writes, checkpoints, switches and archives WAL for a while: not one byte of the source's archive
    changes, the new instance archives nothing twice, and its pg_wal shares no file with any archive."""
    with conn(source) as c:
        c.execute("INSERT INTO t SELECT generate_series(101, 50000)")
    archive = engine.inst_dir("src_db") / "archive"
    engine.pitr.archive_now("src_db", engine.info("src_db").port)
    before = _digests(archive)
    with caplog.at_level(logging.INFO, logger="pulumi_dbos.engine"):
        r = engine.restore_to_new("src_db", "rst_link", "latest", password=PW)
    assert "archived WAL linked" in caplog.text
    assert rows(r.port)[-1] == 50000
    wal = engine.inst_dir("rst_link") / "data" / "pg_wal"

    def linked() -> list[str]:
        return [p.name for p in wal.iterdir() if p.is_file() and os.lstat(p).st_nlink > 1]

    def recycle() -> str:
        with engine.server.admin("rst_link", r.port) as su:
            return str(su.execute("SHOW wal_recycle").fetchone()[0])  # type: ignore[index]

    still = linked()
    assert not still or recycle() == "off", still  # never recycling a segment shared with an archive
    with conn(r.port) as c:
        for _ in range(4):  # new WAL on the new timeline: segments written, recycled, archived
            c.execute("INSERT INTO t SELECT generate_series(1, 40000)")
            c.execute("DELETE FROM t WHERE x < 0")
            with engine.server.admin("rst_link", r.port) as su:
                su.execute("CHECKPOINT")
                su.execute("SELECT pg_switch_wal()")
    engine.pitr.archive_now("rst_link", r.port)
    after = {k: v for k, v in _digests(archive).items() if k in before}
    assert after == before
    assert linked() == []  # the checkpoints deleted the old timeline's segments: the links are gone
    engine.server.write_conf("rst_link", r.port)  # the next configuration written turns recycling back on
    with engine.server.admin("rst_link", r.port) as su:
        su.execute("SELECT pg_reload_conf()")
    assert wait_until(lambda: recycle() == "on", 10, "wal_recycle back on")
    assert engine.info("rst_link").status == "available"
    assert "already exists" not in engine.layout.log_tail("rst_link")  # no archive_command failed on a link


def test_a_restore_across_filesystems_copies_the_wal(engine: LocalEngine, source: int, tmp_path: Path,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    """The source's archive on another filesystem (a tmpfs mounted over it): no hard link is possible, the
    segments are copied, the restore is the same."""
    archive = engine.inst_dir("src_db") / "archive"
    saved = tmp_path / "archive"
    shutil.copytree(archive, saved)
    st = os.stat(archive)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512m,mode=0700", "tmpfs", str(archive)], check=True)  # noqa: S603,S607
    try:
        os.chown(archive, st.st_uid, st.st_gid)
        for f in saved.iterdir():
            shutil.copy2(f, archive / f.name)
            os.chown(archive / f.name, st.st_uid, st.st_gid)
        with conn(source) as c:
            c.execute("INSERT INTO t VALUES (4242)")
        with caplog.at_level(logging.INFO, logger="pulumi_dbos.engine"):
            r = engine.restore_to_new("src_db", "rst_xfs", "latest", password=PW)
        assert "archived WAL copied" in caplog.text
        assert rows(r.port)[-1] == 4242
        assert os.stat(archive).st_dev != os.stat(engine.inst_dir("rst_xfs") / "data" / "pg_wal").st_dev
    finally:
        engine.server.kill("src_db")  # stops archiving into the mount; the fixture removes the rest
        subprocess.run(["umount", "-l", str(archive)], check=False)  # noqa: S603,S607
