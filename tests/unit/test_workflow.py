"""The pull-request workflows. preview.yml (issue 20, reproduction 6): valid, installs the pulumi CLI with
pulumi/actions at the pinned version (nothing built from Go sources), previews the stack against its own engine
with a token from the repo's secrets, and posts the report as one comment. pr-environment.yml (issue 22): the
stack `pr-<N>` made from the source stack's config and brought up on every push, its URL and report in one
comment, destroyed and removed on close, the source stack never named in a writing command. actionlint checks
both when it is installed (scripts/setup.sh builds it from the Go module proxy)."""

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
PR_ENVIRONMENT = ROOT / ".github" / "workflows" / "pr-environment.yml"


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
    # the pulumi SDK's version in the project's virtualenv (pulumi-dbos pins it to scripts/pulumi-version's):
    # a project of one's own has no scripts/pulumi-version (issue 32)
    assert version == "${{ steps.pin.outputs.version }}" and 'version("pulumi")' in pin["run"]
    assert f'"pulumi=={(ROOT / "scripts" / "pulumi-version").read_text().strip()}"' in (ROOT / "pyproject.toml").read_text()


@pytest.mark.parametrize("workflow", [WORKFLOW, PR_ENVIRONMENT], ids=lambda p: p.name)
def test_both_workflows_install_the_projects_requirements(workflow: Path) -> None:
    """Issue 32: pr-environment.yml ran `pip install -r requirements.txt`, whose pulumi-dbos line needed
    PULUMI_DBOS_SRC (a checkout) and died with a traceback on any runner. Both workflows install the project's
    requirements.txt (the template's installs the wheel the project carries; this repository's `-e .`) and
    end a failed install with one error line."""
    runs = "\n".join(str(s.get("run", "")) for s in yaml.safe_load(workflow.read_text())["jobs"].popitem()[1]["steps"])
    assert 'pip" install -q -r requirements.txt' in runs and "::error::" in runs and "PULUMI_DBOS_SRC" not in runs
    assert "pip install -q -e ." not in runs
    template_reqs = (ROOT / "templates" / "dbos-python" / "requirements.txt").read_text()
    assert "${" not in template_reqs and "./wheels/pulumi_dbos-" in template_reqs


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


@pytest.mark.parametrize("workflow", [WORKFLOW, PR_ENVIRONMENT], ids=lambda p: p.name)
def test_actionlint_finds_nothing(workflow: Path) -> None:
    exe = actionlint()
    if exe is None:
        pytest.skip("actionlint is not installed (scripts/setup.sh builds it from the Go module proxy when Go is there)")
    cp = subprocess.run([exe, "-shellcheck=", "-pyflakes=", str(workflow)], capture_output=True, text=True,  # noqa: S603
                        timeout=120, check=False)
    assert cp.returncode == 0, cp.stdout + cp.stderr


# ---------------------------------------------------------------------------- pr-environment.yml
def pr_job() -> dict[str, Any]:
    return dict(yaml.safe_load(PR_ENVIRONMENT.read_text())["jobs"]["environment"])


def pr_runs(when: str) -> str:
    """The shell of the steps that run on ``when`` (`push`: opened/synchronize/reopened; `closed`)."""
    out = []
    for step in pr_job()["steps"]:
        cond = str(step.get("if", ""))
        if ("!= 'closed'" in cond and when == "closed") or ("== 'closed'" in cond and when == "push"):
            continue
        out.append(str(step.get("run", "")))
    return "\n".join(out)


def test_the_pr_environment_workflow_runs_on_the_pull_request_events_per_pr_stack() -> None:
    doc = yaml.safe_load(PR_ENVIRONMENT.read_text())
    on = doc.get("on", doc.get(True))
    assert set(on["pull_request"]["types"]) == {"opened", "synchronize", "reopened", "closed"}
    assert doc["permissions"] == {"contents": "read", "pull-requests": "write"}
    assert "pull_request.number" in doc["concurrency"]["group"]  # two pushes never run on one stack at once
    job = pr_job()
    assert job["env"]["STACK"] == "pr-${{ github.event.pull_request.number }}"
    assert job["env"]["DBOS_CLOUD_TOKEN"] == "${{ secrets.DBOS_CLOUD_TOKEN }}"
    for step in job["steps"]:
        assert ("uses" in step) != ("run" in step), step
    pulumi = [s for s in job["steps"] if str(s.get("uses", "")).startswith("pulumi/actions@")]
    assert len(pulumi) == 1 and pulumi[0]["with"]["pulumi-version"] == "${{ steps.pin.outputs.version }}"


def test_a_push_brings_the_pr_stack_up_from_the_source_config_and_posts_one_comment() -> None:
    runs = pr_runs("push")
    assert 'pulumi stack init "$STACK" --copy-config-from "$SOURCE"' in runs
    assert 'pulumi config cp --stack "$SOURCE" --dest "$STACK"' in runs  # a fresh checkout of an existing PR stack
    assert 'pulumi config set previewOf "$SOURCE" --stack "$STACK"' in runs
    assert 'pulumi config set prNumber "$PR" --stack "$STACK"' in runs
    assert 'pulumi up --yes --skip-preview --stack "$STACK"' in runs
    assert "pulumi-dbos preview-report" in runs and "app_url" in runs
    assert "destroy" not in runs and "stack rm" not in runs
    post = pr_job()["steps"][-1]
    assert post["uses"].startswith("actions/github-script@") and "always()" in post["if"]
    assert "updateComment" in post["with"]["script"] and "<!-- pulumi-dbos-pr-environment -->" in post["with"]["script"]


def test_closing_destroys_and_removes_the_pr_stack_only() -> None:
    runs = pr_runs("closed")
    assert 'pulumi destroy --yes --stack "$STACK"' in runs and 'pulumi stack rm --yes "$STACK"' in runs
    assert "pulumi up" not in runs


def test_the_source_stack_is_never_written() -> None:
    """`$SOURCE` appears only as what the PR stack copies and reads: the stack of no other pulumi command."""
    text = "\n".join(str(s.get("run", "")) for s in pr_job()["steps"])
    assert 'select "$SOURCE"' not in text
    uses_of_source = [line.strip() for line in text.splitlines() if "$SOURCE" in line and not line.strip().startswith("#")]
    reading = ('pulumi stack init "$STACK" --copy-config-from "$SOURCE"', 'pulumi config cp --stack "$SOURCE" --dest "$STACK"',
               'pulumi config set previewOf "$SOURCE" --stack "$STACK"')
    assert all(u in reading or "echo" in u for u in uses_of_source), uses_of_source

