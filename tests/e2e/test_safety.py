"""Regression tests for safety bugs, through the real pulumi CLI (Automation API, file:// backends).

Each test states the agreed behaviour; against the code before the fixes each one fails:

1. a stack of the same project/stack name in another backend must not take over an instance;
2. changing the data dir of an existing instance fails at preview unless opted in;
3. a restore's password follows its source (or its own ``password=``) on the server too, and
   refresh reports a password that no longer authenticates;
4. an app with ``owner_role=True`` can be updated;
5. a password rotation or port change does not rerun an app's migrations;
6. ``deletion_protection=True`` is Pulumi's ``protect``: destroy fails before deleting anything;
7. the example program orders restores of restores and reports cycles at preview;
8. the example project refreshes on every ``up``, so a killed server is restarted.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from pulumi import automation as auto

from pulumi_dbos.engine import LocalEngine
from tests.conftest import _short_tmpdir, cleanup_data_dir
from tests.e2e.conftest import INSTANCES_AND_RESTORES, Project
from tests.e2e.test_stacks import RepoCopy

PW = "Safety-first-pw1"
PW2 = "Safety-second-pw2"
PW3 = "Safety-third-pw3"
PW_OOB = "Changed-out-of-band9"

# One flexible program. spec = {"instances": {key: kwargs}, "restores": {key: kwargs}, "apps": {key: kwargs}}.
# An instance's password is the secret config `pw_<key>`; a restore's `source` names a resource key of
# this program (the resource is passed) or else is a plain instance name; `pw` names a secret config key
# for a restore's explicit password; an app's `instance` is a resource key.
PROGRAM = INSTANCES_AND_RESTORES + """
apps = {}
for key, s in spec.get("apps", {}).items():
    s = dict(s)
    apps[key] = dbos.AppDatabase(key, instance=insts[s.pop("instance")], **s)
pulumi.export("urls", pulumi.Output.secret({k: v.database_url for k, v in insts.items()}))
pulumi.export("ports", {k: v.port for k, v in insts.items()})
pulumi.export("apps", pulumi.Output.secret({k: {"url": a.database_url, "owner": a.owner_database_url}
                                            for k, a in apps.items()}))
"""


@pytest.fixture
def projects() -> Iterator[Any]:
    """Like ``make_project``, but the project name can be chosen (two projects may share it), and
    every data dir under a project's root (``d``, ``d2``...) is cleaned up."""
    roots: list[Path] = []

    def make(program: str = PROGRAM, name: str | None = None) -> Project:
        root = _short_tmpdir("pf")
        roots.append(root)
        return Project(root, program, name=name or root.name)

    try:
        yield make
    finally:
        for root in roots:
            for d in sorted(root.glob("d*")):
                cleanup_data_dir(d)
            shutil.rmtree(root, ignore_errors=True)


def connect(url: str) -> psycopg.Connection[Any]:
    return psycopg.connect(url, connect_timeout=10, autocommit=True)


def works(url: str) -> bool:
    try:
        with connect(url) as c:
            c.execute("SELECT 1")
    except psycopg.OperationalError:
        return False
    return True


def one_instance(**kw: Any) -> dict[str, Any]:
    return {"instances": {"db1": {"instance_name": "safe_db1", "username": "app_user", **kw}}}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cli(p: Project, *args: str) -> subprocess.CompletedProcess[str]:
    """The pulumi CLI itself on ``p``'s stack (the Automation API adds flags such as --skip-preview)."""
    return subprocess.run(["pulumi", *args, "--stack", "test", "--cwd", str(p.work), "--non-interactive"],  # noqa: S603,S607
                          capture_output=True, text=True, env={**os.environ, **(p.ws_opts.env_vars or {})},
                          timeout=300)


def preview_ops(p: Project) -> dict[str, str]:
    """resource name -> op, from `pulumi preview --json` (fails the test if the preview fails)."""
    cp = subprocess.run(["pulumi", "preview", "--json", "--stack", "test", "--cwd", str(p.work)],  # noqa: S603,S607
                        capture_output=True, text=True, env={**os.environ, **(p.ws_opts.env_vars or {})},
                        timeout=300)
    assert cp.returncode == 0, cp.stdout + cp.stderr
    data = json.loads(cp.stdout)
    return {s["urn"].rsplit("::", 1)[1]: s["op"] for s in data.get("steps", [])}


# ---------------------------------------------------------------------------------------------- 1
def test_same_project_and_stack_in_another_backend_cannot_take_over(projects: Any) -> None:
    """Two backends, same project and stack names, same data dir: the second stack's preview refuses
    (``already exists`` ... ``adopt``) and the first stack's instance keeps its password and data."""
    p = projects(name="twin")
    q = projects(name="twin")  # its own file:// backend, same project/stack name, same data dir
    q.stack.set_config("dbos:dataDir", auto.ConfigValue(str(p.data_dir)))
    p.set_spec(one_instance(), {"db1": PW})
    p.up()
    url = p.outputs()["urls"]["db1"]
    with connect(url) as c:
        c.execute("CREATE TABLE precious (x int)")
        c.execute("INSERT INTO precious VALUES (7)")

    q.set_spec(one_instance(), {"db1": PW2})
    with pytest.raises(auto.CommandError) as err:
        q.preview()
    text = str(err.value)
    assert "already exists" in text and "adopt" in text, text
    with pytest.raises(auto.CommandError):
        q.up()
    assert q.resource("db1") is None
    with connect(url) as c:  # the first stack's password still works and its data is intact
        assert c.execute("SELECT x FROM precious").fetchone() == (7,)
    assert p.preview().change_summary.get("same") == 2  # nothing changed for the first stack


# ---------------------------------------------------------------------------------------------- 2
def test_data_dir_change_fails_at_preview_unless_opted_in(projects: Any) -> None:
    """Changing ``dbos:dataDir`` (or ``data_dir``) of an existing instance fails at preview naming
    ``data_dir``, the data loss and the opt-in ``replace_on_engine_change``; the opt-in gives a replace."""
    p = projects()
    d2 = p.root / "d2"
    p.set_spec(one_instance(), {"db1": PW})
    p.up()
    url = p.outputs()["urls"]["db1"]
    pidfile = p.data_dir / "instances" / "safe_db1" / "data" / "postmaster.pid"
    pid = int(pidfile.read_text().split()[0])
    with connect(url) as c:
        c.execute("CREATE TABLE precious (x int)")
        c.execute("INSERT INTO precious VALUES (7)")

    def assert_refused(err: pytest.ExceptionInfo[auto.CommandError]) -> None:
        text = str(err.value)
        assert "data_dir" in text, text
        assert re.search(r"\b(lost|lose|loss|loses)\b", text, re.IGNORECASE), text
        assert "replace_on_engine_change" in text, text

    # through the stack config
    p.stack.set_config("dbos:dataDir", auto.ConfigValue(str(d2)))
    with pytest.raises(auto.CommandError) as err:
        p.preview()
    assert_refused(err)
    with pytest.raises(auto.CommandError):
        p.up()
    # through the resource input
    p.stack.set_config("dbos:dataDir", auto.ConfigValue(str(p.data_dir)))
    p.set_spec(one_instance(data_dir=str(d2)))
    with pytest.raises(auto.CommandError) as err:
        p.preview()
    assert_refused(err)

    # the old instance is untouched: same server, same password, same data
    assert int(pidfile.read_text().split()[0]) == pid
    with connect(url) as c:
        assert c.execute("SELECT x FROM precious").fetchone() == (7,)
    assert not (d2 / "instances" / "safe_db1").exists()

    # opted in: a replace
    p.set_spec(one_instance(data_dir=str(d2), replace_on_engine_change=True))
    pv = p.preview()
    assert pv.change_summary.get("replace") == 1, pv.change_summary
    with connect(url) as c:
        assert c.execute("SELECT x FROM precious").fetchone() == (7,)


# ---------------------------------------------------------------------------------------------- 3
def test_restore_password_follows_its_source(projects: Any) -> None:
    """(a) A restore made from the source resource: rotating the source's password updates the restore
    too, and afterwards the restore's database_url authenticates."""
    p = projects()
    spec = {**one_instance(), "restores": {"rst": {"instance_name": "safe_rst", "source": "db1",
                                                    "restore_time": "latest"}}}
    p.set_spec(spec, {"db1": PW})
    p.up()
    assert works(p.outputs()["urls"]["rst"])

    p.set_spec(spec, {"db1": PW2})
    ops = preview_ops(p)
    assert ops.get("db1") == "update" and ops.get("rst") == "update", ops
    p.up()
    urls = p.outputs()["urls"]
    assert works(urls["db1"])
    assert PW2 in urls["rst"]
    with connect(urls["rst"]) as c:  # today: password authentication failed (the server kept the old one)
        c.execute("SELECT 1")


def test_restore_to_before_a_password_reset_of_its_source(projects: Any) -> None:
    """(b) Restoring to a time before the source's password was reset: the restore's database_url
    (the source's current password) works and the data is as of that time."""
    p = projects()
    p.set_spec(one_instance(), {"db1": PW})
    p.up()
    with connect(p.outputs()["urls"]["db1"]) as c:
        c.execute("CREATE TABLE t (x int)")
        c.execute("INSERT INTO t VALUES (1)")
        before = c.execute("SELECT now()").fetchone()[0].isoformat()  # type: ignore[index]
    time.sleep(0.5)
    p.set_spec(one_instance(), {"db1": PW2})
    p.up()
    with connect(p.outputs()["urls"]["db1"]) as c:
        c.execute("INSERT INTO t VALUES (2)")

    p.set_spec({**one_instance(), "restores": {"rst": {"instance_name": "safe_rst", "source": "db1",
                                                        "restore_time": before}}})
    p.up()
    url = p.outputs()["urls"]["rst"]
    with connect(url) as c:  # today: password authentication failed (the role has the old password)
        assert [r[0] for r in c.execute("SELECT x FROM t")] == [1]


def test_restore_with_explicit_password(projects: Any) -> None:
    """(c) ``RestoredInstance(password=...)``: that password is what the restore's server accepts."""
    p = projects()
    p.set_spec(one_instance(), {"db1": PW})
    p.up()
    p.stack.set_config("rpw", auto.ConfigValue(PW3, secret=True))
    p.set_spec({**one_instance(), "restores": {"rst": {"instance_name": "safe_rst", "source": "db1",
                                                        "restore_time": "latest", "pw": "rpw"}}})
    p.up()
    port = p.outputs()["ports"]["rst"]
    with psycopg.connect(host="127.0.0.1", port=port, user="app_user", password=PW3, dbname="postgres",
                         connect_timeout=10) as c:  # today: password authentication failed
        c.execute("SELECT 1")
    assert works(p.outputs()["urls"]["rst"])
    assert not works(f"postgresql://app_user:{PW}@127.0.0.1:{port}/postgres")  # the source's is not it
    assert works(p.outputs()["urls"]["db1"])  # the source keeps its own


def test_refresh_reports_invalid_credentials_and_up_repairs_them(projects: Any) -> None:
    """(d) A password changed out of band on the server: refresh sets ``status`` to
    ``credentials_invalid`` (instance and restore alike); the next ``up`` makes the state's password work."""
    p = projects()
    p.set_spec({**one_instance(), "restores": {"rst": {"instance_name": "safe_rst", "source": "db1",
                                                        "restore_time": "latest"}}}, {"db1": PW})
    p.up()
    urls = p.outputs()["urls"]
    for key in ("db1", "rst"):
        with connect(urls[key]) as c:  # a password in SQL text: acceptable in a test
            c.execute(f"ALTER ROLE app_user PASSWORD '{PW_OOB}'")
        assert not works(urls[key])

    p.stack.refresh(on_output=lambda _: None)
    for key in ("db1", "rst"):
        st = p.resource(key)
        assert st is not None, key
        assert st["status"] == "credentials_invalid", (key, st["status"])

    p.up()
    for key in ("db1", "rst"):
        st = p.resource(key)
        assert st is not None and st["status"] == "available", (key, st and st["status"])
    urls = p.outputs()["urls"]
    assert works(urls["db1"]) and works(urls["rst"])


# ---------------------------------------------------------------------------------------------- 4, 5
def _mig_spec(mig_dir: Path, migrate: list[str], **inst: Any) -> dict[str, Any]:
    return {**one_instance(**inst),
            "apps": {"shop": {"app_name": "shop", "instance": "db1", "working_dir": str(mig_dir),
                              "migrate": migrate, "owner_role": False}}}


def test_owner_role_app_can_be_updated(projects: Any, tmp_root: Path) -> None:
    """``owner_role=True``: changing ``migrate`` and rotating the instance's password both update
    (today: InsufficientPrivilege, must be superuser to alter superuser roles)."""
    mig = tmp_root / "mig"
    mig.mkdir()
    p = projects()
    # a changed `migrate` list reruns all of it (documented), so these are idempotent
    t0 = "psql -v ON_ERROR_STOP=1 -q -c 'CREATE TABLE IF NOT EXISTS t0 (x int)'"
    t2 = "psql -v ON_ERROR_STOP=1 -q -c 'CREATE TABLE IF NOT EXISTS t2 (x int)'"

    def spec(migrate: list[str]) -> dict[str, Any]:
        s = _mig_spec(mig, migrate)
        s["apps"]["shop"]["owner_role"] = True
        return s

    p.set_spec(spec([t0]), {"db1": PW})
    p.up()
    owner_url = p.outputs()["apps"]["shop"]["owner"]
    with connect(owner_url) as c:
        assert c.execute("SELECT current_user").fetchone() == ("shop_owner",)

    p.set_spec(spec([t0, t2]))
    p.up()  # today: InsufficientPrivilege
    app = p.outputs()["apps"]["shop"]
    with connect(app["owner"]) as c:
        assert c.execute("SELECT to_regclass('t2')").fetchone()[0] is not None  # type: ignore[index]

    p.set_spec(spec([t0, t2]), {"db1": PW2})
    p.up()
    app = p.outputs()["apps"]["shop"]
    with connect(app["owner"]) as c:
        assert c.execute("SELECT current_user").fetchone() == ("shop_owner",)
        assert c.execute("SELECT to_regclass('t0')").fetchone()[0] is not None  # type: ignore[index]
    assert PW2 in app["url"] and works(app["url"])


def test_password_rotation_and_port_change_do_not_rerun_migrations(projects: Any, tmp_root: Path) -> None:
    """Non-idempotent migrations (a CREATE TABLE, a line appended to a file) run once, not again on a
    password rotation or a port change of the instance."""
    mig = tmp_root / "mig"
    mig.mkdir()
    log = mig / "ran.log"
    migrate = ["psql -v ON_ERROR_STOP=1 -q -c 'CREATE TABLE t1 (x int)'", "sh -c 'echo ran >> ran.log'"]
    p = projects()
    p.set_spec(_mig_spec(mig, migrate), {"db1": PW})
    p.up()
    assert log.read_text().splitlines() == ["ran"]

    p.set_spec(_mig_spec(mig, migrate), {"db1": PW2})
    p.up()  # today: the migration reruns: relation "t1" already exists
    assert log.read_text().splitlines() == ["ran"]
    url = p.outputs()["apps"]["shop"]["url"]
    assert PW2 in url
    with connect(url) as c:
        assert c.execute("SELECT to_regclass('t1')").fetchone()[0] is not None  # type: ignore[index]

    port = free_port()
    p.set_spec(_mig_spec(mig, migrate, port=port))
    p.up()
    assert log.read_text().splitlines() == ["ran"]
    url = p.outputs()["apps"]["shop"]["url"]
    assert f":{port}/" in url and works(url)


# ---------------------------------------------------------------------------------------------- 6
def test_deletion_protection_is_pulumi_protect(projects: Any) -> None:
    """``pulumi destroy`` with one protected and two unprotected instances fails before deleting any;
    removing the protected one from the program fails at preview.

    ``pulumi destroy`` is run as a user runs it (it previews first). With ``--skip-preview`` (what the
    Automation API's ``destroy()`` passes) Pulumi itself deletes the unprotected resources before
    failing on the protected one, so that is not what this test asserts."""
    p = projects()
    three = {"instances": {
        "prot": {"instance_name": "safe_prot", "username": "app_user", "deletion_protection": True},
        "un1": {"instance_name": "safe_un1", "username": "app_user"},
        "un2": {"instance_name": "safe_un2", "username": "app_user"},
    }}
    p.set_spec(three, {"prot": PW, "un1": PW, "un2": PW})
    p.up()
    urls = p.outputs()["urls"]
    assert all(works(u) for u in urls.values())

    cp = cli(p, "destroy", "--yes")
    assert cp.returncode != 0, cp.stdout + cp.stderr
    assert "protect" in cp.stdout + cp.stderr, cp.stdout + cp.stderr
    eng = LocalEngine(p.data_dir)
    for key, name in (("prot", "safe_prot"), ("un1", "safe_un1"), ("un2", "safe_un2")):
        assert eng.info(name) is not None, f"{name} was deleted by a destroy that failed"
        assert works(urls[key]), name
        assert p.resource(key) is not None, key

    p.set_spec({"instances": {k: v for k, v in three["instances"].items() if k != "prot"}})
    with pytest.raises(auto.CommandError) as err:
        p.preview()
    assert "protect" in str(err.value)
    assert eng.info("safe_prot") is not None and works(urls["prot"])


# ---------------------------------------------------------------------------------------------- 7, 8
class ExampleProject(RepoCopy):
    """The example project (Pulumi.yaml + stacks/) copied into a temp dir, with its own backend."""

    def config(self, stack: str, config: dict[str, Any]) -> None:
        """Add ``config`` (plain values) to stacks/Pulumi.<stack>.yaml (JSON is YAML)."""
        from ruamel.yaml import YAML

        f = self.work / "stacks" / f"Pulumi.{stack}.yaml"
        doc = dict(YAML(typ="safe").load(f.read_text()) or {})
        doc["config"] = {**(doc.get("config") or {}), **config}
        f.write_text(json.dumps(doc, indent=1))

    def database_url(self, stack: str, name: str) -> str:
        out = self.pulumi("stack", "output", "database_urls", "--json", "--show-secrets", "--stack", stack)
        return str(json.loads(out.stdout)[name])


@pytest.fixture
def example() -> Iterator[ExampleProject]:
    root = _short_tmpdir("px")
    try:
        yield ExampleProject(root)
    finally:
        for d in sorted(root.glob("d*")):
            cleanup_data_dir(d)
        shutil.rmtree(root, ignore_errors=True)


BASE = {"base_db": {"username": "base_user", "password": "Base-passw0rd-1"}}


def test_example_restore_of_a_restore_that_sorts_later(example: ExampleProject) -> None:
    """``aaa_r`` restored from ``zzz_r`` restored from ``base_db`` deploys (today: KeyError 'zzz_r')."""
    example.stack("ord")
    example.config("ord", {"dbos:instances": BASE, "dbos:restores": {
        "aaa_r": {"source": "zzz_r", "restoreTime": "latest"},
        "zzz_r": {"source": "base_db", "restoreTime": "latest"},
    }})
    example.pulumi("up", "--yes", "--stack", "ord")
    by_name = {r["urn"].rsplit("::", 1)[1]: r for r in example.resources("ord")}
    assert {"base_db", "zzz_r", "aaa_r"} <= set(by_name), sorted(by_name)
    assert by_name["aaa_r"]["outputs"]["source_instance"] == "zzz_r"
    assert by_name["zzz_r"]["outputs"]["source_instance"] == "base_db"
    out = json.loads(example.pulumi("stack", "output", "--json", "--stack", "ord").stdout)
    assert all(out["instances"][n]["status"] == "available" for n in ("base_db", "zzz_r", "aaa_r")), out["instances"]
    assert works(example.database_url("ord", "aaa_r"))


@pytest.mark.parametrize(("restores", "cycles"), [
    ({"aaa_r": {"source": "aaa_r", "restoreTime": "latest"}}, ["aaa_r -> aaa_r"]),
    ({"aaa_r": {"source": "bbb_r", "restoreTime": "latest"}, "bbb_r": {"source": "aaa_r", "restoreTime": "latest"}},
     ["aaa_r -> bbb_r -> aaa_r", "bbb_r -> aaa_r -> bbb_r"]),
], ids=["self", "two"])
def test_example_restore_cycles_fail_at_preview(example: ExampleProject, restores: dict[str, Any],
                                                cycles: list[str]) -> None:
    """A restore cycle fails at preview naming its path, and nothing is registered (not even the
    instances outside the cycle, not even by ``up --skip-preview``)."""
    example.stack("cyc")
    example.config("cyc", {"dbos:instances": BASE, "dbos:restores": restores})
    cp = example.pulumi("preview", "--stack", "cyc", check=False)
    text = cp.stdout + cp.stderr
    assert cp.returncode != 0, text
    assert any(c in text for c in cycles), text
    cp = example.pulumi("up", "--yes", "--skip-preview", "--stack", "cyc", check=False)
    assert cp.returncode != 0, cp.stdout + cp.stderr
    assert example.resources("cyc") == []
    assert not example.data_dir.exists() or LocalEngine(example.data_dir).list() == []


def test_example_up_restarts_a_killed_server(example: ExampleProject) -> None:
    """The example project refreshes on every ``up`` (``options: refresh: always``): after the server is
    SIGKILLed (as by a reboot), a plain ``pulumi up`` restarts it (today: "unchanged", still down)."""
    example.stack("rbt")
    example.config("rbt", {"dbos:instances": BASE})
    example.pulumi("up", "--yes", "--stack", "rbt")
    url = example.database_url("rbt", "base_db")
    assert works(url)
    pidfile = example.data_dir / "instances" / "base_db" / "data" / "postmaster.pid"
    pid = int(pidfile.read_text().split()[0])
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while works(url) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not works(url)

    example.pulumi("up", "--yes", "--stack", "rbt")  # no --refresh
    assert works(url), "the server was not restarted by a plain `pulumi up`"
    out = json.loads(example.pulumi("stack", "output", "--json", "--stack", "rbt").stdout)
    assert out["instances"]["base_db"]["status"] == "available"


def test_example_data_dir_change_needs_the_stack_opt_in(example: ExampleProject) -> None:
    """Through the example project: a new ``dbos:dataDir`` fails at preview (naming the data dir, the
    data loss and the opt-in) until ``dbos:replaceOnEngineChange: true``, which gives a replace."""
    example.stack("mv")
    example.config("mv", {"dbos:instances": BASE})
    example.pulumi("up", "--yes", "--stack", "mv")
    url = example.database_url("mv", "base_db")
    with connect(url) as c:
        c.execute("CREATE TABLE precious (x int)")
        c.execute("INSERT INTO precious VALUES (7)")
    example.pulumi("config", "set", "dbos:dataDir", str(example.root / "d2"), "--stack", "mv")
    cp = example.pulumi("preview", "--stack", "mv", check=False)
    text = cp.stdout + cp.stderr
    assert cp.returncode != 0, text
    assert "data_dir" in text or "dataDir" in text, text
    assert re.search(r"\b(lost|lose|loss|loses)\b", text, re.IGNORECASE), text
    assert "replace_on_engine_change" in text or "replaceOnEngineChange" in text, text
    cp = example.pulumi("up", "--yes", "--stack", "mv", check=False)
    assert cp.returncode != 0, cp.stdout + cp.stderr
    with connect(url) as c:
        assert c.execute("SELECT x FROM precious").fetchone() == (7,)

    example.pulumi("config", "set", "dbos:replaceOnEngineChange", "true", "--stack", "mv")
    pv = example.preview_json("mv")
    ops = {s["urn"].rsplit("::", 1)[1]: s["op"] for s in pv.get("steps", [])}
    assert ops.get("base_db") == "replace", (ops, pv.get("diagnostics"))
    with connect(url) as c:
        assert c.execute("SELECT x FROM precious").fetchone() == (7,)
