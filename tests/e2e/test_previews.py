"""What `pulumi preview` says is what `pulumi up` does (issue 19), through the real pulumi CLI:

1. a password rotation previews as ``~ password`` on the instance and ``~ instance_password`` on the app
   bound to it, nothing else; inputs hold only what the program gave (no allocated host or port), so the
   next no-change preview shows nothing and asks no engine (its data dir is away while it runs; serve's
   access log shows no request);
   the ``detailedDiff`` of a port change, an app code change, an instance move and a replace name
   exactly their fields, update or replace each;
2. recovery's last step: after restore-at-T + move + previous_version in one `up`, removing the original
   (the restore now names its source as a string) deletes the original only; the restore keeps its
   password, the app is untouched and serving (local engine);
3. an app of this name that another stack manages is refused at preview, naming it and `adopt`; with
   ``adopt=True`` the preview (and ``preview-report``) says whose app it takes over and that `up` deploys
   a new version over the running one;
4. adopting an instance with the wrong username fails at preview (engine-neutral words); a right one
   previews saying the password will be reset.

1, 3 and 4 on the local engine and on dbos-cloud via serve.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from pulumi import automation as auto

from pulumi_dbos.report import render
from tests.conftest import ROOT
from tests.e2e.conftest import Project
from tests.e2e.test_app import PROGRAM, get, http, inst, rfc3339_now, with_greeting
from tests.e2e.test_dbos_cloud_stack import REQUEST
from tests.support.serve import Serve, free_port, running_serve

pytestmark = pytest.mark.e2e

PW, PW2 = "Preview-e2e-passw0rd", "Preview-e2e-second-pw"
INSTANCE_TYPES = ("DatabaseInstance", "RestoredInstance")


def pulumi(p: Project, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    cp = subprocess.run(["pulumi", *args, "--stack", "test", "--cwd", str(p.work)],  # noqa: S603,S607
                        capture_output=True, text=True, env={**os.environ, **(p.ws_opts.env_vars or {})},
                        timeout=600)
    if check:
        assert cp.returncode == 0, cp.stdout + cp.stderr
    return cp


def json_preview(p: Project) -> dict[str, Any]:
    return dict(json.loads(pulumi(p, "preview", "--json").stdout))


def steps(pv: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """name -> step, for the steps that change something."""
    return {s["urn"].rsplit("::", 1)[-1]: s for s in pv.get("steps") or [] if s.get("op") != "same"}


def detailed(step: dict[str, Any]) -> dict[str, str]:
    """field -> kind of the step's detailedDiff (``update``, ``update-replace``, ...)."""
    return {k: str(v.get("kind", "")).lower().replace("_", "-") for k, v in (step.get("detailedDiff") or {}).items()}


def state_inputs(p: Project, name: str) -> dict[str, Any]:
    for r in p.resources():
        if r["urn"].endswith("::" + name):
            return dict(r.get("inputs") or {})
    raise AssertionError(f"{name} is not in the state")


@pytest.fixture
def greet_project(make_project: Any) -> Callable[[], tuple[Project, Path]]:
    def make() -> tuple[Project, Path]:
        p = make_project(PROGRAM)
        src = p.root / "greet"
        shutil.copytree(ROOT / "examples" / "greet", src, ignore=shutil.ignore_patterns("__pycache__"))
        return p, src

    return make


@pytest.fixture
def stop_apps() -> Iterator[list[Project]]:
    """Projects whose stack is destroyed at the end (their app processes stopped), also when a test fails."""
    projects: list[Project] = []
    yield projects
    for p in projects:
        try:
            p.destroy()
        except Exception:  # noqa: BLE001, S112 - the data dir clean-up of make_project still runs
            continue


# ---------------------------------------------------------------------------------------------- 1, 3, 4
def test_previews_name_exactly_the_fields_that_change(greet_project: Any, make_project: Any, engine: Serve | None,
                                                       stop_apps: list[Project]) -> None:
    p, src = greet_project()
    stop_apps.append(p)
    if engine is not None:
        use_serve(p, engine)
    spec = {"instances": {"a": inst("prv_a"), "b": inst("prv_b")}, "app": {"instance": "a", "source": str(src)}}
    p.set_spec(spec, {"a": PW, "b": PW})
    p.up()
    url = p.outputs()["app_url"]
    a_inputs = state_inputs(p, "a")
    assert "hostname" not in a_inputs and a_inputs.get("port") is None, a_inputs  # inputs: what the program gave

    # a password rotation: `~ password` on the instance, `~ instance_password` on the app, nothing else
    p.set_spec(spec, {"a": PW2})
    pv = json_preview(p)
    changed = steps(pv)
    assert set(changed) == {"a", "greet"}, list(changed)
    assert detailed(changed["a"]) == {"password": "update"} and changed["a"]["diffReasons"] == ["password"]
    assert detailed(changed["greet"]) == {"instance_password": "update"}
    text = pulumi(p, "preview", "--diff").stdout
    assert "password: [secret] => [secret]" in text and "instance_password: [secret] => [secret]" in text, text
    assert "hostname" not in text and "54" not in text.split("Resources:")[0].replace(str(p.work), ""), text
    assert PW2 not in text and PW not in text
    md = render(pv)
    assert "`password`" in md and "`instance_password`" in md and PW2 not in md
    assert "its instance's password changes" in md, md
    p.up()
    assert get(url + "/")["app"] == "greet"
    assert "hostname" not in state_inputs(p, "a") and state_inputs(p, "a").get("port") is None

    # a no-change preview shows nothing and asks no engine: it succeeds with the data dir away; serve's
    # access log has no request of it
    if engine is None:
        away = p.data_dir.with_name("d.away")
        p.data_dir.rename(away)
        try:
            pv = json_preview(p)
        finally:
            away.rename(p.data_dir)
    else:
        before = len(REQUEST.findall(engine.log()))
        pv = json_preview(p)
        assert REQUEST.findall(engine.log())[before:] == []
    assert not steps(pv) and {k for k, v in pv["changeSummary"].items() if v} == {"same"}, pv["changeSummary"]

    # a port change, an app code change, an instance move, a replace: each field named, update or replace
    port = free_port()
    p.set_spec({**spec, "instances": {**spec["instances"], "a": {**inst("prv_a"), "port": port}}})
    changed = steps(json_preview(p))
    assert detailed(changed["a"]) == {"port": "update"}  # from the allocated port to a chosen one
    assert detailed(changed["greet"]) == {"instance_port": "update"}

    with_greeting(src, "Howdy")
    p.set_spec(spec)
    changed = steps(json_preview(p))
    assert set(changed) == {"greet"} and detailed(changed["greet"]) == {"version": "update"}
    with_greeting(src, "Hello")

    p.set_spec({**spec, "app": {"instance": "b", "source": str(src)}})
    changed = steps(json_preview(p))
    assert set(changed) == {"greet"}
    assert detailed(changed["greet"]) == {"instance_name": "update", "instance_port": "update",
                                          "instance_password": "update"}  # a's was rotated, b's was not

    p.set_spec({**spec, "instances": {**spec["instances"], "a": {**inst("prv_a"), "username": "other_user"}}})
    pv = json_preview(p)
    changed = steps(pv)
    assert changed["a"]["op"] == "replace" and detailed(changed["a"]) == {"username": "update-replace"}
    assert changed["a"]["replaceReasons"] == ["username"]
    assert "instance_name" in detailed(changed["greet"])  # the app follows the new instance
    assert "**replace because** `username`" in render(pv)
    p.set_spec(spec)

    # 3: another stack declaring an app of that name is refused at preview, naming the owner and adopt
    q = make_project(PROGRAM)
    if engine is None:
        q.stack.set_config("dbos:dataDir", auto.ConfigValue(str(p.data_dir)))
    else:
        use_serve(q, engine)  # the same organization
    q.set_spec({"instances": {"c": inst("prv_c")}, "app": {"instance": "c", "source": str(src)}}, {"c": PW})
    cp = pulumi(q, "preview", check=False)
    assert cp.returncode != 0
    out = cp.stdout + cp.stderr
    assert "an app named 'greet' already exists" in out and f"managed by {p.work.parent.name}/test/greet" in out
    assert "adopt=True" in out and "Traceback" not in out
    # with adopt=True it previews as a create that says whose app it takes over and that `up` deploys over it
    q.set_spec({"instances": {"c": inst("prv_c")}, "app": {"instance": "c", "source": str(src), "adopt": True}})
    out = pulumi(q, "preview").stdout
    owner = f"managed by {p.work.parent.name}/test/greet"
    taking = f"app 'greet' exists ({owner}) and will be adopted (adopt=True)"
    assert taking in out and "`pulumi up` makes this stack its manager and deploys version" in out, out
    md = render(json_preview(q))
    assert "> [!NOTE]" in md and taking in md and "deploys version" in md, md

    # 4: adopting an instance with another username fails at preview; with its own, preview says what happens
    q.set_spec({"instances": {"a": {**inst("prv_a"), "username": "wrong_user", "adopt": True}}}, {"a": PW})
    cp = pulumi(q, "preview", check=False)
    out = cp.stdout + cp.stderr
    assert cp.returncode != 0 and "already exists with user 'greet_user'" in out, out
    assert "username='greet_user'" in out and "DBOS Cloud" not in out and "Traceback" not in out
    q.set_spec({"instances": {"a": {**inst("prv_a"), "adopt": True}}})
    out = pulumi(q, "preview").stdout
    assert "will be adopted" in out and "resets its user's password" in out, out


# ---------------------------------------------------------------------------------------------- 2
@pytest.fixture(params=["local", "dbos-cloud"])
def engine(request: pytest.FixtureRequest) -> Iterator[Serve | None]:
    if request.param == "local":
        yield None
        return
    with running_serve() as s:
        yield s


def use_serve(p: Project, serve: Serve) -> None:
    p.stack.remove_config("dbos:dataDir")
    for key, value in (("dbos:engine", "dbos-cloud"), ("dbos:cloudDomain", serve.domain),
                       ("dbos:cloudCaCert", str(serve.ca_cert))):
        p.stack.set_config(key, auto.ConfigValue(value))
    p.set_secret("dbos:cloudToken", serve.token("acme", "alice"))


def test_removing_the_restores_source_after_recovery(greet_project: Any, stop_apps: list[Project]) -> None:
    """Deploy v1, then v2; restore A at T into B and move the app onto B with previous_version=v1 in one
    `up`; then remove A, B naming its source by name only: A alone is deleted, B keeps its password, the
    app is untouched and keeps serving. On the local engine: what the steps ask of an engine is in the contract
    suite (restore at a time, change-database-instance, previous version, destroy: every engine), and the same
    recovery runs through `pulumi up` against serve in test_dbos_cloud_exact and test_preview_environment."""
    p, src = greet_project()
    stop_apps.append(p)
    p.set_spec({"instances": {"a": inst("rcv_a")}, "app": {"instance": "a", "source": str(src)}}, {"a": PW})
    p.up()
    v1, url = p.outputs()["version"], p.outputs()["app_url"]
    time.sleep(1.0)
    t = rfc3339_now()
    time.sleep(1.0)
    with_greeting(src, "Howdy")
    p.up()
    assert p.outputs()["version"] != v1

    p.set_spec({"instances": {"a": inst("rcv_a")},
                "restores": {"b": {"instance_name": "rcv_b", "source": "a", "restore_time": t}},
                "app": {"instance": "b", "source": str(src), "previous_version": v1}})
    p.up()
    out = p.outputs()
    assert out["version"] == v1 and out["instance_name"] == "rcv_b"
    b_url = out["urls"]["b"]
    app_before = p.resource("greet")

    # A leaves the program; B now names its source by name (A no longer exists) and has no password input
    p.set_spec({"restores": {"b": {"instance_name": "rcv_b", "source": "rcv_a", "restore_time": t}},
                "app": {"instance": "b", "source": str(src), "previous_version": v1}})
    pv = json_preview(p)
    changed = steps(pv)
    assert {n: s["op"] for n, s in changed.items()} == {"a": "delete"}, {n: s["op"] for n, s in changed.items()}
    res = p.up()
    assert {str(k): v for k, v in res.summary.resource_changes.items() if k != "same"} == {"delete": 1}
    out = p.outputs()
    assert "a" not in out["urls"] and out["urls"]["b"] == b_url
    with psycopg.connect(b_url, connect_timeout=10) as c:  # B's password in the state is what it accepts
        assert c.execute("SELECT 1").fetchone() == (1,)
    status, body = http("GET", url + "/")
    assert status == 200 and body["version"] == v1
    assert p.resource("greet") == app_before  # the app was not touched
    assert not steps(json_preview(p))  # and it stays converged
