"""The pull-request workflow (issue 20, reproduction 6): valid, installs the pulumi CLI with pulumi/actions at
the pinned version (nothing built from Go sources), previews the stack against its own engine with a token
from the repo's secrets, and posts the report as one comment. actionlint checks it when it is installed
(scripts/setup.sh builds it from the Go module proxy)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT

pytestmark = pytest.mark.unit
WORKFLOW = ROOT / ".github" / "workflows" / "preview.yml"


def steps() -> list[dict[str, Any]]:
    doc = yaml.safe_load(WORKFLOW.read_text())
    return list(doc["jobs"]["preview"]["steps"])


def test_the_workflow_is_valid_yaml_with_the_expected_shape() -> None:
    doc = yaml.safe_load(WORKFLOW.read_text())
    assert doc["permissions"] == {"contents": "read", "pull-requests": "write"}
    on = doc.get("on", doc.get(True))  # YAML 1.1 reads the key `on` as True
    assert "pull_request" in on
    job = doc["jobs"]["preview"]
    assert job["runs-on"] == "ubuntu-latest"
    for step in job["steps"]:
        assert ("uses" in step) != ("run" in step), step


def test_the_cli_comes_from_pulumi_actions_at_the_pinned_version() -> None:
    text = WORKFLOW.read_text()
    assert "make setup" not in text and "setup-go" not in text and "ensure-pulumi" not in text
    pulumi = [s for s in steps() if str(s.get("uses", "")).startswith("pulumi/actions@")]
    assert len(pulumi) == 1
    version = pulumi[0]["with"]["pulumi-version"]
    pin = next(s for s in steps() if s.get("id") == "pin")
    assert version == "${{ steps.pin.outputs.version }}" and "scripts/pulumi-version" in pin["run"]
    assert (ROOT / "scripts" / "pulumi-version").read_text().strip().count(".") == 2


def test_the_preview_runs_against_the_stacks_engine_and_posts_the_report() -> None:
    doc = yaml.safe_load(WORKFLOW.read_text())
    env = doc["jobs"]["preview"]["env"]
    assert env["DBOS_CLOUD_TOKEN"] == "${{ secrets.DBOS_CLOUD_TOKEN }}"
    runs = "\n".join(str(s.get("run", "")) for s in steps())
    assert 'pulumi preview --json --diff --stack "$STACK"' in runs
    assert "pulumi-dbos preview-report" in runs and "<!-- pulumi-dbos-preview -->" in runs
    assert "dbos:cloudCaCert" in runs and "dbos:engine" in runs
    post = steps()[-1]
    assert post["uses"].startswith("actions/github-script@") and "pulumi-dbos-preview" in post["with"]["script"]


def actionlint() -> str | None:
    cache = Path(os.environ.get("PULUMI_DBOS_CACHE") or Path.home() / ".cache" / "pulumi-dbos")
    return shutil.which("actionlint") or next((str(p) for p in sorted(cache.glob("actionlint-*/bin/actionlint"))), None)


def test_actionlint_finds_nothing() -> None:
    exe = actionlint()
    if exe is None:
        pytest.skip("actionlint is not installed (scripts/setup.sh builds it from the Go module proxy when Go is there)")
    cp = subprocess.run([exe, "-shellcheck=", "-pyflakes=", str(WORKFLOW)], capture_output=True, text=True,  # noqa: S603
                        timeout=120, check=False)
    assert cp.returncode == 0, cp.stdout + cp.stderr
