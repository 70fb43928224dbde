"""``App`` (a DBOS app deployed and running) through the real pulumi CLI, with the sample app
examples/greet (DBOS Transact 3.x): GET / -> {app, version, greeting}; POST /greet/{name}?delay=S
starts a durable workflow (step, DBOS.sleep(S), step); GET /workflows/{id} -> {status, app_version};
GET /greetings lists the rows of the app's own table.

1. DBOS's recovery story: restore the instance to a time T while a workflow was pending, and in one
   `pulumi up` move the app onto the restore with ``previous_version`` = the version of T; the data
   is as of T, the workflow completes under that version; the old instance can then go.
2. a code change is one update whose diff is ``version``; an unchanged source is no change.
3. a failed migration or a never-healthy start fails `up` with the app's log, and the old version
   keeps serving on the old instance.
4. an app process killed out of band: refresh says UNHEALTHY, `up` restarts it.
5. bad inputs fail at preview with clear messages.
6. restore to before a password reset, then change-database-instance onto the restore.
7. `pulumi destroy` leaves no process, port claim or app directory.
8. a preview or refresh (no deploy) leaves the app serving.

Every test's project root must be left without a process (the ``leftovers`` fixture).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
import psycopg
import pytest
from pulumi import automation as auto

from pulumi_dbos.appsource import pack
from tests.conftest import ROOT
from tests.e2e.conftest import INSTANCES_AND_RESTORES, Project

PW = "Greet-e2e-passw0rd"
PW2 = "Greet-e2e-second-pw2"

# spec = {"instances": {key: kwargs}, "restores": {key: kwargs}, "app": kwargs or absent}. An instance's
# password is the secret config `pw_<key>`; a restore's `source` is a resource key of this program (the
# resource is passed, so its password is the source's) or else a plain instance name, and `pw` names a
# secret config key for an explicit password; the app's `instance` is a resource key.
PROGRAM = INSTANCES_AND_RESTORES + """
pulumi.export("urls", pulumi.Output.secret({k: v.database_url for k, v in insts.items()}))
if spec.get("app"):
    s = dict(spec["app"])
    app = dbos.App("greet", instance=insts[s.pop("instance")], **s)
    pulumi.export("version", app.version)
    pulumi.export("versions", app.versions)
    pulumi.export("status", app.status)
    pulumi.export("app_url", app.app_url)
    pulumi.export("instance_name", app.instance_name)
    pulumi.export("app_db", pulumi.Output.secret({"db": app.database_url, "sys": app.system_database_url}))
"""


def inst(name: str) -> dict[str, Any]:
    return {"instance_name": name, "username": "greet_user"}


# ---------------------------------------------------------------------------------------------- helpers
def http(method: str, url: str, timeout: float = 10) -> tuple[int, Any]:
    req = urllib.request.Request(url, method=method)  # noqa: S310 - http://127.0.0.1 only
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:  # noqa: S310
            body = r.read()
            return r.status, json.loads(body) if body else None
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


def get(url: str) -> Any:
    status, body = http("GET", url)
    assert status == 200, (url, status, body)
    return body


def reachable(url: str) -> bool:
    try:
        return http("GET", url, timeout=3)[0] == 200
    except (OSError, urllib.error.URLError):
        return False


def wait_for(pred: Callable[[], Any], timeout: float, what: str, interval: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, urllib.error.URLError):
            last = pred()
            if last:
                return last
        time.sleep(interval)
    raise AssertionError(f"{what}: not within {timeout:.0f}s (last: {last!r})")


def start_workflow(app_url: str, name: str, delay: float = 0) -> str:
    status, body = http("POST", f"{app_url}/greet/{name}?delay={delay}")
    assert status == 200, body
    return str(body["workflow_id"])


def workflow(app_url: str, wf: str) -> dict[str, Any]:
    return dict(get(f"{app_url}/workflows/{wf}"))


def wait_workflow(app_url: str, wf: str, status: str, timeout: float = 60) -> dict[str, Any]:
    return dict(wait_for(lambda: (w := workflow(app_url, wf))["status"] == status and w, timeout,
                         f"workflow {wf} reaching {status}"))


def rows(app_url: str) -> list[tuple[str, str]]:
    return [(r["name"], r["status"]) for r in get(f"{app_url}/greetings")]


def rfc3339_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def connect(url: str) -> psycopg.Connection[Any]:
    return psycopg.connect(url, connect_timeout=10, autocommit=True)


def port_of(url: str) -> int:
    return int(url.rsplit("@", 1)[1].split("/", 1)[0].rsplit(":", 1)[1])


def with_greeting(src: Path, greeting: str) -> None:
    main = src / "main.py"
    text = main.read_text()
    assert 'GREETING = "Hello"' in text or "GREETING = " in text
    lines = [f'GREETING = "{greeting}"' if line.startswith("GREETING = ") else line for line in text.splitlines()]
    main.write_text("\n".join(lines) + "\n")


def app_processes(data_dir: Path) -> list[psutil.Process]:
    """Processes working under the data dir's apps (each app's backend and proxy)."""
    base = str((data_dir / "apps").resolve())
    out = []
    for p in psutil.process_iter(["cwd", "cmdline", "status"]):
        with contextlib.suppress(psutil.Error):
            if p.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            cwd = p.info["cwd"] or ""
            if cwd == base or cwd.startswith(base + "/"):
                out.append(p)
    return out


def dead(p: psutil.Process) -> bool:
    try:
        return not p.is_running() or p.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def backend_processes(data_dir: Path) -> list[psutil.Process]:
    """The apps' serving processes: one per running version (as root, the outer process of its sandbox,
    working in the app's directory; not its children)."""
    procs = [p for p in app_processes(data_dir) if "main.py" in " ".join(p.cmdline())]
    pids = {p.pid for p in procs}
    return [p for p in procs if p.ppid() not in pids]


def leftover_processes(root: Path) -> list[str]:
    base = str(root.resolve())
    found = []
    for p in psutil.process_iter(["cwd", "cmdline", "status"]):
        with contextlib.suppress(psutil.Error):
            if p.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            cwd = p.info["cwd"] or ""
            cmd = " ".join(p.info["cmdline"] or [])
            if cwd == base or cwd.startswith(base + "/") or base + "/" in cmd:
                found.append(f"{p.pid}: {cmd} (cwd {cwd})")
    return found


def ports_dir() -> Path:
    return Path(os.environ.get("PULUMI_DBOS_PORTS_DIR", "/var/tmp/pulumi-dbos-ports"))


def claims_of(data_dir: Path) -> dict[int, str]:
    """Port claim files naming ``data_dir``: port -> claimant."""
    names = {str(data_dir), str(data_dir.resolve())}
    out = {}
    for f in ports_dir().glob("*"):
        with contextlib.suppress(OSError, ValueError):
            lines = f.read_text().splitlines()
            if lines and lines[0] in names:
                out[int(f.name)] = lines[1] if len(lines) > 1 else ""
    return out


def json_preview(p: Project) -> dict[str, Any]:
    """`pulumi preview --json` of ``p``'s stack (fails the test if the preview fails)."""
    cp = subprocess.run(["pulumi", "preview", "--json", "--diff", "--stack", "test", "--cwd", str(p.work)],  # noqa: S603,S607
                        capture_output=True, text=True, env={**os.environ, **(p.ws_opts.env_vars or {})},
                        timeout=600)
    assert cp.returncode == 0, cp.stdout + cp.stderr
    return dict(json.loads(cp.stdout))


def summary(pv: auto.PreviewResult) -> dict[str, int]:
    return {str(k): v for k, v in pv.change_summary.items() if v}


# ---------------------------------------------------------------------------------------------- fixtures
@pytest.fixture
def leftovers() -> Iterator[list[Path]]:
    """Set up before ``make_project`` (so torn down after its clean-up): every project root must be left
    without a process working there and without a machine-wide port claim."""
    roots: list[Path] = []
    yield roots
    problems = []
    for root in roots:
        found = []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            found = leftover_processes(root)
            if not found:
                break
            time.sleep(0.2)
        if found:
            for line in found:
                with contextlib.suppress(OSError, ValueError):
                    os.kill(int(line.split(":", 1)[0]), signal.SIGKILL)
            problems.append(f"{root}: processes {found}")
        claims = claims_of(root / "d")
        if claims:
            problems.append(f"{root}: port claims {claims}")
    assert not problems, f"left behind: {problems}"


@pytest.fixture
def project(leftovers: list[Path], make_project: Any) -> Callable[[], tuple[Project, Path]]:
    """A project running PROGRAM and a private copy of examples/greet (its root's ``greet``)."""

    def make() -> tuple[Project, Path]:
        p = make_project(PROGRAM)
        leftovers.append(p.root)
        src = p.root / "greet"
        shutil.copytree(ROOT / "examples" / "greet", src, ignore=shutil.ignore_patterns("__pycache__"))
        return p, src

    return make


# ---------------------------------------------------------------------------------------------- 1
def test_recovery_restore_and_previous_version_in_one_up(project: Any) -> None:
    """Deploy v1 on A; a workflow is pending at T; deploy v2; corrupt the data; then ONE `up` adds a
    restore of A at T and moves the app onto it with previous_version=v1: v1 serves, the data is as of
    T and the workflow pending at T completes under v1. Then A can be destroyed; the app keeps serving."""
    p, src = project()
    p.set_spec({"instances": {"a": inst("greet_a")}, "app": {"instance": "a", "source": str(src)}},
               {"a": PW})
    p.up()
    out = p.outputs()
    v1, url = out["version"], out["app_url"]
    assert v1 == pack(src)[0]
    assert get(url + "/") == {"app": "greet", "version": v1, "greeting": "Hello"}

    early = start_workflow(url, "early")
    wait_workflow(url, early, "SUCCESS")
    t0 = time.monotonic()
    pending = start_workflow(url, "pending", delay=40)
    wait_for(lambda: ("pending", "started") in rows(url), 20, "the pending workflow's first step")
    assert workflow(url, pending)["status"] == "PENDING"
    at_t = rows(url)
    assert at_t == [("early", "started"), ("early", "done"), ("pending", "started")]
    time.sleep(0.5)
    t = rfc3339_now()
    time.sleep(1.0)

    # v2: a code change, deployed over it (the pending workflow belongs to v1: v2 does not run it)
    with_greeting(src, "Howdy")
    p.up()
    v2 = p.outputs()["version"]
    assert v2 != v1 and get(url + "/") == {"app": "greet", "version": v2, "greeting": "Howdy"}
    assert workflow(url, pending)["status"] == "PENDING"

    # data corrupted after T
    db_urls = p.outputs()["app_db"]
    with connect(db_urls["db"]) as c:
        c.execute("DELETE FROM greetings")
    assert rows(url) == []

    # the recovery: restore A at T and move the app onto it with v1's code, in one up
    spec = {"instances": {"a": inst("greet_a")},
            "restores": {"b": {"instance_name": "greet_b", "source": "a", "restore_time": t}},
            "app": {"instance": "b", "source": str(src), "previous_version": v1}}
    p.set_spec(spec)
    p.up()
    out = p.outputs()
    assert out["version"] == v1 and out["instance_name"] == "greet_b" and out["app_url"] == url
    assert port_of(out["app_db"]["db"]) == port_of(out["urls"]["b"]) != port_of(out["urls"]["a"])
    assert get(url + "/") == {"app": "greet", "version": v1, "greeting": "Hello"}
    now = rows(url)
    assert now in (at_t, [*at_t, ("pending", "done")]), now  # the workflow may already have finished

    # the workflow pending at T completes, under v1 (it sleeps out the rest of its 40 s)
    done = wait_workflow(url, pending, "SUCCESS", timeout=max(90.0, 40 - (time.monotonic() - t0) + 60))
    assert done["app_version"] == v1
    assert rows(url) == [*at_t, ("pending", "done")]
    with connect(out["app_db"]["sys"]) as c:
        st = c.execute("SELECT status, application_version FROM dbos.workflow_status WHERE workflow_uuid = %s",
                       (pending,)).fetchone()
    assert st == ("SUCCESS", v1)
    with connect(out["urls"]["a"].rsplit("/", 1)[0] + "/greet") as c:  # A is untouched: still corrupted
        assert c.execute("SELECT count(*) FROM greetings").fetchone() == (0,)

    # A is no longer needed: removing it destroys it, the app keeps serving from the restore
    spec = {"restores": {"b": {"instance_name": "greet_b", "source": "greet_a", "restore_time": t, "pw": "pw_a"}},
            "app": {"instance": "b", "source": str(src), "previous_version": v1}}
    p.set_spec(spec)
    pv = p.preview()
    assert summary(pv) == {"delete": 1, "same": 3}, summary(pv)
    p.up()
    assert "a" not in p.outputs()["urls"]
    with pytest.raises(psycopg.OperationalError):
        connect(out["urls"]["a"]).close()
    status, body = http("GET", url + "/")
    assert status == 200 and body["version"] == v1
    assert rows(url) == [*at_t, ("pending", "done")]


# ---------------------------------------------------------------------------------------------- 2
def test_code_change_is_one_update_of_version(project: Any) -> None:
    p, src = project()
    spec = {"instances": {"a": inst("greet_a")}, "app": {"instance": "a", "source": str(src)}}
    p.set_spec(spec, {"a": PW})
    p.up()
    v1, url = p.outputs()["version"], p.outputs()["app_url"]
    assert get(url + "/")["greeting"] == "Hello"
    pv = p.preview()
    assert summary(pv) == {"same": 3}, summary(pv)  # stack, instance, app: an unchanged source is no change

    with_greeting(src, "Bonjour")
    v2 = pack(src)[0]
    assert v2 != v1
    pv = p.preview()
    assert summary(pv) == {"update": 1, "same": 2}, summary(pv)
    steps = {s["urn"].rsplit("::", 1)[1]: s for s in json_preview(p)["steps"]}
    assert steps["greet"]["op"] == "update"
    olds, news = steps["greet"]["oldState"]["inputs"], steps["greet"]["newState"]["inputs"]
    changed = {k for k in {*olds, *news} if olds.get(k) != news.get(k)}
    assert changed == {"version"}, {k: (olds.get(k), news.get(k)) for k in changed}
    assert re.search(rf'~ version\s*: "{v1}" => "{v2}"', pv.stdout), pv.stdout  # `preview --diff` shows it
    assert steps["greet"]["newState"]["inputs"]["version"] == v2  # the new id is known at preview
    assert [n for n, st in steps.items() if n != "greet" and st["op"] != "same"] == [], steps

    p.up()
    out = p.outputs()
    assert out["version"] == v2 and out["status"] == "AVAILABLE" and out["app_url"] == url
    assert get(url + "/") == {"app": "greet", "version": v2, "greeting": "Bonjour"}
    listed = [v["version"] for v in out["versions"]]
    assert listed == [v1, v2], out["versions"]  # the old version stays stored, oldest first
    assert all(v.get("created_at") for v in out["versions"])
    pv = p.preview()
    assert summary(pv) == {"same": 3}, summary(pv)


# ---------------------------------------------------------------------------------------------- 3
def test_failed_deploys_leave_the_old_version_serving(project: Any) -> None:
    """A failing migration, then a start command that exits: each `up` fails showing the app's last
    log lines; the old version keeps serving on the old instance; the state is unchanged."""
    p, src = project()
    insts = {"a": inst("greet_a"), "b": inst("greet_b")}
    p.set_spec({"instances": insts, "app": {"instance": "a", "source": str(src)}}, {"a": PW, "b": PW})
    p.up()
    out = p.outputs()
    v1, url, a_url = out["version"], out["app_url"], out["app_db"]["db"]
    a_port = port_of(out["urls"]["a"])

    def still_v1() -> int:
        assert get(url + "/") == {"app": "greet", "version": v1, "greeting": "Hello"}
        state = p.resource("greet") or {}
        assert state["version"] == v1 and state["instance_name"] == "greet_a"
        assert p.outputs()["version"] == v1
        assert port_of(p.outputs()["app_db"]["db"]) == a_port
        wf = start_workflow(url, f"w{time.monotonic_ns()}")
        wait_workflow(url, wf, "SUCCESS")
        with connect(a_url) as c:  # the serving process still writes to A's database
            row = c.execute("SELECT count(*) FROM greetings WHERE status = 'done'").fetchone()
        return int(row[0]) if row else -1

    assert still_v1() == 1

    # (a) a second migration that fails; also moving to B in the same up
    mig = src / "migrations" / "versions" / "0002_broken.py"
    mig.write_text('"""broken"""\n\nfrom alembic import op\n\nrevision = "0002"\ndown_revision = "0001"\n\n\n'
                   'def upgrade() -> None:\n    op.execute("SELECT broken")\n\n\n'
                   'def downgrade() -> None:\n    pass\n')
    with_greeting(src, "Broken migration")
    p.set_spec({"instances": insts, "app": {"instance": "b", "source": str(src)}})
    with pytest.raises(auto.CommandError) as err:
        p.up()
    msg = str(err.value)
    assert "dbos migrate" in msg and "Last log lines" in msg, msg
    assert "SELECT broken" in msg or '"broken" does not exist' in msg, msg  # the app's own output
    assert still_v1() == 2

    # (b) a start command that exits before it is healthy
    mig.unlink()
    cfg = (src / "dbos-config.yaml").read_text()
    bad_start = "python3 -c \"import sys; print('never-healthy-marker', flush=True); sys.exit(3)\""
    cfg = cfg.replace("    - python3 main.py", f"    - {json.dumps(bad_start)}")
    assert cfg != (src / "dbos-config.yaml").read_text()
    (src / "dbos-config.yaml").write_text(cfg)
    with_greeting(src, "Never healthy")
    with pytest.raises(auto.CommandError) as err:
        p.up()
    msg = str(err.value)
    assert "before it was healthy" in msg and "Last log lines" in msg, msg
    assert "never-healthy-marker" in msg, msg
    assert still_v1() == 3
    assert len(backend_processes(p.data_dir)) == 1  # no failed process left running


# ---------------------------------------------------------------------------------------------- 4
def test_killed_app_is_unhealthy_after_refresh_and_restarted_by_up(project: Any) -> None:
    p, src = project()
    p.set_spec({"instances": {"a": inst("greet_a")}, "app": {"instance": "a", "source": str(src)}},
               {"a": PW})
    p.up()
    url = p.outputs()["app_url"]
    assert (p.resource("greet") or {})["status"] == "AVAILABLE"
    procs = backend_processes(p.data_dir)
    assert len(procs) == 1, procs
    victim = procs[0]
    # the serving process is the one behind the app's port
    assert get(url + "/")["version"] == p.outputs()["version"]
    victim.kill()
    wait_for(lambda: dead(victim), 10, "the killed process exiting", interval=0.1)
    assert not reachable(url + "/")

    p.stack.refresh(on_output=lambda _: None)
    assert (p.resource("greet") or {})["status"] == "UNHEALTHY"
    pv = p.preview()
    assert summary(pv).get("update") == 1, summary(pv)
    p.up()
    assert get(url + "/")["greeting"] == "Hello"
    assert (p.resource("greet") or {})["status"] == "AVAILABLE"
    new = backend_processes(p.data_dir)
    assert len(new) == 1 and new[0].pid != victim.pid


# ---------------------------------------------------------------------------------------------- 5
def test_bad_app_inputs_fail_at_preview(project: Any) -> None:
    p, src = project()
    base = {"instances": {"a": inst("greet_a")}}
    p.set_spec(base, {"a": PW})

    def preview_error(app: dict[str, Any]) -> str:
        p.set_spec({**base, "app": {"instance": "a", **app}})
        with pytest.raises(auto.CommandError) as err:
            p.preview()
        return str(err.value)

    # a directory without dbos-config.yaml
    bare = p.root / "bare"
    bare.mkdir()
    (bare / "main.py").write_text("print('hi')\n")
    (bare / "requirements.txt").write_text("dbos\n")
    msg = preview_error({"source": str(bare)})
    assert "dbos-config.yaml" in msg and str(bare) in msg, msg

    # the config's name is not the app's
    other = p.root / "other"
    shutil.copytree(src, other)
    (other / "dbos-config.yaml").write_text((src / "dbos-config.yaml").read_text().replace("name: greet",
                                                                                          "name: other_app"))
    msg = preview_error({"source": str(other)})
    assert "app_name" in msg and "other_app" in msg and "'greet'" in msg, msg

    # requirements.txt without dbos
    nodbos = p.root / "nodbos"
    shutil.copytree(src, nodbos)
    (nodbos / "requirements.txt").write_text("fastapi\nuvicorn\n# dbos is missing\n")
    msg = preview_error({"source": str(nodbos)})
    assert "requirements.txt" in msg and "dbos" in msg, msg

    # a port another process listens on
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        busy = s.getsockname()[1]
        msg = preview_error({"source": str(src), "port": busy})
        assert "port" in msg and str(busy) in msg and "in use" in msg, msg
    assert not (p.data_dir / "apps").exists()  # previews made nothing

    # a previous_version that is not stored: the message lists the known ids
    p.set_spec({**base, "app": {"instance": "a", "source": str(src)}})
    p.up()
    v1 = p.outputs()["version"]
    msg = preview_error({"source": str(src), "previous_version": "0123456789ab"})
    assert "previous_version" in msg and "0123456789ab" in msg and v1 in msg, msg


# ---------------------------------------------------------------------------------------------- 6
def test_restore_before_password_reset_then_move_app_onto_it(project: Any) -> None:
    p, src = project()
    spec: dict[str, Any] = {"instances": {"a": inst("greet_a")}, "app": {"instance": "a", "source": str(src)}}
    p.set_spec(spec, {"a": PW})
    p.up()
    url = p.outputs()["app_url"]
    wait_workflow(url, start_workflow(url, "before"), "SUCCESS")
    at_t = rows(url)
    assert at_t == [("before", "started"), ("before", "done")]
    time.sleep(0.5)
    t = rfc3339_now()
    time.sleep(1.0)

    p.set_spec(spec, {"a": PW2})
    p.up()
    a_url = p.outputs()["urls"]["a"]
    assert PW2 in a_url
    wait_workflow(url, start_workflow(url, "after"), "SUCCESS")  # the app works with the new password
    assert rows(url) == [*at_t, ("after", "started"), ("after", "done")]

    spec = {"instances": {"a": inst("greet_a")},
            "restores": {"b": {"instance_name": "greet_b", "source": "a", "restore_time": t}},
            "app": {"instance": "b", "source": str(src)}}
    p.set_spec(spec)
    p.up()
    out = p.outputs()
    b_url = out["urls"]["b"]
    assert PW2 in b_url and PW not in b_url
    with connect(b_url) as c:
        assert c.execute("SELECT current_user").fetchone() == ("greet_user",)
    with pytest.raises(psycopg.OperationalError):  # the password of T was reset on the restore too
        connect(b_url.replace(PW2, PW)).close()
    assert out["instance_name"] == "greet_b" and port_of(out["app_db"]["db"]) == port_of(b_url)
    assert get(url + "/")["version"] == out["version"]
    assert rows(url) == at_t
    with connect(out["app_db"]["db"]) as c:
        assert [r[0] for r in c.execute("SELECT name FROM greetings ORDER BY id")] == ["before", "before"]
    wait_workflow(url, start_workflow(url, "onb"), "SUCCESS")  # and it works on B
    with connect(a_url.rsplit("/", 1)[0] + "/greet") as c:  # A untouched
        assert c.execute("SELECT count(*) FROM greetings WHERE name = 'onb'").fetchone() == (0,)


# ---------------------------------------------------------------------------------------------- 7
def test_destroy_stops_every_app_process(project: Any) -> None:
    p, src = project()
    p.set_spec({"instances": {"a": inst("greet_a")}, "app": {"instance": "a", "source": str(src)}},
               {"a": PW})
    p.up()
    url = p.outputs()["app_url"]
    app_port = int(url.rsplit(":", 1)[1])
    assert get(url + "/")["app"] == "greet"
    procs = app_processes(p.data_dir)
    cmds = [" ".join(x.cmdline()) for x in procs]
    assert any("main.py" in c for c in cmds) and any("proxy.py" in c for c in cmds), cmds
    claims = claims_of(p.data_dir)
    assert claims.get(app_port) == "app:greet", claims  # the app's stable port is claimed machine-wide
    assert (p.data_dir / "apps" / "greet").is_dir()

    p.destroy()
    alive = [x for x in procs if not dead(x)]
    assert not alive, alive
    assert not app_processes(p.data_dir)
    assert not leftover_processes(p.data_dir)
    # nothing of ours listens on the app's port (another engine on this machine may take it right away)
    listeners = [c.pid for c in psutil.net_connections("tcp")
                 if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == app_port]
    assert not set(listeners) & {x.pid for x in procs}, listeners
    assert claims_of(p.data_dir) == {}
    assert not (p.data_dir / "apps" / "greet").exists()


# ---------------------------------------------------------------------------------------------- 8
def test_preview_and_refresh_keep_the_app_serving(project: Any) -> None:
    """Commands that do not deploy the app (a no-change preview, a refresh) leave it serving (they used to
    chmod the data dir back to 0700, so the apps' OS user lost its files and the proxy reset every request)."""
    p, src = project()
    p.set_spec({"instances": {"a": inst("greet_a")}, "app": {"instance": "a", "source": str(src)}},
               {"a": PW})
    p.up()
    url, v1 = p.outputs()["app_url"], p.outputs()["version"]
    assert get(url + "/")["version"] == v1
    assert summary(p.preview()) == {"same": 3}
    assert get(url + "/")["version"] == v1
    p.stack.refresh(on_output=lambda _: None)
    assert get(url + "/")["version"] == v1
    assert (p.resource("greet") or {})["status"] == "AVAILABLE"
