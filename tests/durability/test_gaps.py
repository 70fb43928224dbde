"""The restorable window and drills tell the truth about the WAL chain (issue 29): a segment missing from the
local cache and from the repository cuts the window, a drill names it, and a segment missing from the cache
alone is fetched from the repository."""

from __future__ import annotations

from pathlib import Path

import pytest

from pulumi_dbos.engine import LocalEngine
from pulumi_dbos.errors import EngineError
from pulumi_dbos.timeutil import parse_rfc3339, to_rfc3339
from tests.durability.test_repository import PW, conn, first_repo_backup, insert, rows


def segments(engine: LocalEngine, name: str) -> list[str]:
    return sorted(p.name for p in engine.layout.archive(name).iterdir() if len(p.name) == 24)


def lose(engine: LocalEngine, name: str, seg: str, *, repo: bool) -> None:
    (engine.layout.archive(name) / seg).unlink()
    if repo:
        stanza = engine.catalog.get(name).stanza
        found = list(Path(engine.repo.posix_path, "archive", stanza).glob(f"*/*/{seg}-*"))
        assert found, f"{seg} is not in the repository"
        for f in found:
            f.unlink()


@pytest.fixture
def chain(engine: LocalEngine) -> tuple[LocalEngine, int, list[str], str]:
    """An instance with segments before and after a second base backup: (engine, port, segments between
    the first and the second backup, the time just before the second)."""
    info = engine.provision("gap_db", "app_user", PW)
    first_repo_backup(engine, "gap_db")
    insert(info.port, 1, 10)
    for _ in range(3):
        engine.pitr.archive_now("gap_db", info.port)
    with conn(info.port) as c:
        before = to_rfc3339(c.execute("SELECT now()").fetchone()[0])
    middle = segments(engine, "gap_db")
    engine.backup("gap_db")
    insert(info.port, 11, 20)
    for _ in range(3):
        engine.pitr.archive_now("gap_db", info.port)
    newest_start = engine.catalog.backups("gap_db")[-1].start_wal
    return engine, info.port, [s for s in middle[1:] if s < newest_start], before


def test_gap_before_the_newest_backup_moves_the_window_and_the_drill_names_it(chain: tuple) -> None:
    engine, port, middle, before = chain
    earliest_then = engine.info("gap_db").earliest_restorable_time
    assert parse_rfc3339(earliest_then) <= parse_rfc3339(before)  # restorable before the gap, for now
    lost = middle[len(middle) // 2]
    lose(engine, "gap_db", lost, repo=True)
    info = engine.info("gap_db")
    newest = engine.catalog.backups("gap_db")[-1]
    assert info.earliest_restorable_time == newest.finished_at  # the window starts after the gap
    with pytest.raises(EngineError, match="outside the restorable window"):
        engine.restore_to_new("gap_db", "gap_old", before, password=PW)
    result = engine.drill("gap_db")
    assert result.ok and lost in (result.reason or "")


def test_gap_after_the_newest_backup_fails_the_drill_naming_the_segment(chain: tuple) -> None:
    engine, port, _middle, _before = chain
    newest_start = engine.catalog.backups("gap_db")[-1].start_wal
    after = [s for s in segments(engine, "gap_db") if s > newest_start]
    lost = after[0]
    lose(engine, "gap_db", lost, repo=True)
    result = engine.drill("gap_db")
    assert not result.ok
    assert lost in (result.reason or "") and "pulumi-dbos db backup gap_db" in (result.reason or "")


def test_gap_in_the_local_cache_only_is_read_from_the_repository(chain: tuple) -> None:
    engine, port, _middle, _before = chain
    newest_start = engine.catalog.backups("gap_db")[-1].start_wal
    after = [s for s in segments(engine, "gap_db") if s > newest_start]
    lose(engine, "gap_db", after[0], repo=False)
    assert engine.pitr.gaps(engine.catalog.get("gap_db")) == []  # the repository has it: no gap
    back = engine.restore_to_new("gap_db", "gap_back", "latest", password=PW)
    assert rows(back.port) == list(range(1, 21))
    assert engine.drill("gap_db").ok
