"""DatabaseInstance through the real pulumi CLI."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
from pulumi import automation as auto

from pulumi_dbos.engine import LocalEngine

PW = "E2e-first-pw1"
PW2 = "E2e-second-pw2"


def base_spec(**kw: Any) -> dict[str, Any]:
    return {"instances": {"db1": {"instance_name": "e2e_db1", "username": "app_user", **kw}}}


def test_lifecycle(make_project: Any) -> None:
    p = make_project()
    p.set_spec(base_spec(), {"db1": PW})
    p.up()
    out = p.outputs()
    assert out["status"]["db1"] == "available"
    url = out["urls"]["db1"]
    with psycopg.connect(url) as conn:
        conn.execute("CREATE TABLE kept (x int)")
        conn.execute("INSERT INTO kept VALUES (42)")

    # running again is a no-op
    assert p.preview().change_summary.get("same") == 2

    # no plaintext password anywhere in the state
    assert PW not in p.export_text()

    # password change: update in place, old password stops working, data kept
    p.set_spec(base_spec(), {"db1": PW2})
    pv = p.preview()
    assert pv.change_summary.get("update") == 1 and not pv.change_summary.get("replace")
    p.up()
    port = p.outputs()["ports"]["db1"]
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(host="127.0.0.1", port=port, user="app_user", password=PW, dbname="postgres")
    with psycopg.connect(p.outputs()["urls"]["db1"]) as conn:
        assert conn.execute("SELECT x FROM kept").fetchone() == (42,)
    assert PW2 not in p.export_text()

    # retention / deletion_protection: update; username / instance_name: replace
    p.set_spec(base_spec(retention_hours=48))
    assert p.preview().change_summary.get("update") == 1
    p.set_spec(base_spec(username="other_user"))
    assert p.preview().change_summary.get("replace") == 1
    p.set_spec({"instances": {"db1": {"instance_name": "e2e_db2", "username": "app_user"}}})
    assert p.preview().change_summary.get("replace") == 1

    # out-of-band stop: refresh reports it, next up starts it
    p.set_spec(base_spec())
    eng = LocalEngine(p.data_dir)
    eng.stop("e2e_db1")
    p.stack.refresh(on_output=lambda _: None)
    assert p.resource("db1")["status"] == "stopped"
    p.up()
    assert p.outputs()["status"]["db1"] == "available"
    with psycopg.connect(p.outputs()["urls"]["db1"]) as conn:
        assert conn.execute("SELECT x FROM kept").fetchone() == (42,)

    # destroy stops the server and removes its directory
    pid = int((eng.pgdata("e2e_db1") / "postmaster.pid").read_text().split()[0])
    p.destroy()
    assert not eng.inst_dir("e2e_db1").exists()
    time.sleep(0.2)
    assert not Path(f"/proc/{pid}/cmdline").exists() or b"postgres" not in Path(f"/proc/{pid}/cmdline").read_bytes()


def test_bad_inputs_fail_at_preview_and_create_nothing(make_project: Any) -> None:
    p = make_project()
    p.set_spec({"instances": {"db1": {"instance_name": "Bad-Name", "username": "postgres"}}}, {"db1": "short"})
    with pytest.raises(auto.CommandError) as err:
        p.preview()
    text = str(err.value)
    assert "instance_name" in text and "username" in text and "password" in text
    assert "reserved" in text and "8-128" in text
    assert not p.data_dir.exists() or not any((p.data_dir / "instances").glob("*"))


def test_out_of_band_delete_drops_from_state(make_project: Any) -> None:
    p = make_project()
    p.set_spec(base_spec(), {"db1": PW})
    p.up()
    LocalEngine(p.data_dir).destroy("e2e_db1")
    p.stack.refresh(on_output=lambda _: None)
    assert p.resource("db1") is None
    p.up()  # recreated
    assert p.outputs()["status"]["db1"] == "available"


def test_deletion_protection_and_adopt(make_project: Any) -> None:
    p = make_project()
    p.set_spec(base_spec(deletion_protection=True), {"db1": PW})
    p.up()
    with pytest.raises(auto.CommandError) as err:
        p.destroy()
    # deletion_protection=True is Pulumi's `protect`: its message says how to lift it
    assert "cannot be deleted" in str(err.value) and "protect" in str(err.value)
    eng = LocalEngine(p.data_dir)
    assert eng.info("e2e_db1") is not None

    # a second stack adopts the existing instance instead of failing
    q = make_project()
    q.stack.set_config("dbos:dataDir", auto.ConfigValue(str(p.data_dir)))
    q.set_spec(base_spec(), {"db1": PW2})
    with pytest.raises(auto.CommandError, match="already exists"):
        q.preview()
    q.set_spec(base_spec(adopt=True), {"db1": PW2})
    q.up()
    with psycopg.connect(q.outputs()["urls"]["db1"]) as conn:
        conn.execute("SELECT 1")

    p.set_spec(base_spec(deletion_protection=False))
    p.up()
    p.destroy()
    assert eng.info("e2e_db1") is None


def test_killed_server_is_restarted_by_up(make_project: Any) -> None:
    p = make_project()
    p.set_spec(base_spec(), {"db1": PW})
    p.up()
    eng = LocalEngine(p.data_dir)
    pid = int((eng.pgdata("e2e_db1") / "postmaster.pid").read_text().split()[0])
    os.kill(pid, signal.SIGKILL)
    time.sleep(0.3)
    p.stack.refresh(on_output=lambda _: None)
    assert p.resource("db1")["status"] == "stopped"
    p.up()
    with psycopg.connect(p.outputs()["urls"]["db1"]) as conn:
        conn.execute("SELECT 1")


def test_explicit_port(make_project: Any) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    p = make_project()
    p.set_spec(base_spec(port=port), {"db1": PW})
    p.up()
    assert p.outputs()["ports"]["db1"] == port
    with psycopg.connect(host="127.0.0.1", port=port, user="app_user", password=PW, dbname="postgres") as c:
        c.execute("SELECT 1")
    # moving the port is an in-place update
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port2 = s.getsockname()[1]
    p.set_spec(base_spec(port=port2))
    assert p.preview().change_summary.get("update") == 1
    p.up()
    with psycopg.connect(host="127.0.0.1", port=port2, user="app_user", password=PW, dbname="postgres") as c:
        c.execute("SELECT 1")
