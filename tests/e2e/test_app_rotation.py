"""Rotations of an App's instance through `pulumi up` (issue 19), a client polling the app's database-backed
route (GET /greetings) every 10 ms throughout:

- a password rotation: the instance's update resets the password and carries it to the running app (its
  password file), the App's update records the new value without a redeploy — the app's serving
  process is the same, and no request fails;
- a port move: the instance's update restarts its
  server on the new port with the old one forwarded, the App's update redeploys onto the new port; at
  most the few requests that met the old server shutting down fail, the longest gap stays under a
  second, and once `up` is done nothing forwards or claims the old port any more.

The rotation on the local engine and on dbos-cloud via serve; the move on the local engine (see its test).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import psutil

from tests.e2e.test_app import PW, PW2, backend_processes, inst, leftovers, project  # noqa: F401
from tests.e2e.test_previews import engine, use_serve  # noqa: F401
from tests.integration.test_app_rotation import _claimed
from tests.support.poller import Poller
from tests.support.serve import Serve, free_port


def test_password_rotation_through_up_keeps_the_app_process_and_its_answers(
        project: Any, engine: Serve | None) -> None:  # noqa: F811
    p, src = project()
    if engine is not None:
        use_serve(p, engine)
    p.set_spec({"instances": {"a": inst("greet_a")}, "app": {"instance": "a", "source": str(src)}}, {"a": PW})
    p.up()
    url = p.outputs()["app_url"]
    where = p.data_dir if engine is None else engine.data_dir / "orgs" / "acme"  # use_serve's organization
    before = backend_processes(where)
    assert len(before) == 1, before

    p.set_secret("pw_a", PW2)
    with Poller(url + "/greetings") as poll:
        time.sleep(0.5)
        p.up()
        time.sleep(1.0)

    assert poll.failures() == 0, f"{poll.failures()} of {len(poll.samples)} requests failed"
    assert poll.longest_gap() < 1.0, poll.longest_gap()
    after = backend_processes(where)
    assert [q.pid for q in after] == [before[0].pid]  # no redeploy, no restart
    outs = p.outputs()
    assert PW2 in outs["app_db"]["db"] and PW not in outs["app_db"]["db"]  # the state records the new password
    assert (p.resource("greet") or {})["status"] == "AVAILABLE"


def _forwarders(data_dir: Path) -> list[Path]:
    """Forwarder directories (``forward.py``) of the engine data dirs at ``data_dir`` (serve: one per organization)."""
    return sorted(data_dir.glob("forwards/*")) + sorted(data_dir.glob("orgs/*/forwards/*"))


def test_port_move_through_up_keeps_the_app_answering(project: Any) -> None:  # noqa: F811
    """On the local engine: the move on each engine is the contract suite's
    ``test_a_port_change_moves_the_running_version_in_place`` (dbos-cloud included), what `up` adds (the
    instance's update, then the app's) is the same for every engine."""
    p, src = project()
    p.set_spec({"instances": {"a": inst("greet_m")}, "app": {"instance": "a", "source": str(src)}}, {"a": PW})
    p.up()
    url = p.outputs()["app_url"]
    old = int(p.resource("a")["port"])  # type: ignore[index]
    new = free_port()

    p.set_spec({"instances": {"a": {**inst("greet_m"), "port": new}}, "app": {"instance": "a", "source": str(src)}})
    with Poller(url + "/greetings", bodies=(b"[",)) as poll:
        time.sleep(0.5)
        p.up()
        time.sleep(1.0)

    failed = [t for t, ok in poll.samples if not ok]
    assert len(failed) <= 10 and (not failed or failed[-1] - failed[0] < 0.5), \
        f"{len(failed)} of {len(poll.samples)} requests failed"
    assert poll.longest_gap() < 1.0, poll.longest_gap()
    assert int(p.resource("a")["port"]) == new  # type: ignore[index]
    assert f":{new}/" in p.outputs()["app_db"]["db"]
    # the app moved within the same `up`: nothing forwards or holds the old port any more
    assert _forwarders(p.data_dir) == []
    assert not any(f"/forwards/{old}/" in " ".join(q.info["cmdline"] or []) for q in psutil.process_iter(["cmdline"]))
    assert _claimed(old) != "fwd:greet_m"  # released (free for anyone: another engine may have it by now)
