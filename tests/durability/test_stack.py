"""The losses of issue 29 through the real pulumi CLI: a stack whose instance lost its directory, and a stack
that destroyed an instance and then restores it by name."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import Any

import psycopg
import pytest
from pulumi import automation as auto

from pulumi_dbos.engine import LocalEngine
from tests.durability.test_repository import first_repo_backup
from tests.e2e.conftest import INSTANCES_AND_RESTORES, _pulumi_on_path, make_project  # noqa: F401

PW = "Stack-durable-pw1"


def spec(**extra: Any) -> dict[str, Any]:
    return {"instances": {"db1": {"instance_name": "lost_db", "username": "app_user"}}, **extra}


def fill(port: int, n: int) -> None:
    with psycopg.connect(host="127.0.0.1", port=port, user="app_user", password=PW, dbname="postgres",
                         autocommit=True) as c:
        c.execute("CREATE TABLE t (x int)")
        for x in range(1, n + 1):
            c.execute("INSERT INTO t VALUES (%s)", (x,))


def count(port: int) -> int:
    with psycopg.connect(host="127.0.0.1", port=port, user="app_user", password=PW, dbname="postgres") as c:
        return int(c.execute("SELECT count(*) FROM t").fetchone()[0])  # type: ignore[index]


def test_directory_removed_is_lost_refused_then_recovered(make_project: Any) -> None:  # noqa: F811
    p = make_project(INSTANCES_AND_RESTORES)
    p.set_spec(spec(), {"db1": PW})
    p.up()
    eng = LocalEngine(p.data_dir)
    port = eng.info("lost_db").port
    first_repo_backup(eng, "lost_db")
    fill(port, 400)
    eng.pitr.archive_now("lost_db", port)
    pid = eng.server.pid("lost_db")
    os.kill(pid, signal.SIGKILL)
    time.sleep(0.3)
    import shutil
    shutil.rmtree(eng.inst_dir("lost_db"))  # someone rm -rf'd it (or the disk went)

    p.stack.refresh(on_output=lambda _: None)
    state = p.resource("db1")
    assert state is not None and state["status"] == "lost"  # kept, not "- deleted"
    assert state["earliest_restorable_time"] and state["latest_restorable_time"]
    with pytest.raises(auto.CommandError) as err:
        p.up()
    assert "is lost" in str(err.value) and "pulumi-dbos db recover lost_db" in str(err.value)
    assert eng.repo.of_instance("lost_db")[0].backups  # the backups were not touched
    assert not eng.pgdata("lost_db").exists()  # and nothing empty was made in its place

    cp = subprocess.run([sys.executable, "-m", "pulumi_dbos.cli", "db", "recover", "lost_db",  # noqa: S603
                         "--data-dir", str(p.data_dir)], capture_output=True, text=True, timeout=600)
    assert cp.returncode == 0, cp.stderr
    p.up(refresh=True)
    assert p.resource("db1")["status"] == "available"
    assert count(eng.info("lost_db").port) == 400


def test_destroyed_instance_restores_by_name_within_retention(make_project: Any) -> None:  # noqa: F811
    p = make_project(INSTANCES_AND_RESTORES)
    p.set_spec(spec(), {"db1": PW})
    p.up()
    eng = LocalEngine(p.data_dir)
    first_repo_backup(eng, "lost_db")
    fill(eng.info("lost_db").port, 50)
    p.set_spec({"instances": {}})
    p.up()  # the instance is destroyed ...
    assert eng.info("lost_db") is None
    # ... and restored by name from the repository, password given explicitly (the source left the program)
    p.set_spec({"restores": {"r1": {"instance_name": "lost_back", "source": "lost_db", "restore_time": "latest",
                                    "pw": "pw_db1"}}}, {"db1": PW})
    p.up()
    assert p.resource("r1")["status"] == "available"
    assert count(eng.info("lost_back").port) == 50
