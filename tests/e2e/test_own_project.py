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
from tests.e2e.conftest import INSTANCES_PROGRAM
from tests.support import terminal

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
README = ROOT / "README.md"


def readme_block(section: str) -> str:
    """The first ```sh block of README's ``section``: what a reader types."""
    text = README.read_text()
    body = text[text.index(f"## {section}\n"):]
    return body[body.index("```sh\n") + len("```sh\n"):body.index("\n```", body.index("```sh\n"))]


def user_env(home: Path, data_dir: Path) -> dict[str, str]:
    """A shell of someone who has run `make up`: their own HOME, no pulumi settings of this suite. The
    test's own: where the clusters live (tests never use the default data dir), PULUMI_HOME in that HOME (the
    CLI finds its home, and `file://~`, from the passwd entry, not $HOME: the machine's /root/.pulumi, which
    other checkouts share), and pip's and uv's download cache is the machine's (speed only)."""
    drop = ("PULUMI_BACKEND_URL", "PULUMI_CONFIG_PASSPHRASE", "PULUMI_HOME", "PULUMI_DBOS_SRC", "VIRTUAL_ENV",
            "PULUMI_ACCESS_TOKEN", "PYTHONPATH")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    env.update(HOME=str(home), PULUMI_HOME=str(home / ".pulumi"), XDG_CACHE_HOME=cache, TERM="xterm",
               PULUMI_DBOS_DATA_DIR=str(data_dir),
               PULUMI_DBOS_LOCK_DIR=str(home))
    return env


@pytest.fixture
def home() -> Iterator[Path]:
    root = _short_tmpdir("ph")
    try:
        yield root
    finally:
        cleanup_data_dir(root / "d")
        shutil.rmtree(root, ignore_errors=True)


def test_readme_your_own_project_works_as_written(home: Path) -> None:
    """Issue 32: README's "Your own project" block, run line by line in a shell on a terminal (its prompts
    answered as a person would): `pulumi login --local`, `pulumi new` of the template (which makes ./venv and
    installs requirements.txt through the language host's InstallDependencies: it failed with `method
    InstallDependencies not implemented`), `pulumi up`, the stack outputs it names, and `pulumi destroy`.
    Before the destroy is confirmed the stack is checked: an instance, its restore and an app that answers."""
    block = readme_block("Your own project")
    assert "--generate-only" not in block and "ln -s" not in block
    data_dir = home / "d"
    env = user_env(home, data_dir)
    proj = home / "myproj"
    checked: list[dict[str, object]] = []

    def check_the_stack() -> str:
        cp = subprocess.run(["pulumi", "stack", "output", "--json"], cwd=proj, env=env,  # noqa: S603,S607
                            capture_output=True, text=True, timeout=120, check=False)
        assert cp.returncode == 0, cp.stdout + cp.stderr
        outs = json.loads(cp.stdout)
        checked.append(outs)
        assert outs["instance"]["status"] == "available"
        assert outs["restore"]["restored_to"]
        with urllib.request.urlopen(f"{outs['app_url']}/hello/ann", timeout=30) as r:  # noqa: S310
            assert json.loads(r.read()) == {"greeting": "Hello, ANN!"}
        return "yes\r"

    script = "set -euo pipefail\n" + block
    session = terminal.run(["bash", "-c", script], cwd=ROOT, env=env, timeout=1500, prompts=[
        ("Project name", "\r"), ("Project description", "\r"), ("(dbPassword)", "Template-pw-123\r"),
        ("perform this update?", "yes\r"),
        ("perform this destroy?", check_the_stack),
    ])
    assert session.code == 0, session.text[-6000:]
    assert checked, session.text[-6000:]
    text = session.text
    assert "Your new project is ready to go!" in text and "Finished installing dependencies" in text
    assert "not implemented" not in text and "Traceback" not in text
    assert (proj / "venv" / "bin" / "python").exists()
    assert (proj / "wheels").is_dir() and "${" not in (proj / "requirements.txt").read_text()
    assert checked[0]["app_url"] in text  # `pulumi stack output app_url`
    assert "postgresql://hello_user:Template-pw-123@" in text  # `pulumi stack output database_url --show-secrets`
    assert (home / ".pulumi" / "stacks" / "myproj").is_dir()  # `pulumi login`: the state is the user's


@pytest.mark.parametrize("kind", ["DatabaseInstance", "RestoredInstance", "LinkedInstance", "AppDatabase", "App"])
def test_pulumi_import_fails_with_one_line_naming_adopt(make_project, kind: str) -> None:  # type: ignore[no-untyped-def]
    """Issue 32: `pulumi import pulumi-python:dynamic/dbos:DatabaseInstance other hello_db` failed with a raw
    traceback (`KeyError: '__provider'`: a dynamic provider's resource keeps its pickled provider in its
    state, which an import does not have). Now each resource type's import fails with one line that says
    what to do instead (`adopt=True`), with the real CLI, and the stack is left as it was."""
    proj = make_project(INSTANCES_PROGRAM)
    env = {**os.environ, **(proj.ws_opts.env_vars or {})}
    cp = subprocess.run(["pulumi", "import", f"pulumi-python:dynamic/dbos:{kind}", "other", "hello_db", "--yes",  # noqa: S603,S607
                         "--non-interactive", "--stack", "test"], cwd=proj.work, env=env, capture_output=True,
                        text=True, timeout=300, check=False)
    text = cp.stdout + cp.stderr
    assert cp.returncode != 0, text
    assert "Traceback" not in text and "KeyError" not in text, text
    lines = [line for line in text.splitlines() if "pulumi import cannot read a pulumi-dbos" in line]
    assert len(lines) >= 1 and f"pulumi-dbos {kind} " in lines[0] and "adopt=True" in lines[0], text
    assert "\n" not in lines[0]
    exported = json.loads(subprocess.run(["pulumi", "stack", "export", "--stack", "test"], cwd=proj.work, env=env,  # noqa: S603,S607
                                         capture_output=True, text=True, timeout=120, check=True).stdout)
    assert not [r for r in exported["deployment"].get("resources") or [] if "dbos:" in r["type"]]
