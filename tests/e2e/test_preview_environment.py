"""Preview environments per pull request (issue 22): a project made from templates/dbos-python, its source stack
with data, then a pull request's stack `pr-<N>` made as .github/workflows/pr-environment.yml makes it (config
copied from the source stack, plus `previewOf` and `prNumber`), pushed twice, then closed. The real pulumi
CLI throughout; the source is read through a StackReference only and comes out of it untouched."""

from __future__ import annotations

import json
import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import yaml
from psycopg import sql
from psycopg.conninfo import make_conninfo
from pulumi import automation as auto

from pulumi_dbos.engine import LocalEngine
from tests.e2e.conftest import PROGRAM_HEADER, REPO, VENV
from tests.e2e.test_own_project import TEMPLATE, TemplateProject
from tests.e2e.test_own_project import template_project as template_project  # noqa: F401 - the fixture
from tests.support.serve import Serve, running_serve

pytestmark = pytest.mark.e2e
PR = 7
PR_ENVIRONMENT = REPO / ".github" / "workflows" / "pr-environment.yml"


def outputs(p: TemplateProject, stack: str) -> dict[str, Any]:
    return json.loads(p.pulumi("stack", "output", "--json", "--show-secrets", "--stack", stack).stdout)  # type: ignore[no-any-return]


def rows(database_url: str, dbname: str = "hello") -> list[str]:
    with psycopg.connect(make_conninfo(database_url, dbname=dbname), connect_timeout=10) as conn:
        return [r[0] for r in conn.execute("SELECT name FROM items ORDER BY id")]


def answer(url: str) -> dict[str, Any]:
    return httpx.get(url, timeout=30).raise_for_status().json()  # type: ignore[no-any-return]


def new_project(p: TemplateProject) -> None:
    p.pulumi("new", str(TEMPLATE), "--dir", str(p.work), "--yes", "--name", "ownproj", "--stack", "dev",
             "--generate-only")
    assert VENV is not None, "run the tests in the repo's virtualenv (make test)"
    (p.work / "venv").symlink_to(VENV)


def workflow_step(p: TemplateProject, name: str, source: str, number: int) -> None:
    """Run the step of .github/workflows/pr-environment.yml whose name starts with ``name``, as Actions runs it
    (``bash -e``, the job's variables), in the project."""
    job = yaml.safe_load(PR_ENVIRONMENT.read_text())["jobs"]["environment"]
    script = next(s["run"] for s in job["steps"] if str(s.get("name", "")).startswith(name))
    env = {**p.env, "SOURCE": source, "STACK": f"pr-{number}", "PR": str(number),
           "COMMENT": str(p.root / "comment.md"), "RUNNER_TEMP": str(p.root), "VENV": str(p.work / "venv")}
    cp = subprocess.run(["bash", "-e", "-c", script], cwd=p.work, env=env, capture_output=True,  # noqa: S603,S607
                        text=True, timeout=900, check=False)
    assert cp.returncode == 0, f"workflow step {name!r} failed:\n{cp.stdout}\n{cp.stderr}"


def open_pr_stack(p: TemplateProject, source: str, number: int) -> str:
    """What the workflow does first on `opened` and on every push: the stack `pr-<N>`, made when missing, with the
    source stack's config plus `previewOf` and `prNumber`."""
    workflow_step(p, "Make the stack of this pull request", source, number)
    return f"pr-{number}"


def play_lifecycle(p: TemplateProject, engine_view: Any) -> None:
    """source with data -> PR up -> second push -> close; ``engine_view()`` lists (instances, apps) by name."""
    p.pulumi("up", "--yes", "--stack", "dev")
    src = outputs(p, "dev")
    with psycopg.connect(make_conninfo(src["database_url"], dbname="hello"), autocommit=True) as conn:
        conn.execute("CREATE TABLE items (id serial PRIMARY KEY, name text NOT NULL)")
        conn.execute("INSERT INTO items (name) VALUES ('apple'), ('pear'), ('plum')")
    source_state = json.loads(p.pulumi("stack", "export", "--stack", "dev").stdout)["deployment"]["resources"]

    # the pull request opens: its stack is made and brought up; the preview checks first
    stack = open_pr_stack(p, "dev", PR)
    preview = json.loads(p.pulumi("preview", "--json", "--stack", stack).stdout)
    created = sorted(s["urn"].rsplit("::", 1)[1] for s in preview["steps"]
                     if s["op"] == "create" and "dbos:" in s["urn"])
    assert created == ["hello_pr7", "hello_pr7", "preview"], created  # the restore, the app, the component
    workflow_step(p, "Preview, bring the environment up", "dev", PR)  # preview --json, up, the comment
    pr = outputs(p, stack)
    comment = (p.root / "comment.md").read_text()
    assert f"App: {pr['app_url']} (version `{pr['app_version']}`), on instance `hello_pr7`" in comment, comment
    assert "pulumi preview · pr-7" in comment and comment.rstrip().endswith("<!-- pulumi-dbos-pr-environment -->")
    assert "Template-pw-123" not in comment
    # only what a reviewer needs (issue 32): no engine settings, no stack or StackReference rows
    for noise in ("data_dir", "run_as", "replace_on_engine_change", "instance_host", "StackReference", "pulumi:pulumi",
                  "`name`: null"):
        assert noise not in comment, (noise, comment)
    assert pr["instance_name"] == pr["app_name"] == "hello_pr7"
    assert rows(pr["database_url"]) == ["apple", "pear", "plum"]  # the source's data as of "latest"
    first = answer(pr["app_url"])
    assert first == {"app": "hello_pr7", "version": pr["app_version"]}
    assert answer(f"{pr['app_url']}/hello/ann") == {"greeting": "Hello, ANN!"}
    with psycopg.connect(make_conninfo(pr["database_url"], dbname="hello"), autocommit=True) as conn:
        conn.execute("INSERT INTO items (name) VALUES ('pr-only')")  # the preview's own writes stay in it
    assert rows(src["database_url"]) == ["apple", "pear", "plum"]

    # a second push, on a fresh checkout (no Pulumi.pr-7.yaml): new code, same data (the restore is kept)
    (p.work / f"Pulumi.{stack}.yaml").unlink()
    open_pr_stack(p, "dev", PR)
    main = p.work / "app" / "main.py"
    main.write_text(main.read_text().replace('f"Hello, {shout(name)}!"', 'f"Hi, {shout(name)}!"'))
    workflow_step(p, "Preview, bring the environment up", "dev", PR)
    pushed = outputs(p, stack)
    assert f"(version `{pushed['app_version']}`)" in (p.root / "comment.md").read_text()
    assert pushed["app_version"] != pr["app_version"] and pushed["restored_to"] == pr["restored_to"]
    assert answer(pushed["app_url"])["version"] == pushed["app_version"]
    assert answer(f"{pushed['app_url']}/hello/ann") == {"greeting": "Hi, ANN!"}
    assert rows(pushed["database_url"]) == ["apple", "pear", "plum", "pr-only"]
    instances, apps = engine_view()
    assert "hello_pr7" in instances and "hello_pr7" in apps

    # the pull request closes, seen from a fresh checkout: everything of it goes; the source is as it was
    (p.work / f"Pulumi.{stack}.yaml").unlink()
    workflow_step(p, "Destroy the environment and remove its stack", "dev", PR)
    assert stack not in p.pulumi("stack", "ls").stdout
    assert "Removed" in (p.root / "comment.md").read_text()
    instances, apps = engine_view()
    assert instances == {"hello_db", "hello_r1"} and apps == {"hello"}
    assert rows(src["database_url"]) == ["apple", "pear", "plum"]
    assert answer(src["app_url"]) == {"app": "hello", "version": src["app_version"]}
    assert json.loads(p.pulumi("stack", "export", "--stack", "dev").stdout)["deployment"]["resources"] == source_state
    main.write_text(main.read_text().replace('f"Hi, {shout(name)}!"', 'f"Hello, {shout(name)}!"'))
    assert p.pulumi("preview", "--expect-no-changes", "--stack", "dev").returncode == 0
    p.pulumi("destroy", "--yes", "--stack", "dev")


def test_a_pull_request_gets_its_own_data_and_app_and_closing_it_leaves_the_source_untouched(
        template_project: TemplateProject) -> None:  # noqa: F811
    p = template_project
    new_project(p)
    p.pulumi("stack", "init", "dev")
    p.pulumi("config", "set", "--secret", "dbPassword", stdin="Template-pw-123")
    p.pulumi("config", "set", "dbos:dataDir", str(p.data_dir))

    def engine_view() -> tuple[set[str], set[str]]:
        eng = LocalEngine(p.data_dir)
        return {i.name for i in eng.list()}, {a.name for a in eng.apps.all()}

    play_lifecycle(p, engine_view)


@pytest.fixture
def serve() -> Iterator[Serve]:
    with running_serve() as s:
        yield s


def test_the_same_lifecycle_on_the_dbos_cloud_engine_against_serve(template_project: TemplateProject,  # noqa: F811
                                                                    serve: Serve) -> None:
    p = template_project
    new_project(p)
    p.pulumi("stack", "init", "dev")
    p.pulumi("config", "set", "--secret", "dbPassword", stdin="Template-pw-123")
    for key, value in (("dbos:engine", "dbos-cloud"), ("dbos:cloudDomain", serve.domain),
                       ("dbos:cloudCaCert", str(serve.ca_cert))):
        p.pulumi("config", "set", key, value)
    token = serve.token("acme", "alice")
    p.pulumi("config", "set", "--secret", "dbos:cloudToken", stdin=token)
    headers = {"Authorization": f"Bearer {token}"}

    def engine_view() -> tuple[set[str], set[str]]:
        with httpx.Client(base_url=serve.url, verify=str(serve.ca_cert), headers=headers, timeout=30) as api:
            return ({d["PostgresInstanceName"] for d in api.get("/v1alpha1/acme/databases").json()},
                    {a["Name"] for a in api.get("/v1alpha1/acme/applications").json()})

    play_lifecycle(p, engine_view)


# ---------------------------------------------------------------------------- a name another stack owns
OWNED_NAME = PROGRAM_HEADER + """
import os
if cfg.get("pr"):
    ref = pulumi.StackReference(cfg.require("pr_of"))
    env = dbos.PreviewEnvironment("preview", source_instance=ref.require_output("name"), pr_number=cfg.require("pr"),
                                  app_source=os.path.join(cfg.require("repo"), "examples", "greet"),
                                  password=cfg.require_secret("pw_src"))
else:
    src = dbos.DatabaseInstance("src", instance_name="greet_pr3", username="src_user",
                                password=cfg.require_secret("pw_src"))
    pulumi.export("name", src.instance_name)
"""


def test_a_preview_whose_name_another_stack_owns_is_refused_at_preview_and_its_destroy_touches_nothing(
        make_project: Any) -> None:
    """The source stack owns an instance named as pull request 3's preview would be (greet_pr3): the PR stack's
    preview fails naming the owner (no takeover without adopt, which the component never sets), and a destroy of
    the PR stack leaves the instance and its data as they were."""
    proj = make_project(textwrap.dedent(OWNED_NAME))
    proj.set_spec({}, {"src": "Source-pw-123"})
    proj.up()
    eng = LocalEngine(proj.data_dir)
    info = eng.info("greet_pr3")
    assert info is not None
    conninfo = make_conninfo(host=info.hostname, port=info.port, user="src_user", password="Source-pw-123",
                             dbname="postgres")
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("CREATE TABLE kept (v int)")
        conn.execute("INSERT INTO kept VALUES (1), (2)")

    pr = auto.create_or_select_stack("pr-3", work_dir=str(proj.work), opts=proj.ws_opts)
    for key, value in (("dbos:dataDir", str(proj.data_dir)), ("pr", "3"), ("pr_of", "test"), ("repo", str(REPO))):
        pr.set_config(key, auto.ConfigValue(value))
    pr.set_config("pw_src", auto.ConfigValue("Source-pw-123", secret=True))
    with pytest.raises(auto.CommandError) as err:
        pr.preview(on_output=lambda _: None)
    text = str(err.value)
    assert "greet_pr3" in text and "adopt" in text and f"{proj.root.name}/test/src" in text, text
    with pytest.raises(auto.CommandError):
        pr.up(on_output=lambda _: None)
    pr.destroy(on_output=lambda _: None)
    pr.workspace.remove_stack("pr-3")

    after = eng.info("greet_pr3")
    assert after is not None and after.status == info.status and after.port == info.port
    with psycopg.connect(conninfo) as conn:
        assert conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier("kept"))).fetchone() == (2,)


def test_bad_inputs_fail_the_preview_naming_each_field_and_rule(make_project: Any, tmp_path: Path) -> None:
    program = PROGRAM_HEADER + f"""
dbos.PreviewEnvironment("preview", source_instance="src_db", pr_number="12345678", app_source={str(tmp_path)!r},
                        password="Source-pw-123", restore_time="yesterday", name="Bad-Name")
"""
    proj = make_project(program)
    with pytest.raises(auto.CommandError) as err:
        proj.preview()
    text = str(err.value)
    assert "pr_number: pr_number must be a positive integer of at most 7 digits" in text, text
    assert "restore_time: restore_time:" in text and "name: name must be 3-16 characters" in text
    assert "app_source: source" in text and "has no dbos-config.yaml" in text
    assert "Traceback" not in text
    assert not (proj.data_dir / "catalog.db").exists()
