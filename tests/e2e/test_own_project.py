"""A user's own project (issue 20): its dbos:* config is checked by the library itself, and a project made
from templates/dbos-python previews, deploys and is destroyed with the real pulumi CLI."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from pulumi import automation as auto

from tests.conftest import ROOT, _short_tmpdir, cleanup_data_dir
from tests.e2e.conftest import INSTANCES_PROGRAM, VENV

pytestmark = pytest.mark.e2e


def test_typoed_engine_settings_fail_the_preview_of_any_program(make_project) -> None:  # type: ignore[no-untyped-def]
    """Reproduction 1: `dbos:engin: dbos-cloud` and `dbos:cloudDomian` were silently ignored (the preview showed
    the local engine and the shared data dir); now the preview fails naming each key and what was meant."""
    proj = make_project(INSTANCES_PROGRAM)
    proj.set_spec({"instances": {"own_db": {"username": "own_user"}}}, {"own_db": "Own-pass-123"})
    proj.stack.set_config("dbos:engin", auto.ConfigValue("dbos-cloud"))
    proj.stack.set_config("dbos:cloudDomian", auto.ConfigValue("127.0.0.1:8443"))
    with pytest.raises(auto.CommandError) as err:
        proj.preview()
    text = str(err.value)
    assert "dbos:engin: unknown key; did you mean 'engine'?" in text
    assert "dbos:cloudDomian: unknown key; did you mean 'cloudDomain'?" in text
    assert "Traceback" not in text
    assert not (proj.data_dir / "catalog.db").exists()

    # cloud settings without the cloud engine are refused too
    proj.stack.remove_config("dbos:engin")
    proj.stack.remove_config("dbos:cloudDomian")
    proj.stack.set_config("dbos:cloudDomain", auto.ConfigValue("127.0.0.1:8443"))
    with pytest.raises(auto.CommandError) as err:
        proj.preview()
    assert "dbos:cloudDomain: only used with `dbos:engine: dbos-cloud`" in str(err.value)


TEMPLATE = ROOT / "templates" / "dbos-python"


class TemplateProject:
    """A project made by `pulumi new` from the template, as the README's "Your own project" does."""

    def __init__(self, root: Path) -> None:
        self.root, self.work, self.data_dir = root, root / "proj", root / "d"
        (root / "backend").mkdir()
        self.env = {**os.environ, "PULUMI_BACKEND_URL": f"file://{root / 'backend'}",
                    "PULUMI_CONFIG_PASSPHRASE": "template-throwaway-passphrase", "PULUMI_SKIP_UPDATE_CHECK": "true",
                    "PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION": "true", "PULUMI_HOME": str(root / "pulumi-home"),
                    "PULUMI_DBOS_SRC": str(ROOT)}

    def pulumi(self, *args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        cwd = self.work if self.work.exists() else self.root
        cp = subprocess.run(["pulumi", *args, "--non-interactive"], cwd=cwd, input=stdin,  # noqa: S603,S607
                            capture_output=True, text=True, env=self.env, timeout=900)
        if check and cp.returncode != 0:
            raise AssertionError(f"pulumi {' '.join(args)} failed:\n{cp.stdout}\n{cp.stderr}")
        return cp


@pytest.fixture
def template_project() -> Iterator[TemplateProject]:
    root = _short_tmpdir("pt")
    try:
        yield TemplateProject(root)
    finally:
        cleanup_data_dir(root / "d")
        shutil.rmtree(root, ignore_errors=True)


def test_a_project_from_the_template_previews_deploys_and_destroys(template_project: TemplateProject) -> None:
    """`pulumi new` of templates/dbos-python (offline, a local path), then preview, up and destroy on the local
    engine: an instance, a restore of it and an app that answers."""
    p = template_project
    p.pulumi("new", str(TEMPLATE), "--dir", str(p.work), "--yes", "--name", "ownproj", "--stack", "dev",
             "--generate-only")
    assert "${PULUMI_DBOS_SRC}" in (p.work / "requirements.txt").read_text()
    dev_config = (p.work / "Pulumi.dev.yaml").read_text()
    assert "dbos:engine: local" in dev_config and "# dbos:dataDir" in dev_config
    assert "${DBOS_SYSTEM_DATABASE_URL}" in (p.work / "app" / "dbos-config.yaml").read_text()
    assert VENV is not None, "run the tests in the repo's virtualenv (make test)"
    (p.work / "venv").symlink_to(VENV)  # the template's `virtualenv: venv`, here the repo's own (it has pulumi-dbos)

    p.pulumi("stack", "init", "dev")
    p.pulumi("config", "set", "--secret", "dbPassword", stdin="Template-pw-123")
    p.pulumi("config", "set", "dbos:dataDir", str(p.data_dir))
    assert "# Stack `dev`: the local engine" in (p.work / "Pulumi.dev.yaml").read_text()  # comments kept

    preview = p.pulumi("preview", "--json")
    steps = json.loads(preview.stdout)["steps"]
    created = sorted(s["urn"].rsplit("::", 1)[1] for s in steps if s["op"] == "create" and "dbos:" in s["urn"])
    assert created == ["db", "hello", "restore"], created

    p.pulumi("up", "--yes")
    outs = json.loads(p.pulumi("stack", "output", "--json").stdout)
    assert outs["instance"]["status"] == "available"
    assert outs["restore"]["restored_to"]
    with urllib.request.urlopen(f"{outs['app_url']}/hello/ann", timeout=30) as r:  # noqa: S310
        assert json.loads(r.read()) == {"greeting": "Hello, ANN!"}
    assert p.pulumi("preview", "--expect-no-changes").returncode == 0

    p.pulumi("destroy", "--yes")
    assert json.loads(p.pulumi("stack", "export").stdout)["deployment"].get("resources") in (None, [])
