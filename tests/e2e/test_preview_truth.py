"""Previews that misstated what `pulumi up` does (issue 32), each through the real pulumi CLI on the local
engine, comparing what the preview said with what `up` then did (instances, apps, rows, processes):

1. renaming an instance a RestoredInstance restores from (at a past time) is refused at preview, naming the
   restore and its source (a brand-new instance holds nothing as of a past time); `up` changes nothing;
2. an App's ``port`` change (with ``drop_on_delete=True``) is an update of ``port`` alone: `up` moves the
   app to the new port, the same version serving, its rows kept; a replace of such an app says at preview
   (and in preview-report) that its databases are dropped;
3. the same with ``previous_version`` set: the stored version keeps serving on the new port, the versions kept;
4. ``App(adopt=True)`` bound to another instance than the running app's: the notice says it moves from
   instance A to instance B, onto an empty database;
5. with the engine's data dir missing, a preview says the engine's data is missing (not that
   ``previous_version`` is not stored).
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import conninfo

from pulumi_dbos.engine import get_engine
from pulumi_dbos.report import render
from tests.e2e.conftest import Project
from tests.e2e.test_app import (  # noqa: F401 - leftovers, project: fixtures
    PROGRAM,
    backend_processes,
    claims_of,
    get,
    inst,
    leftovers,
    project,
    reachable,
    rfc3339_now,
    rows,
    start_workflow,
    wait_workflow,
    with_greeting,
)
from tests.e2e.test_previews import detailed, json_preview, pulumi, steps
from tests.support.serve import free_port

pytestmark = pytest.mark.e2e

PW = "Truth-e2e-passw0rd"


def instance_names(p: Project) -> set[str]:
    """The instances the project's engine holds (its catalog, not the stack's state)."""
    return {i.name for i in get_engine("local", str(p.data_dir)).list()}


def ops(pv: dict[str, Any]) -> dict[str, str]:
    return {n: s["op"] for n, s in steps(pv).items()}


def up_changes(p: Project) -> dict[str, int]:
    res = p.up()
    return {str(k): v for k, v in res.summary.resource_changes.items() if k != "same"}


# ---------------------------------------------------------------------------------------------- 2, 3
def test_app_port_change_is_an_update_that_keeps_data_and_versions(project: Any) -> None:  # noqa: F811
    p, src = project()
    spec: dict[str, Any] = {"instances": {"a": inst("pt_a")},
                            "app": {"instance": "a", "source": str(src), "drop_on_delete": True}}
    p.set_spec(spec, {"a": PW})
    p.up()
    v1 = p.outputs()["version"]
    with_greeting(src, "Howdy")
    p.up()
    v2 = p.outputs()["version"]
    assert v2 != v1
    spec["app"]["previous_version"] = v1  # 3: a stored version serving
    p.set_spec(spec)
    p.up()
    out = p.outputs()
    old_url = out["app_url"]
    assert get(old_url + "/")["version"] == v1
    wait_workflow(old_url, start_workflow(old_url, "ann"), "SUCCESS")
    before_rows = rows(old_url)
    assert before_rows == [("ann", "started"), ("ann", "done")]
    instance_before = {k: p.resource("a")[k] for k in ("port", "status", "hostname")}  # type: ignore[index]

    # the preview: an update of `port` alone, nothing lost
    port = free_port()
    spec["app"]["port"] = port
    p.set_spec(spec)
    pv = json_preview(p)
    assert ops(pv) == {"greet": "update"}, ops(pv)
    assert detailed(steps(pv)["greet"]) == {"port": "add"}  # an allocated port so far: no input
    md = render(pv)
    assert "CAUTION" not in md and "it moves to another port" in md, md

    # what `up` does: the same version serves on the new port, with its rows; the old port is free
    assert up_changes(p) == {"update": 1}
    out = p.outputs()
    url = out["app_url"]
    assert url.endswith(f":{port}"), url
    body = get(url + "/")
    assert body["version"] == v1 and body["greeting"] == "Hello", body
    assert rows(url) == before_rows
    assert not reachable(old_url + "/")
    assert {v["version"] for v in out["versions"]} >= {v1, v2}
    assert out["status"] == "AVAILABLE" and out["instance_name"] == "pt_a"
    assert len(backend_processes(p.data_dir)) == 1
    old_port = int(old_url.rsplit(":", 1)[1])
    assert claims_of(p.data_dir).get(port) == "app:greet" and old_port not in claims_of(p.data_dir)
    assert {k: p.resource("a")[k] for k in ("port", "status", "hostname")} == instance_before  # type: ignore[index]
    assert not steps(json_preview(p))  # converged

    # drop_on_delete off: an update of that field that `up` only records (the serving process stays)
    serving = [b.pid for b in backend_processes(p.data_dir)]
    spec["app"]["drop_on_delete"] = False
    p.set_spec(spec)
    pv = json_preview(p)
    assert ops(pv) == {"greet": "update"} and detailed(steps(pv)["greet"]) == {"drop_on_delete": "update"}
    assert up_changes(p) == {"update": 1}
    assert [b.pid for b in backend_processes(p.data_dir)] == serving and rows(url) == before_rows
    spec["app"]["drop_on_delete"] = True
    p.set_spec(spec)
    p.up()

    # a change that does replace the app (another app_db_name) says at preview that its databases are dropped
    p.set_spec({**spec, "app": {**spec["app"], "app_db_name": "greet_other"}})
    cp = pulumi(p, "preview", "--diff")
    text = cp.stdout + cp.stderr
    assert "warning: pulumi-dbos: App 'greet': changing app_db_name replaces it" in text, text
    assert "databases 'greet' and 'greet_dbos_sys' will be dropped" in text, text
    pv = json_preview(p)
    assert ops(pv) == {"greet": "replace"}
    md = render(pv)
    assert "[!CAUTION]" in md and "`greet`" in md and "dropped" in md, md


# ---------------------------------------------------------------------------------------------- 1
def test_renaming_a_restores_source_is_refused_at_preview(project: Any) -> None:  # noqa: F811
    p, _ = project()
    p.set_spec({"instances": {"b": inst("pv_b")}}, {"b": PW})
    p.up()
    time.sleep(1.0)
    t = rfc3339_now()
    time.sleep(1.0)
    spec: dict[str, Any] = {"instances": {"b": inst("pv_b")},
                            "restores": {"r": {"instance_name": "pv_r", "source": "b", "restore_time": t}}}
    p.set_spec(spec)
    p.up()
    before = instance_names(p)
    assert before == {"pv_b", "pv_r"}
    state_before = {n: p.resource(n) for n in ("b", "r")}

    p.set_spec({**spec, "instances": {"b": inst("pv_b2")}})
    cp = pulumi(p, "preview", check=False)
    out = cp.stdout + cp.stderr
    assert cp.returncode != 0, out
    assert "'pv_r'" in out and "'pv_b2'" in out and "resource 'b'" in out and "Traceback" not in out, out
    assert "does not exist yet" in out, out
    # `up` does what the preview said: nothing
    cp = pulumi(p, "up", "--yes", check=False)
    assert cp.returncode != 0
    assert instance_names(p) == before
    assert {n: p.resource(n) for n in ("b", "r")} == state_before

    # a restore created in the same update as its brand-new source at a past time: refused too
    p.set_spec({"instances": {"b": inst("pv_b"), "c": inst("pv_c")},
                "restores": {**spec["restores"], "s": {"instance_name": "pv_s", "source": "c", "restore_time": t}}},
               {"b": PW, "c": PW})
    cp = pulumi(p, "preview", check=False)
    out = cp.stdout + cp.stderr
    assert cp.returncode != 0 and "'pv_s'" in out and "'pv_c'" in out and "does not exist yet" in out, out
    # at `latest` it is fine (the new instance's newest point)
    p.set_spec({"instances": {"b": inst("pv_b"), "c": inst("pv_c")},
                "restores": {**spec["restores"],
                             "s": {"instance_name": "pv_s", "source": "c", "restore_time": "latest"}}})
    pulumi(p, "preview")


# ---------------------------------------------------------------------------------------------- 4
def test_adopting_an_app_onto_another_instance_says_it_moves_onto_an_empty_database(
        project: Any, make_project: Any, leftovers: list[Path]) -> None:  # noqa: F811
    p, src = project()
    p.set_spec({"instances": {"a": inst("ad_a")}, "app": {"instance": "a", "source": str(src)}}, {"a": PW})
    p.up()
    url = p.outputs()["app_url"]
    wait_workflow(url, start_workflow(url, "ann"), "SUCCESS")
    assert rows(url) == [("ann", "started"), ("ann", "done")]
    a_url = p.outputs()["urls"]["a"]

    q = make_project(PROGRAM)  # another stack on the same engine adopts the app, bound to its own instance
    leftovers.append(q.root)
    with (q.work / "Pulumi.test.yaml").open("w") as f:
        f.write(f"config:\n  dbos:dataDir: {json.dumps(str(p.data_dir))}\n")
    q.set_spec({"instances": {"c": inst("ad_c")}}, {"c": PW})
    q.up()
    q.set_spec({"instances": {"c": inst("ad_c")}, "app": {"instance": "c", "source": str(src), "adopt": True}})
    out = pulumi(q, "preview").stdout
    assert "app 'greet' exists" in out and "will be adopted (adopt=True)" in out, out
    assert "moves it from instance 'ad_a' to instance 'ad_c'" in out, out
    assert "onto an empty database" in out and "rows stay on 'ad_a'" in out, out

    # what `up` does: the app serves from ad_c, whose database is empty; ad_a keeps the rows
    q.up()
    assert q.outputs()["instance_name"] == "ad_c"
    assert q.outputs()["app_url"] == url and rows(url) == []
    with psycopg.connect(conninfo.make_conninfo(a_url, dbname="greet"), connect_timeout=10) as c:
        assert c.execute("SELECT name, status FROM greetings ORDER BY id").fetchall() == [("ann", "started"),
                                                                                          ("ann", "done")]
    q.destroy()  # q manages the app now


# ---------------------------------------------------------------------------------------------- 5
def test_a_missing_data_dir_is_named_at_preview_not_a_missing_version(project: Any) -> None:  # noqa: F811
    p, src = project()
    spec: dict[str, Any] = {"instances": {"a": inst("md_a")}, "app": {"instance": "a", "source": str(src)}}
    p.set_spec(spec, {"a": PW})
    p.up()
    v1 = p.outputs()["version"]
    with_greeting(src, "Howdy")
    p.up()
    spec["app"]["previous_version"] = v1
    p.set_spec(spec)
    away = p.data_dir.with_name("d.away")
    p.data_dir.rename(away)
    try:
        cp = pulumi(p, "preview", check=False)
        out = cp.stdout + cp.stderr
        assert cp.returncode != 0, out
        assert "is not a stored version" not in out, out
        assert f"the engine's data in {p.data_dir} is missing" in out and "previous_version" in out, out
        cp = pulumi(p, "up", "--yes", check=False)  # `up` stops at the same check: nothing made
        assert cp.returncode != 0 and f"the engine's data in {p.data_dir} is missing" in cp.stdout + cp.stderr
        assert not p.data_dir.exists()
    finally:
        shutil.rmtree(p.data_dir, ignore_errors=True)
        away.rename(p.data_dir)
    # with its data back, the same change previews and applies: v1 serves again
    assert ops(json_preview(p)) == {"greet": "update"}
    p.up()
    assert get(p.outputs()["app_url"] + "/")["version"] == v1
