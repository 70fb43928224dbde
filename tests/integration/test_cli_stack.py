"""`pulumi-dbos db url --stack` against a real stack (pulumi CLI, file:// backend, real instance): the stack's
`dbos:dataDir` and the stack's password are used, whatever the environment says."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from tests.conftest import _short_tmpdir, cleanup_data_dir

PASSPHRASE = "cli-stack-throwaway-passphrase"
PW = "Cli-stack-passw0rd"
OTHER_PW = "Leftover-passw0rd"
PROGRAM = """
import pulumi
import pulumi_dbos as dbos

cfg = pulumi.Config()
dbos.DatabaseInstance("cs", instance_name="cli_stack_db", username="app_user", password=cfg.require_secret("pw"))
"""


@dataclass
class Stack:
    root: Path
    work: Path
    data_dir: Path
    env: dict[str, str]

    def pulumi(self, *args: str, input_text: str | None = None) -> subprocess.CompletedProcess[str]:
        cp = subprocess.run(["pulumi", *args, "--stack", "test"], cwd=self.work, env=self.env, input=input_text,  # noqa: S603,S607
                            capture_output=True, text=True, timeout=600)
        assert cp.returncode == 0, f"pulumi {args[0]}: {cp.stdout[-2000:]}{cp.stderr[-2000:]}"
        return cp

    def cli(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "pulumi_dbos.cli", *args], cwd=self.work,  # noqa: S603
                              env=env or self.env, capture_output=True, text=True, timeout=300)


@pytest.fixture
def stack() -> Iterator[Stack]:
    if shutil.which("pulumi") is None:
        pytest.fail("the pulumi CLI is not on PATH: run the tests through `make test` (scripts/setup.sh)")
    root = _short_tmpdir("pk")
    work = root / "proj"
    work.mkdir()
    (root / "backend").mkdir()
    runtime: dict[str, object] = {"name": "python"}
    if (Path(sys.prefix) / "pyvenv.cfg").exists():
        runtime["options"] = {"virtualenv": sys.prefix}
    (work / "Pulumi.yaml").write_text(json.dumps({"name": root.name, "runtime": runtime}))
    (work / "__main__.py").write_text(textwrap.dedent(PROGRAM))
    env = {k: v for k, v in os.environ.items()
           if k not in ("PGPASSWORD", "PULUMI_DBOS_DATA_DIR", "PULUMI_DBOS_DEBUG", "PULUMI_BACKEND_URL")}
    env.update({
        "PULUMI_BACKEND_URL": f"file://{root / 'backend'}",
        "PULUMI_CONFIG_PASSPHRASE": PASSPHRASE,
        "PULUMI_SKIP_UPDATE_CHECK": "true",
        "PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION": "true",
        "PULUMI_HOME": str(root / "pulumi-home"),
    })
    s = Stack(root, work, root / "d", env)
    subprocess.run(["pulumi", "stack", "init", "test"], cwd=work, env=env, capture_output=True, text=True,  # noqa: S603,S607
                   timeout=120, check=True)
    try:
        s.pulumi("config", "set", "dbos:dataDir", str(s.data_dir))
        s.pulumi("config", "set", "--secret", "pw", input_text=PW)
        yield s
    finally:
        subprocess.run(["pulumi", "destroy", "--yes", "--stack", "test"], cwd=work, env=env,  # noqa: S603,S607
                       capture_output=True, text=True, timeout=600)
        cleanup_data_dir(s.data_dir)
        shutil.rmtree(root, ignore_errors=True)


def test_db_url_with_stack_uses_its_data_dir_and_password(stack: Stack) -> None:
    stack.pulumi("up", "--yes", "--skip-preview")
    cp = stack.cli("--data-dir", str(stack.data_dir), "db", "status", "cli_stack_db", "--json")
    assert cp.returncode == 0, cp.stderr
    port = json.loads(cp.stdout)["port"]

    # another data dir in the environment and a leftover PGPASSWORD: --stack wins over both
    elsewhere = stack.root / "elsewhere"
    env = {**stack.env, "PGPASSWORD": OTHER_PW, "PULUMI_DBOS_DATA_DIR": str(elsewhere)}
    cp = stack.cli("db", "url", "cli_stack_db", "-S", "--stack", "test", env=env)
    assert cp.returncode == 0, cp.stderr
    url = cp.stdout.strip()
    assert url == f"postgresql://app_user:{PW}@127.0.0.1:{port}/postgres"
    with psycopg.connect(url, connect_timeout=10) as c:
        assert c.execute("SELECT 1").fetchone() == (1,)
    cp = stack.cli("db", "url", "cli_stack_db", "--stack", "test", env=env)
    assert cp.returncode == 0 and cp.stdout.strip() == f"postgresql://app_user@127.0.0.1:{port}/postgres"

    # without --stack the environment's data dir is used, and as it does not exist: an error, nothing created
    cp = stack.cli("db", "url", "cli_stack_db", env=env)
    assert cp.returncode == 1 and cp.stderr.startswith("error: ") and str(elsewhere) in cp.stderr
    assert "Traceback" not in cp.stderr and not elsewhere.exists()
    assert PW not in cp.stderr and OTHER_PW not in cp.stdout + cp.stderr


def test_in_the_project_dir_the_selected_stack_is_used(stack: Stack) -> None:
    """Issue 20: plain `db list` in a project dir reads the selected stack's engine (and says so); the workspace
    file the CLI reads to find that stack is the real pulumi CLI's."""
    stack.data_dir.mkdir()
    (stack.data_dir / "catalog.db").write_bytes(b"")  # an empty catalog: no instances yet
    cp = stack.cli("db", "list", "--json")
    assert cp.returncode == 0, cp.stderr
    assert json.loads(cp.stdout) == []
    assert "using stack 'test'" in cp.stderr
    cp = stack.cli("db", "list", "--stack", "nosuch")
    assert cp.returncode == 1 and "nosuch" in cp.stderr and "Traceback" not in cp.stderr
