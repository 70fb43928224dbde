"""`dbos-cloud app ...` against serve with the sample DBOS Transact 3.x app (examples/greet): register, deploy,
a new version, versions, change-database-instance to a previous version, status/list, delete --dropdb.

Each step checks the CLI's exit code and output and the real effect: what the app's URL (``AppURL`` of
``app status --json``) answers, and which databases exist on the instances (psycopg)."""

from __future__ import annotations

import json
import re
import shutil
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.conformance.conftest import DEPLOY, POLLING, DbosCloud, Names, connect, databases
from tests.conftest import ROOT, _short_tmpdir
from tests.e2e.conftest import Project
from tests.e2e.test_app import PROGRAM, inst
from tests.e2e.test_previews import pulumi, use_serve

PW = "Conf-app-pw1"


def get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=30) as resp:  # noqa: S310 - http://127.0.0.1 from serve
        return json.loads(resp.read())


def post(url: str) -> Any:
    req = urllib.request.Request(url, method="POST")  # noqa: S310
    with urllib.request.urlopen(req, timeout=30) as resp:  # noqa: S310
        return json.loads(resp.read())


def answers(url: str) -> bool:
    try:
        get(url)
    except (urllib.error.URLError, OSError, ValueError):
        return False
    return True


def assigned_version(out: str) -> str:
    found: list[str] = re.findall(r"Assigned version: (\S+)", out)
    assert len(found) == 1, out
    return found[0]


@pytest.fixture
def app_dir(tmp_path: Path, dbos_cloud: DbosCloud, names: Names) -> tuple[str, Path]:
    """A copy of examples/greet named ``app`` (its dbos-config.yaml ``name:``), with the credentials beside it
    (the CLI reads ``.dbos/credentials`` from its CWD and never uploads ``.dbos/``). ``names`` deletes the app."""
    app = names.app("cf_greet")
    src = tmp_path / app
    shutil.copytree(ROOT / "examples" / "greet", src, ignore=shutil.ignore_patterns(".venv", "__pycache__", ".dbos"))
    config = src / "dbos-config.yaml"
    text = config.read_text()
    assert "\nname: greet\n" in text and "\nlanguage: python\n" in text
    config.write_text(text.replace("\nname: greet\n", f"\nname: {app}\n"))
    # the CLI's pre-deploy check for python apps (§6.4): requirements.txt exists and mentions dbos
    assert "dbos" in (src / "requirements.txt").read_text()
    dbos_cloud.workdir(src)
    return app, src


def status(dbos_cloud: DbosCloud, src: Path) -> dict[str, Any]:
    info = dbos_cloud.json("app", "status", cwd=src)
    assert isinstance(info, dict), info
    return info


def wait_for_workflow(url: str, workflow_id: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        st = get(f"{url}/workflows/{workflow_id}")
        if st["status"] in ("SUCCESS", "ERROR") or time.monotonic() > deadline:
            assert isinstance(st, dict)
            return st
        time.sleep(0.2)


def test_app_lifecycle(dbos_cloud: DbosCloud, names: Names, app_dir: tuple[str, Path]) -> None:
    app, src = app_dir
    x, y = names("appx"), names("appy")
    xinfo, yinfo = dbos_cloud.provision_all([x, y], "conf_user", PW)

    # --- register: the app exists, bound to x, nothing deployed yet
    out = dbos_cloud.ok("app", "register", "-d", x, cwd=src)
    assert f"{app} ID:" in out and f"Successfully registered {app}!" in out
    info = status(dbos_cloud, src)
    assert info["Name"] == app and info["PostgresInstanceName"] == x and info["Version"] == ""
    assert info["ApplicationDatabaseName"] == ""  # §6.4: learnt from the archive (never sent at register)

    # --- deploy: a version, AVAILABLE, its URL answers with that version
    out = dbos_cloud.ok("app", "deploy", cwd=src, timeout=DEPLOY)
    v1 = assigned_version(out)
    assert f"Successfully deployed {app}!" in out
    # the CLI prints DBOS Cloud's URL scheme, built client-side (https://{org}-{app}.{host}/); serve's real
    # URL is AppURL in `app status`
    assert f"Access your application at https://acme-{app}.{dbos_cloud.serve.domain}/" in out
    info = status(dbos_cloud, src)
    assert info["Status"] == "AVAILABLE" and info["Version"] == v1 and info["PostgresInstanceName"] == x
    url = info["AppURL"].rstrip("/")
    assert get(url + "/") == {"app": app, "version": v1, "greeting": "Hello"}
    app_db = info["ApplicationDatabaseName"]
    assert app_db, info
    assert app_db in databases(xinfo, "conf_user", PW)

    # --- a code change is a new version, served as soon as the CLI returns
    main = src / "main.py"
    main.write_text(main.read_text().replace('GREETING = "Hello"', 'GREETING = "Hi"'))
    v2 = assigned_version(dbos_cloud.ok("app", "deploy", cwd=src, timeout=DEPLOY))
    assert v2 != v1
    assert get(url + "/") == {"app": app, "version": v2, "greeting": "Hi"}
    info = status(dbos_cloud, src)
    assert info["Version"] == v2 and info["Status"] == "AVAILABLE" and info["AppURL"].rstrip("/") == url

    versions = dbos_cloud.json("app", "versions", cwd=src)
    assert {v["Version"] for v in versions} == {v1, v2}
    assert all(v["ApplicationName"] == app and v["CreationTime"] for v in versions)
    text = dbos_cloud.ok("app", "versions", cwd=src)
    assert f"Version: {v1}" in text and f"Version: {v2}" in text

    # --- change-database-instance to y with the previous version: v1's code, on y, same URL
    out = dbos_cloud.ok("app", "change-database-instance", "-d", y, "-p", v1, cwd=src, timeout=DEPLOY)
    assert assigned_version(out) == v1
    info = status(dbos_cloud, src)
    assert info["PostgresInstanceName"] == y and info["Version"] == v1 and info["Status"] == "AVAILABLE"
    assert info["AppURL"].rstrip("/") == url and info["ApplicationDatabaseName"] == app_db
    assert get(url + "/") == {"app": app, "version": v1, "greeting": "Hello"}
    assert app_db in databases(yinfo, "conf_user", PW)
    # the app really uses y now: a workflow's rows land in y's app database, not x's
    wf = post(url + "/greet/ann")["workflow_id"]
    assert wait_for_workflow(url, wf)["status"] == "SUCCESS"
    with connect(yinfo, "conf_user", PW, dbname=app_db) as conn:
        assert conn.execute("SELECT name, status FROM greetings ORDER BY id").fetchall() == \
            [("ann", "started"), ("ann", "done")]
    with connect(xinfo, "conf_user", PW, dbname=app_db) as conn:
        assert conn.execute("SELECT count(*) FROM greetings WHERE name = 'ann'").fetchone() == (0,)

    # --- deploy -p: a stored version again (v2), on the app's current instance (y), same URL
    out = dbos_cloud.ok("app", "deploy", "-p", v2, cwd=src, timeout=DEPLOY)
    assert assigned_version(out) == v2
    assert get(url + "/") == {"app": app, "version": v2, "greeting": "Hi"}
    info = status(dbos_cloud, src)
    assert info["PostgresInstanceName"] == y and info["Version"] == v2
    # --- logs: the app's own output
    assert dbos_cloud.ok("app", "logs", cwd=src).strip()

    # --- status / list, JSON and text
    listed = [a for a in dbos_cloud.json("app", "list", cwd=src) if a["Name"] == app]
    assert len(listed) == 1 and listed[0] == info
    text = dbos_cloud.ok("app", "status", cwd=src)
    assert f"Application Name: {app}" in text and f"Postgres Instance Name: {y}" in text
    text = dbos_cloud.ok("app", "list", cwd=src)
    assert f"Application Name: {app}" in text and f"Version: {v2}" in text

    # --- delete --dropdb: gone, stops serving, its app database dropped on its instance (y)
    out = dbos_cloud.ok("app", "delete", "--dropdb", cwd=src, timeout=POLLING)
    assert f"Successfully deleted application: {app}" in out
    assert app not in {a["Name"] for a in dbos_cloud.json("app", "list", cwd=src)}
    dbos_cloud.fails("app", "status", cwd=src, expect=f"application {app} not found")
    dbos_cloud.fails("app", "versions", cwd=src, expect=f"application {app} not found")
    assert not answers(url + "/")
    # --dropdb drops the app database and DBOS's system database on the app's instance (y); the copies
    # left on x by change-database-instance stay (nothing of an instance the app left is touched)
    assert not {app_db, f"{app_db}_dbos_sys"} & databases(yinfo, "conf_user", PW)
    assert {app_db, f"{app_db}_dbos_sys"} <= databases(xinfo, "conf_user", PW)
    # the instances themselves stay
    assert dbos_cloud.status(y)["Status"] == "available"
    assert dbos_cloud.status(x)["Status"] == "available"


def test_an_app_deployed_with_the_cli_is_not_taken_over_silently_by_a_stack(
        dbos_cloud: DbosCloud, names: Names, app_dir: tuple[str, Path]) -> None:
    """Issue 19, reproduction 3: an `App` of a stack declared for an app someone deployed with the official
    `dbos-cloud app deploy` is refused at preview (naming it as deployed without this stack, and `adopt`);
    with `adopt=True` the preview says it takes that app over and deploys a new version over it."""
    app, src = app_dir
    x = names("appt")
    dbos_cloud.provision_all([x], "conf_user", PW)
    dbos_cloud.ok("app", "register", "-d", x, cwd=src)
    deployed = assigned_version(dbos_cloud.ok("app", "deploy", cwd=src, timeout=DEPLOY))

    root = _short_tmpdir("pc")
    try:
        p = Project(root, PROGRAM, name=root.name)
        use_serve(p, dbos_cloud.serve)  # the CLI's organization and user
        spec: dict[str, Any] = {"instances": {"a": inst("cft_a")}, "app": {"instance": "a", "source": str(src),
                                                                            "app_name": app}}
        p.set_spec(spec, {"a": PW})
        cp = pulumi(p, "preview", check=False)
        out = cp.stdout + cp.stderr
        assert cp.returncode != 0 and f"an app named {app!r} already exists" in out, out
        assert "deployed without this stack" in out and "adopt=True" in out and "Traceback" not in out
        spec["app"]["adopt"] = True
        p.set_spec(spec)
        out = pulumi(p, "preview").stdout
        assert f"app {app!r} exists (deployed without this stack) and will be adopted (adopt=True)" in out, out
        assert f"over the running one (version {deployed})" in out, out
    finally:
        shutil.rmtree(root, ignore_errors=True)
