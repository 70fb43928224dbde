"""The CLI over a real engine, and retention pruning."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest

from pulumi_dbos.cli import main
from pulumi_dbos.engine import LocalEngine
from pulumi_dbos.timeutil import to_rfc3339, utcnow

PW = "Cli-passw0rd"


def test_db_list_status_url(engine: LocalEngine, data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    info = engine.provision("cli_db", "app_user", PW)
    assert main(["--data-dir", str(data_dir), "db", "list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["name"] == "cli_db" and rows[0]["linked"] is False and rows[0]["port"] == info.port
    assert main(["--data-dir", str(data_dir), "db", "status", "cli_db"]) == 0
    assert "available" in capsys.readouterr().out
    assert main(["--data-dir", str(data_dir), "db", "url", "cli_db"]) == 0
    assert capsys.readouterr().out.strip() == f"postgresql://app_user@127.0.0.1:{info.port}/postgres"
    assert main(["--data-dir", str(data_dir), "db", "status", "nope_db"]) == 1
    assert "not found" in capsys.readouterr().err
    assert main(["--data-dir", str(data_dir), "db", "backup", "cli_db"]) == 0
    assert "base backup" in capsys.readouterr().out


def test_retention_prunes_but_keeps_the_window_restorable(engine: LocalEngine) -> None:
    info = engine.provision("ret_db", "app_user", PW)
    with psycopg.connect(host="127.0.0.1", port=info.port, user="app_user", password=PW, dbname="postgres",
                         autocommit=True) as c:
        c.execute("CREATE TABLE t (x int)")
        c.execute("INSERT INTO t VALUES (1)")
    engine.backup("ret_db")
    engine.backup("ret_db")
    backups = engine.catalog.backups("ret_db")
    assert len(backups) == 3
    # pretend the first two are 3 hours old
    old = to_rfc3339(utcnow() - timedelta(hours=3))
    for b in backups[:2]:
        with engine.catalog._connect() as db:
            db.execute("UPDATE backups SET finished_at = ?, started_at = ? WHERE backup_id = ?",
                       (old, old, b.backup_id))
    engine.set_retention("ret_db", 1)
    kept = engine.catalog.backups("ret_db")
    assert [b.backup_id for b in kept] == [backups[1].backup_id, backups[2].backup_id]
    assert not Path(backups[0].path).exists()
    # every time inside the window is still restorable
    r = engine.restore_to_new("ret_db", "ret_r", "latest", password=PW)
    with psycopg.connect(host="127.0.0.1", port=r.port, user="app_user", password=PW, dbname="postgres") as c:
        assert c.execute("SELECT x FROM t").fetchone() == (1,)
