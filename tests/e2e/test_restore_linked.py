"""RestoredInstance and LinkedInstance through the real pulumi CLI."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from pulumi import automation as auto

from pulumi_dbos.engine import LocalEngine
from tests.e2e.conftest import PROGRAM_HEADER

PW = "Restore-e2e-pw1"

PROGRAM = PROGRAM_HEADER + """
src = dbos.DatabaseInstance("src", instance_name="e2e_src", username="app_user", password=cfg.require_secret("pw"))
outs = {"src": src.database_url}
if "restore" in spec:
    kw = dict(spec["restore"])
    r = dbos.RestoredInstance("rst", instance_name=kw.pop("instance_name", "e2e_rst"), source=kw.pop("source", src), **kw)
    outs["rst"] = r.database_url
    pulumi.export("restored_to", r.restored_to)
if "link" in spec:
    l = dbos.LinkedInstance("lnk", instance_name="e2e_lnk", password=cfg.require_secret("link_pw"), **spec["link"])
    pulumi.export("link_status", l.status)
    outs["lnk"] = l.database_url
pulumi.export("urls", pulumi.Output.secret(outs))
"""


def test_restore_through_pulumi(make_project: Any) -> None:
    p = make_project(PROGRAM)
    p.stack.set_config("pw", auto.ConfigValue(PW, secret=True))
    p.set_spec({})
    p.up()
    with psycopg.connect(p.outputs()["urls"]["src"], autocommit=True) as c:
        c.execute("CREATE TABLE t (x int)")
        c.execute("INSERT INTO t VALUES (1)")
        t = c.execute("SELECT now()").fetchone()[0].isoformat()
        c.execute("INSERT INTO t VALUES (2)")

    for bad, why in [("2999-01-01T00:00:00Z", "future"), ("2026-11-25T10:00:00", "offset"),
                     ("2000-01-01T00:00:00Z", "outside")]:
        p.set_spec({"restore": {"restore_time": bad}})
        with pytest.raises(auto.CommandError, match=why):
            p.preview()
    assert LocalEngine(p.data_dir).info("e2e_rst") is None

    p.set_spec({"restore": {"restore_time": t, "deletion_protection": True}})
    p.up()
    with psycopg.connect(p.outputs()["urls"]["rst"]) as c:
        assert [r[0] for r in c.execute("SELECT x FROM t")] == [1]
    assert p.outputs()["restored_to"]
    assert PW not in p.export_text()
    # no perpetual diff
    assert not p.preview().change_summary.get("update")
    # changing restore_time is a replace: refused while protected
    p.set_spec({"restore": {"restore_time": "latest", "deletion_protection": True}})
    with pytest.raises(auto.CommandError, match="deletion_protection"):
        p.preview()
    p.set_spec({"restore": {"restore_time": t, "deletion_protection": False}})
    p.up()
    p.set_spec({"restore": {"restore_time": "latest"}})
    assert p.preview().change_summary.get("replace") == 1
    p.up()
    with psycopg.connect(p.outputs()["urls"]["rst"]) as c:
        assert sorted(r[0] for r in c.execute("SELECT x FROM t")) == [1, 2]
    p.destroy()


def test_linked_instance(make_project: Any, tmp_root: Any) -> None:
    # the "external" server: a cluster in another data dir, not managed by this stack
    ext_engine = LocalEngine(tmp_root / "ext")
    ext = ext_engine.provision("external", "ext_user", "External-pw1")
    with psycopg.connect(host="127.0.0.1", port=ext.port, user="ext_user", password="External-pw1",
                         dbname="postgres", autocommit=True) as c:
        c.execute("CREATE TABLE precious (x int)")
        c.execute("INSERT INTO precious VALUES (7)")
    p = make_project(PROGRAM)
    p.stack.set_config("pw", auto.ConfigValue(PW, secret=True))
    p.stack.set_config("link_pw", auto.ConfigValue("Wrong-passw0rd", secret=True))
    link = {"hostname": "127.0.0.1", "port": ext.port, "username": "ext_user"}
    p.set_spec({"link": link})
    with pytest.raises(auto.CommandError, match="cannot connect"):
        p.up()
    p.stack.set_config("link_pw", auto.ConfigValue("External-pw1", secret=True))
    p.up()
    assert p.outputs()["link_status"] == "available"
    assert any(i.name == "e2e_lnk" and i.is_linked for i in LocalEngine(p.data_dir).list())
    with psycopg.connect(p.outputs()["urls"]["lnk"]) as c:
        assert c.execute("SELECT x FROM precious").fetchone() == (7,)
    # a restore from a linked source fails at preview, and so does a target name that exists
    p.set_spec({"link": link, "restore": {"restore_time": "latest", "source": "e2e_lnk"}})
    with pytest.raises(auto.CommandError, match="linked instance"):
        p.preview()
    p.set_spec({"link": link, "restore": {"restore_time": "latest", "instance_name": "e2e_lnk"}})
    with pytest.raises(auto.CommandError, match="already exists"):
        p.preview()
    p.set_spec({"link": link})
    ext_engine.stop("external")
    p.stack.refresh(on_output=lambda _: None)
    assert p.resource("lnk")["status"] == "unreachable"
    ext_engine.start("external")
    # the password is changed on the server by its owner; the update verifies the new one and stores it
    p.set_spec({"link": link})
    p.stack.set_config("link_pw", auto.ConfigValue("External-pw2", secret=True))
    with pytest.raises(auto.CommandError, match="cannot connect"):
        p.up()  # not changed on the server yet
    ext_engine.reset_credentials("external", "ext_user", "External-pw2")
    p.up()
    with psycopg.connect(p.outputs()["urls"]["lnk"]) as c:
        assert c.execute("SELECT x FROM precious").fetchone() == (7,)
    p.set_spec({})
    p.up()  # unlinks
    assert LocalEngine(p.data_dir).info("e2e_lnk") is None
    with psycopg.connect(host="127.0.0.1", port=ext.port, user="ext_user", password="External-pw2",
                         dbname="postgres") as c:
        assert c.execute("SELECT x FROM precious").fetchone() == (7,)
