"""The real DBOS Transact 3.x client against what `pulumi up` made: after `db connect`, `dbos migrate` and
`dbos workflow list` in the app directory act on the instance (not on a local SQLite file)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from pulumi import automation as auto

from tests.conftest import ROOT
from tests.e2e.conftest import PROGRAM_HEADER

PW = "Client-e2e-pw1"

PROGRAM = PROGRAM_HEADER + """
i = dbos.DatabaseInstance("db", instance_name="cl_db", username="app_user", password=cfg.require_secret("pw"))
a = dbos.App("greet", instance=i, source=spec["source"])
pulumi.export("url", a.app_url)
"""


def test_db_connect_then_dbos_cli_acts_on_the_instance(make_project: Any, tmp_root: Path) -> None:
    src = tmp_root / "greet"
    shutil.copytree(ROOT / "examples" / "greet", src)
    p = make_project(PROGRAM)
    p.stack.set_config("pw", auto.ConfigValue(PW, secret=True))
    p.set_spec({"source": str(src)})
    p.up()
    app_url = p.outputs()["url"]
    req = urllib.request.Request(f"{app_url}/greet/cli?delay=0", method="POST")
    workflow_id = json.loads(urllib.request.urlopen(req, timeout=30).read())["workflow_id"]  # noqa: S310

    env = {**os.environ, **p.ws_opts.env_vars}
    # the deployed App's own source is never rewritten (its ${...} references would become one instance's URL)
    cp = subprocess.run(["pulumi-dbos", "db", "connect", "greet", "--stack", "test"], cwd=p.work, env=env,  # noqa: S603,S607
                        capture_output=True, text=True, timeout=300)
    assert cp.returncode != 0 and "nothing was written" in cp.stderr, cp.stderr
    assert "${DBOS_SYSTEM_DATABASE_URL}" in (src / "dbos-config.yaml").read_text()
    # a working copy of the app outside its deployed source, connected for local development
    deployed, src = src, tmp_root / "local-greet"
    shutil.copytree(deployed, src)
    cp = subprocess.run(["pulumi-dbos", "db", "connect", "greet", "--stack", "test", "--config",  # noqa: S603,S607
                         str(src / "dbos-config.yaml")], cwd=p.work, env=env, capture_output=True, text=True,
                        timeout=300)
    assert cp.returncode == 0, cp.stderr
    config = (src / "dbos-config.yaml").read_text()
    port = str(p.resource("db")["port"])
    assert f"127.0.0.1:{port}/greet_dbos_sys" in config and PW not in config
    assert "database_url:" not in config.replace("system_database_url", "")  # 3.x rejects it

    # the dbos CLI in a virtualenv of the user's own with the app's requirements, run in the app directory
    # (the deployed app's environment lives inside its sandbox: its scripts name paths only it sees)
    venv = tmp_root / "venv"
    uv = [sys.executable, "-m", "uv"]
    for argv in ([*uv, "venv", "--quiet", "--python", sys.executable, str(venv)],
                 [*uv, "pip", "install", "--quiet", "--python", str(venv / "bin" / "python"), "-r",
                  str(src / "requirements.txt")]):
        done = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False)  # noqa: S603
        assert done.returncode == 0, done.stderr
    dbos_cli = venv / "bin" / "dbos"
    # as DBOS Cloud's environment would: the app's own database for its Alembic migrations
    client_env = {"PATH": f"{dbos_cli.parent}:/usr/bin:/bin", "PGPASSWORD": PW, "HOME": str(tmp_root),
                  "LANG": "C.UTF-8", "DBOS_DATABASE_URL": f"postgresql://app_user@127.0.0.1:{port}/greet"}
    cp = subprocess.run([str(dbos_cli), "migrate"], cwd=src, env=client_env, capture_output=True, text=True,  # noqa: S603
                        timeout=300)
    assert cp.returncode == 0, cp.stdout + cp.stderr
    assert f"127.0.0.1:{port}/greet_dbos_sys" in cp.stdout and "sqlite" not in cp.stdout.lower()
    deadline = time.monotonic() + 60
    while True:
        cp = subprocess.run([str(dbos_cli), "workflow", "list"], cwd=src, env=client_env, capture_output=True,  # noqa: S603
                            text=True, timeout=300)
        assert cp.returncode == 0, cp.stdout + cp.stderr
        if workflow_id in cp.stdout or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert workflow_id in cp.stdout
    assert not list(src.glob("*.sqlite"))  # DBOS did not fall back to a local SQLite file

    # the CLI's view, as `dbos-cloud app list|status|versions|logs` (--json: DBOS Cloud's field names)
    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["pulumi-dbos", "--data-dir", str(p.data_dir), *args], env=env,  # noqa: S603,S607
                              capture_output=True, text=True, timeout=120)

    listed = json.loads(cli("app", "list", "--json").stdout)
    assert [(a["Name"], a["Status"], a["AppURL"]) for a in listed] == [("greet", "AVAILABLE", app_url)]
    status = json.loads(cli("app", "status", "greet", "--json").stdout)
    assert status["PostgresInstanceName"] == "cl_db" and status["ApplicationDatabaseName"] == "greet"
    versions = json.loads(cli("app", "versions", "greet", "--json").stdout)
    assert [v["Version"] for v in versions] == [status["Version"]]
    assert "DBOS launched" in cli("app", "logs", "greet").stdout
    missing = cli("app", "status", "nope")
    assert missing.returncode == 1 and "not found" in missing.stderr

