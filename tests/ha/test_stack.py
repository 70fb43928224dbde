"""High availability through the real pulumi CLI, as issue 33's "done when" tells it: a user turns
``highAvailability`` on in a stack (an update: standbys added, the same URL and data), kills the primary's host,
and the DBOS app the stack binds to the instance keeps serving after the failover gap, with no acknowledged
commit and no acknowledged workflow lost; a refresh shows ``degraded``, the next ``pulumi up`` repairs it, turning
HA off is an update too, and the hosts go with the last HA instance (a destroy of an HA instance:
tests/ha/test_failover.py's last test)."""

from __future__ import annotations

import functools
import json
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pulumi_dbos.engine import LocalEngine
from pulumi_dbos.engine.ha import cluster
from pulumi_dbos.engine.ha.hosts import Fabric
from pulumi_dbos.engine.waits import wait_until
from tests.conftest import ROOT, _short_tmpdir, cleanup_data_dir, kill_servers_under
from tests.e2e.conftest import PROGRAM_HEADER, Project, step_ops
from tests.e2e.test_app import get, http
from tests.ha.conftest import Writer, _skip_reason, present

pytestmark = pytest.mark.ha

PROGRAM = PROGRAM_HEADER + """
out = {}
for key, s in spec.get("instances", {}).items():
    out[key] = dbos.DatabaseInstance(key, password=cfg.require_secret("pw_" + key), **s)
pulumi.export("urls", pulumi.Output.secret({k: v.database_url for k, v in out.items()}))
pulumi.export("status", {k: v.status for k, v in out.items()})
pulumi.export("leader", {k: v.leader for k, v in out.items()})
pulumi.export("members", {k: v.members for k, v in out.items()})
if spec.get("app"):
    a = dict(spec["app"])
    app = dbos.App("greet", instance=out[a.pop("instance")], **a)
    pulumi.export("app_url", app.app_url)
"""
PW = "Stack-ha-pw-123"


@pytest.fixture
def project() -> Iterator[Project]:
    reason = _skip_reason() or (None if shutil.which("pulumi") else "the pulumi CLI is not on PATH")
    if reason:
        pytest.skip(reason)
    root = _short_tmpdir("pe")
    p = Project(root, PROGRAM, name=root.name)
    try:
        yield p
    finally:
        cleanup_data_dir(root / "d")
        Fabric(root / "d").teardown()
        kill_servers_under(root)
        shutil.rmtree(root, ignore_errors=True)


def rows(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as c:
        return int((c.execute("SELECT count(*) FROM t").fetchone() or (0,))[0])


@dataclass
class AppProber:
    """Starts a greet workflow (``POST /greet/<name>?delay=0``) through the app every 50 ms, as a client of the
    app would: ``acked`` are the workflows the app answered 200 for (DBOS has recorded them in the system
    database before it answers), with when."""

    app_url: str
    acked: list[tuple[str, float]] = field(default_factory=list)
    names: dict[str, str] = field(default_factory=dict)  #: workflow id -> the name it greets
    failures: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> AppProber:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        i = 0
        while not self._stop.is_set():
            i += 1
            try:
                status, body = http("POST", f"{self.app_url}/greet/p{i}?delay=0", timeout=5)
            except OSError:
                status, body = 0, None
            if status == 200 and isinstance(body, dict):
                self.acked.append((body["workflow_id"], time.monotonic()))
                self.names[body["workflow_id"]] = f"p{i}"
            else:
                self.failures += 1
            time.sleep(0.05)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)

    def gap_after(self, t: float) -> float:
        """Seconds from the last answer before ``t`` to the first after the longest pause following it."""
        stamps = [s for _, s in self.acked]
        points = ([b[-1]] if (b := [s for s in stamps if s < t]) else [t]) + [s for s in stamps if s >= t]
        return max((y - x for x, y in zip(points, points[1:], strict=False)), default=float("inf"))


def ended_status(app_url: str, wf: str) -> str | None:
    """The workflow's status once it has ended (SUCCESS or ERROR), else None (pending; unknown: lost)."""
    status = get(f"{app_url}/workflows/{wf}")["status"]
    assert status is not None, f"workflow {wf}, acknowledged by the app, is unknown to it: lost"
    return str(status) if status in ("SUCCESS", "ERROR") else None


def test_turn_on_lose_a_host_turn_off(project: Project, tmp_path: Path) -> None:
    p = project
    src = tmp_path / "greet"
    shutil.copytree(ROOT / "examples" / "greet", src, ignore=shutil.ignore_patterns("__pycache__"))
    spec: dict[str, Any] = {"instances": {"db": {"instance_name": "stackha", "username": "alice"}}}
    p.set_spec(spec, {"db": PW})
    p.up()
    url = p.outputs()["urls"]["db"]
    with psycopg.connect(url, autocommit=True) as c:
        c.execute("CREATE TABLE t (x int)")
        c.execute("INSERT INTO t SELECT generate_series(1, 10)")

    # the user's change: highAvailability on (an update, not a replace), and an app bound to the instance
    spec["instances"]["db"]["high_availability"] = True
    p.set_spec(spec)
    preview = p.preview()
    assert step_ops(preview) == {"same": 1, "update": 1}, preview.change_summary  # an update, not a replace
    assert "high_availability" in preview.stdout
    spec["app"] = {"instance": "db", "source": str(src)}
    p.set_spec(spec)
    p.up()
    out = p.outputs()
    assert out["urls"]["db"] == url  # the same endpoint: hostname and port do not move
    assert out["status"]["db"] == "available" and len(out["members"]["db"]) == 3
    assert rows(url) == 10
    app_url = out["app_url"].rstrip("/")

    # the primary's host dies while the app serves and a writer commits through the stack's URL
    eng = LocalEngine(p.data_dir)
    old = next(m for m in cluster.members(eng, "stackha") if m.name == out["leader"]["db"])
    long_wf = http("POST", f"{app_url}/greet/across?delay=3")[1]["workflow_id"]
    writer = Writer(url, "w_stack").start()
    prober = AppProber(app_url).start()
    writer.wait_commits(30)
    wait_until(lambda: len(prober.acked) >= 10, 30, "the app answering before the fault", interval=0.1)
    t0 = time.monotonic()
    assert cluster.fabric(eng).kill(old.host), "the primary's host had no process to kill"
    wait_until(lambda: cluster.topology(eng, "stackha").leader not in (None, old.name), 90,
               "a new leader after the primary's host died", interval=0.2)
    t_new = time.monotonic()
    served = len(prober.acked)
    wait_until(lambda: len(prober.acked) >= served + 20, 60, "the app serving after the failover", interval=0.1)
    writer.wait_commits(30)
    prober.stop()
    writer.stop()
    assert set(writer.acked) <= present(url, "w_stack")  # no acknowledged commit lost
    # no acknowledged workflow lost: each one the app answered for ends, SUCCESS with both of its rows there, or
    # ERROR when a step of it ran into the gap (greet's steps do not retry: the app's choice, not a loss); every
    # one started once the new primary was up succeeds
    ended = {wf: wait_until(functools.partial(ended_status, app_url, wf), 90, f"workflow {wf} ending", interval=0.2)
             for wf in [long_wf, *(w for w, _ in prober.acked)]}
    after = [wf for wf, at in prober.acked if at > t_new + 1]
    assert after and all(ended[wf] == "SUCCESS" for wf in after), {wf: ended[wf] for wf in after}
    done = {r["name"] for r in get(f"{app_url}/greetings") if r["status"] == "done"}
    assert all(prober.names[wf] in done for wf, _ in prober.acked if ended[wf] == "SUCCESS")
    print("HA-FIGURES " + json.dumps({
        "fault": "kill -9 of the primary's host under a stack with a bound DBOS app",
        "app_gap_s": round(prober.gap_after(t0), 2), "writer_gap_s": round(writer.gap_after(t0), 2),
        "workflows": len(ended), "succeeded": sum(v == "SUCCESS" for v in ended.values()),
        "commits": len(writer.acked), "lost": 0}))

    # a refresh says degraded (another member leads); the next up brings the host back
    p.stack.refresh(on_output=lambda _: None)
    state = p.resource("db") or {}
    assert state.get("status") in ("degraded", "unreachable"), state.get("status")
    p.up()
    cluster.wait_healthy(eng, "stackha")
    with psycopg.connect(url, autocommit=True) as c:
        c.execute("INSERT INTO t SELECT generate_series(11, 20)")

    spec["instances"]["db"]["high_availability"] = False
    p.set_spec(spec)
    p.up()
    out = p.outputs()
    assert out["urls"]["db"] == url and out["members"]["db"] is None and out["status"]["db"] == "available"
    assert rows(url) == 20
    assert get(f"{app_url}/")["app"] == "greet"  # the app followed the instance back to a single server
    assert not (p.data_dir / "instances" / "stackha" / "m").exists()
    assert not Fabric(Path(p.data_dir)).is_up(Fabric(Path(p.data_dir)).host(1))  # the last HA instance took the hosts

    p.destroy()
    assert LocalEngine(p.data_dir).info("stackha") is None
