"""The example stacks from their YAML alone, config validation before registration, PR reports."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pulumi_dbos.report import render
from tests.conftest import ROOT, _short_tmpdir, cleanup_data_dir
from tests.e2e.conftest import VENV

FIXTURES = ROOT / "tests" / "unit" / "fixtures"
PASSPHRASE = "local-throwaway-passphrase"  # the examples' documented throwaway


class RepoCopy:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.work = root / "proj"
        self.work.mkdir()
        for item in ("Pulumi.yaml", "stacks", "examples"):
            src = ROOT / item
            (shutil.copytree if src.is_dir() else shutil.copy)(src, self.work / item)
        if VENV is not None:
            (self.work / ".venv").symlink_to(VENV)
        (root / "backend").mkdir()
        self.data_dir = root / "d"
        self.env = {**os.environ, "PULUMI_BACKEND_URL": f"file://{root / 'backend'}",
                    "PULUMI_CONFIG_PASSPHRASE": PASSPHRASE, "PULUMI_SKIP_UPDATE_CHECK": "true",
                    "PULUMI_HOME": str(root / "pulumi-home")}

    def pulumi(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        cp = subprocess.run(["pulumi", *args, "--cwd", str(self.work), "--non-interactive"],  # noqa: S603,S607
                            capture_output=True, text=True, env=self.env, timeout=600)
        if check and cp.returncode != 0:
            raise AssertionError(f"pulumi {' '.join(args)} failed:\n{cp.stdout}\n{cp.stderr}")
        return cp

    def stack(self, name: str) -> None:
        self.pulumi("stack", "select", "--create", name)
        self.pulumi("config", "set", "dbos:dataDir", str(self.data_dir), "--stack", name)

    def resources(self, stack: str) -> list[dict[str, Any]]:
        out = json.loads(self.pulumi("stack", "export", "--stack", stack).stdout)
        return [r for r in out["deployment"].get("resources") or [] if "dbos:" in r["type"]]

    def preview_json(self, stack: str) -> dict[str, Any]:
        cp = self.pulumi("preview", "--json", "--stack", stack, check=False)
        return json.loads(cp.stdout)


@pytest.fixture
def repo() -> Iterator[RepoCopy]:
    root = _short_tmpdir("ps")
    try:
        yield RepoCopy(root)
    finally:
        cleanup_data_dir(root / "d")
        shutil.rmtree(root, ignore_errors=True)


def save_fixture(name: str, data: dict[str, Any]) -> None:
    if os.environ.get("PULUMI_DBOS_UPDATE_FIXTURES"):
        (FIXTURES / name).write_text(json.dumps(data, indent=1, sort_keys=True))


def test_dev_stack_from_yaml_then_replace_report(repo: RepoCopy) -> None:
    repo.stack("dev")
    first = repo.preview_json("dev")
    save_fixture("preview_dev_create.json", first)
    assert "create" in render(first)
    repo.pulumi("up", "--yes", "--stack", "dev")
    out = json.loads(repo.pulumi("stack", "output", "--json", "--stack", "dev").stdout)
    assert out["instances"]["dev_db"]["status"] == "available"
    assert out["apps"]["shop"]["instance"] == "dev_db"
    assert "dev-Passw0rd-throwaway" not in repo.pulumi("stack", "export", "--stack", "dev").stdout

    # an edit that replaces the instance: the report carries the data-loss warning, no secret
    repo.pulumi("config", "set", "--path", "dbos:instances.dev_db.username", "other_user", "--stack", "dev")
    repo.pulumi("config", "set", "--path", "dbos:instances.dev_db.deletionProtection", "true", "--stack", "dev")
    pv = repo.preview_json("dev")
    save_fixture("preview_dev_replace.json", pv)
    md = render(pv)
    # the local engine keeps the old instance's backups: the report says until when it can be restored by name
    assert "Instance `dev_db` will be replaced" in md and "it can be restored by name" in md
    assert "dev-Passw0rd-throwaway" not in md
    # the same through the CLI pipe
    cp = subprocess.run(["pulumi-dbos", "preview-report"], input=json.dumps(pv), capture_output=True, text=True,  # noqa: S603,S607
                        timeout=60, check=True)
    assert "can be restored by name" in cp.stdout


def test_staging_stack_restore_and_app_from_yaml(repo: RepoCopy) -> None:
    repo.stack("staging")
    repo.pulumi("up", "--yes", "--stack", "staging")
    out = json.loads(repo.pulumi("stack", "output", "--json", "--stack", "staging").stdout)
    assert set(out["instances"]) == {"stg_db", "stg_db_r1"}
    assert out["apps"]["stg_shop"]["instance"] == "stg_db_r1"
    assert all(i["status"] == "available" for i in out["instances"].values())


def test_bad_config_fails_before_any_registration(repo: RepoCopy) -> None:
    repo.stack("dev")
    repo.pulumi("up", "--yes", "--stack", "dev")
    before = repo.resources("dev")
    s = "--stack"
    repo.pulumi("config", "set", "--path", "dbos:instances.dev_db.password", "bad pw", s, "dev")
    repo.pulumi("config", "set", "--path", "dbos:instances.dev_db.colour", "blue", s, "dev")
    repo.pulumi("config", "set", "--path", "dbos:apps.shop.instance", "missing_db", s, "dev")
    repo.pulumi("config", "set", "--path", "dbos:instances.new_db.username", "postgres", s, "dev")
    cp = repo.pulumi("up", "--yes", s, "dev", check=False)
    assert cp.returncode != 0
    text = cp.stdout + cp.stderr
    for expected in ("dbos:instances.dev_db.password", "dbos:instances.dev_db.colour",
                     "dbos:apps.shop.instance", "dbos:instances.new_db.username", "dbos:instances.new_db.password"):
        assert expected in text, expected
    assert "bad pw" not in text
    assert repo.resources("dev") == before
