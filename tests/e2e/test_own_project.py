"""A user's own project (issue 20): its dbos:* config is checked by the library itself, and a project made
from templates/dbos-python previews, deploys and is destroyed with the real pulumi CLI."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
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


class TemplateProject:
    """A project made by `pulumi new` from the template, driven with the real CLI (tests/e2e/test_preview_environment)."""

    def __init__(self, root: Path) -> None:
        self.root, self.work, self.data_dir = root, root / "proj", root / "d"
        (root / "backend").mkdir()
        self.env = {**os.environ, "PULUMI_BACKEND_URL": f"file://{root / 'backend'}",
                    "PULUMI_CONFIG_PASSPHRASE": "template-throwaway-passphrase", "PULUMI_SKIP_UPDATE_CHECK": "true",
                    "PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION": "true", "PULUMI_HOME": str(root / "pulumi-home")}

    def pulumi(self, *args: str, stdin: str | None = None, check: bool = True,
               cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        cwd = cwd or (self.work if self.work.exists() else self.root)
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
        ("What would you like to do?", "Skip\r"),  # pulumi login, on a terminal with no stacks yet
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
    assert list((home / ".pulumi" / "stacks").rglob("dev.json"))  # `pulumi login`: the state is the user's

    # `pulumi install` (README: a fresh clone's ./venv) and `pulumi about` use the same language host
    for args, says in ((["install"], "Finished installing dependencies"), (["about"], "pulumi-dbos")):
        cp = subprocess.run(["pulumi", *args], cwd=proj, env=env, capture_output=True, text=True,  # noqa: S603,S607
                            timeout=600, check=False)
        assert cp.returncode == 0 and says in cp.stdout + cp.stderr, cp.stdout + cp.stderr
        assert "not implemented" not in cp.stdout + cp.stderr


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


PR_WORKFLOW = ROOT / ".github" / "workflows" / "pr-environment.yml"


class Runner:
    """Runs the steps of .github/workflows/pr-environment.yml as GitHub Actions would on one event, in a clone of a
    repository: `run` steps with bash (-eo pipefail), the job's and step's env, GITHUB_ENV and GITHUB_OUTPUT; the
    `uses` steps by what they provide here (checkout: the clone; setup-python: a `python` on PATH; pulumi/actions:
    the CLI on PATH, at the version the pin step read; github-script: the comment file is checked instead)."""

    def __init__(self, root: Path, origin: Path, base_env: dict[str, str], secrets: dict[str, str]) -> None:
        self.root, self.origin, self.base_env, self.secrets = root, origin, base_env, secrets
        self.workspace = root / "workspace"
        self.job = yaml.safe_load(PR_WORKFLOW.read_text())["jobs"]["environment"]

    def expr(self, text: str, number: int) -> str:
        known = {"github.event.pull_request.number": str(number), "github.workspace": str(self.workspace),
                 "vars.PULUMI_STACK || 'dev'": "dev", "vars.PR_ENVIRONMENT_PROJECT": "."}
        known.update({f"secrets.{k}": v for k, v in self.secrets.items()})
        out = re.sub(r"\$\{\{\s*(.*?)\s*\}\}", lambda m: known.get(m.group(1), m.group(0)), text)
        assert "${{" not in out, f"an expression this runner does not know: {out}"
        return out

    def run(self, action: str, number: int) -> None:
        shutil.rmtree(self.workspace, ignore_errors=True)
        out_file, env_file = self.root / "github_output", self.root / "github_env"
        env = dict(self.base_env)
        env.update({k: self.expr(str(v), number) for k, v in self.job["env"].items()})
        env.update(RUNNER_TEMP=str(self.root), GITHUB_OUTPUT=str(out_file), GITHUB_ENV=str(env_file))
        outputs: dict[str, dict[str, str]] = {}
        workdir = self.expr(self.job["defaults"]["run"]["working-directory"], number)
        for step in self.job["steps"]:
            cond = str(step.get("if", ""))
            if ("!= 'closed'" in cond and action == "closed") or ("== 'closed'" in cond and action != "closed"):
                continue
            uses = str(step.get("uses", ""))
            if uses.startswith("actions/checkout@"):
                subprocess.run(["git", "clone", "-q", str(self.origin), str(self.workspace)], check=True,  # noqa: S603,S607
                               timeout=120)
            elif uses.startswith("pulumi/actions@"):
                want = re.sub(r"\$\{\{\s*steps\.(\w+)\.outputs\.(\w+)\s*\}\}",
                              lambda m: outputs[m.group(1)][m.group(2)], str(step["with"]["pulumi-version"]))
                have = subprocess.run(["pulumi", "version"], env=env, capture_output=True, text=True,  # noqa: S603,S607
                                      timeout=60, check=True).stdout.strip()
                assert have == f"v{want}", (have, want)
            elif uses:
                continue  # setup-python (a `python` is on PATH), github-script (the test reads the comment)
            else:
                out_file.write_text("")
                env_file.write_text("")
                step_env = {**env, **{k: self.expr(str(v), number) for k, v in (step.get("env") or {}).items()}}
                cwd = self.workspace / self.expr(str(step.get("working-directory", workdir)), number)
                cp = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c",  # noqa: S603,S607
                                     self.expr(step["run"], number)], cwd=cwd, env=step_env, capture_output=True,
                                    text=True, timeout=900, check=False)
                assert cp.returncode == 0, f"step {step.get('name')!r} failed:\n{cp.stdout}\n{cp.stderr}"
                if "id" in step:
                    outputs[step["id"]] = dict(line.split("=", 1) for line in out_file.read_text().splitlines())
                env.update(dict(line.split("=", 1) for line in env_file.read_text().splitlines() if "=" in line))


def test_the_pr_workflow_runs_in_a_fresh_repository_made_from_the_template(home: Path) -> None:
    """Issue 32: .github/workflows/pr-environment.yml's steps, in a new git repository made from the template
    (no checkout of pulumi-dbos, no PULUMI_DBOS_SRC: its `pip install -r requirements.txt` died with a traceback
    on `file://${PULUMI_DBOS_SRC}`), from its clone: a push brings the pull request's stack up (requirements
    installed from the wheel the repository carries, the CLI at the SDK's version, the comment written), the
    close destroys it; the source stack is as it was."""
    data_dir = home / "d"
    backend = home / "backend"
    backend.mkdir()
    secrets = {"PULUMI_BACKEND_URL": f"file://{backend}", "PULUMI_CONFIG_PASSPHRASE": "pr-repo-passphrase",
               "PULUMI_ACCESS_TOKEN": "", "DBOS_CLOUD_TOKEN": "", "DBOS_CLOUD_CA_CERT": ""}
    tools = home / "bin"  # actions/setup-python: a `python` on PATH (the interpreter this suite's venv is made from)
    tools.mkdir()
    (tools / "python").symlink_to(Path(sys.base_prefix) / "bin" / "python3")
    pulumi_dir = str(Path(shutil.which("pulumi") or "pulumi").parent)
    path = os.pathsep.join([str(tools), pulumi_dir, *[p for p in os.environ["PATH"].split(os.pathsep)
                                                       if not p.startswith(str(ROOT)) and p != pulumi_dir]])
    env = user_env(home, data_dir)
    env.update(PATH=path, PULUMI_BACKEND_URL=secrets["PULUMI_BACKEND_URL"],
               PULUMI_CONFIG_PASSPHRASE=secrets["PULUMI_CONFIG_PASSPHRASE"])

    def pulumi(*args: str, cwd: Path, stdin: str | None = None) -> str:
        cp = subprocess.run(["pulumi", *args, "--non-interactive"], cwd=cwd, env=env, input=stdin,  # noqa: S603,S607
                            capture_output=True, text=True, timeout=900, check=False)
        assert cp.returncode == 0, f"pulumi {' '.join(args)}:\n{cp.stdout}\n{cp.stderr}"
        return cp.stdout

    def git(*args: str, cwd: Path) -> None:
        subprocess.run(["git", "-c", "user.name=ci", "-c", "user.email=ci@example.com", *args], cwd=cwd,  # noqa: S603,S607
                       env=env, check=True, capture_output=True, timeout=120)

    # the user's repository: `pulumi new` of the template, the dev stack's config, committed
    repo = home / "repo"
    pulumi("new", str(TEMPLATE), "--dir", str(repo), "--yes", "--name", "prdemo", "--stack", "dev",
           "--generate-only", cwd=home)
    pulumi("stack", "init", "dev", cwd=repo)
    pulumi("config", "set", "--secret", "dbPassword", cwd=repo, stdin="Template-pw-123")
    git("init", "-q", cwd=repo)
    git("add", "-A", cwd=repo)
    git("commit", "-qm", "a project from templates/dbos-python", cwd=repo)
    tracked = subprocess.run(["git", "ls-files"], cwd=repo, capture_output=True, text=True, check=True).stdout  # noqa: S603,S607
    assert "wheels/pulumi_dbos-" in tracked and "requirements.txt" in tracked
    # the source stack is up (its own virtualenv: this suite's, which has pulumi-dbos; not what is tested here)
    (repo / "venv").symlink_to(Path(sys.prefix))
    pulumi("up", "--yes", "--skip-preview", "--stack", "dev", cwd=repo)
    source_state = json.loads(pulumi("stack", "export", "--stack", "dev", cwd=repo))["deployment"]["resources"]

    runner = Runner(home, repo, env, secrets)
    runner.run("synchronize", 7)
    ws = runner.workspace
    assert (ws / "venv" / "bin" / "pulumi-dbos").exists()  # installed from the wheel the repository carries
    comment = (ws / "pr-environment-comment.md").read_text()
    url = json.loads(pulumi("stack", "output", "--json", "--stack", "pr-7", cwd=ws))["app_url"]
    assert f"App: {url}" in comment and "on instance `hello_pr7`" in comment, comment
    with urllib.request.urlopen(f"{url}/hello/ann", timeout=30) as r:  # noqa: S310
        assert json.loads(r.read()) == {"greeting": "Hello, ANN!"}

    runner.run("closed", 7)
    assert "Removed" in (runner.workspace / "pr-environment-comment.md").read_text()
    assert "pr-7" not in pulumi("stack", "ls", cwd=repo)
    assert json.loads(pulumi("stack", "export", "--stack", "dev", cwd=repo))["deployment"]["resources"] == source_state
    pulumi("destroy", "--yes", "--skip-preview", "--stack", "dev", cwd=repo)


def test_a_project_without_its_wheel_fails_the_install_with_one_error_line(tmp_path: Path) -> None:
    """Issue 32: without PULUMI_DBOS_SRC, `pip install -r requirements.txt` of the template died with a traceback
    (`non-local file URIs are not supported`). The install step of pr-environment.yml, in a project from the
    template whose wheels/ was not committed: it fails with one `::error::` line saying what is missing, and pip's
    own line names the file; no traceback."""
    project = tmp_path / "proj"
    shutil.copytree(ROOT / "templates" / "dbos-python", project, ignore=shutil.ignore_patterns("wheels"))
    step = next(s for s in yaml.safe_load(PR_WORKFLOW.read_text())["jobs"]["environment"]["steps"]
                if "requirements" in str(s.get("name", "")))
    cp = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", step["run"]], cwd=project,  # noqa: S603,S607
                        env={**os.environ, "GITHUB_ENV": str(tmp_path / "env"), "PIP_NO_INDEX": "1"},
                        capture_output=True, text=True, timeout=300, check=False)
    text = cp.stdout + cp.stderr
    assert cp.returncode == 1, text
    assert "Traceback" not in text and "${PULUMI_DBOS_SRC}" not in text
    errors = [line for line in cp.stdout.splitlines() if line.startswith("::error::")]
    assert len(errors) == 1 and "wheels/" in errors[0] and "commit it" in errors[0], text
    assert "wheels/pulumi_dbos-" in cp.stderr  # pip names the missing file
