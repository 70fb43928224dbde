"""A password rotation of an App's instance through `pulumi up` (issue 19): the instance's update resets
the password and carries it to the running app (its password file), the App's update records the new
value without a redeploy — the app's serving process is the same, and a client polling its
database-backed route (GET /greetings) every 10 ms throughout `up` sees no failure."""

from __future__ import annotations

import time
from typing import Any

from tests.e2e.test_app import PW, PW2, backend_processes, inst, leftovers, project  # noqa: F401
from tests.integration.test_app_rotation import Poller


def test_password_rotation_through_up_keeps_the_app_process_and_its_answers(project: Any) -> None:  # noqa: F811
    p, src = project()
    p.set_spec({"instances": {"a": inst("greet_a")}, "app": {"instance": "a", "source": str(src)}}, {"a": PW})
    p.up()
    url = p.outputs()["app_url"]
    before = backend_processes(p.data_dir)
    assert len(before) == 1, before

    p.set_secret("pw_a", PW2)
    with Poller(url + "/greetings") as poll:
        time.sleep(0.5)
        p.up()
        time.sleep(1.0)

    assert poll.failures() == 0, f"{poll.failures()} of {len(poll.samples)} requests failed"
    assert poll.longest_gap() < 1.0, poll.longest_gap()
    after = backend_processes(p.data_dir)
    assert [q.pid for q in after] == [before[0].pid]  # no redeploy, no restart
    outs = p.outputs()
    assert PW2 in outs["app_db"]["db"] and PW not in outs["app_db"]["db"]  # the state records the new password
    assert (p.resource("greet") or {})["status"] == "AVAILABLE"
