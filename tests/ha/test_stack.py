"""High availability through the real pulumi CLI: turned on and off as an update (standbys added and removed, the
same URL and data), a lost host shown as `degraded` by a refresh and repaired by the next `pulumi up`, the hosts
gone with the last HA instance (a destroy of an HA instance: tests/ha/test_failover.py's last test)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pulumi_dbos.engine import LocalEngine
from pulumi_dbos.engine.ha import cluster
from pulumi_dbos.engine.ha.hosts import Fabric
from tests.conftest import _short_tmpdir, cleanup_data_dir, kill_servers_under
from tests.e2e.conftest import PROGRAM_HEADER, Project, step_ops
from tests.ha.conftest import _skip_reason

pytestmark = pytest.mark.ha

PROGRAM = PROGRAM_HEADER + """
out = {}
for key, s in spec.get("instances", {}).items():
    out[key] = dbos.DatabaseInstance(key, password=cfg.require_secret("pw_" + key), **s)
pulumi.export("urls", pulumi.Output.secret({k: v.database_url for k, v in out.items()}))
pulumi.export("status", {k: v.status for k, v in out.items()})
pulumi.export("leader", {k: v.leader for k, v in out.items()})
pulumi.export("members", {k: v.members for k, v in out.items()})
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


def test_turn_on_lose_a_host_turn_off(project: Project) -> None:
    p = project
    spec: dict[str, Any] = {"instances": {"db": {"instance_name": "stackha", "username": "alice"}}}
    p.set_spec(spec, {"db": PW})
    p.up()
    url = p.outputs()["urls"]["db"]
    with psycopg.connect(url, autocommit=True) as c:
        c.execute("CREATE TABLE t (x int)")
        c.execute("INSERT INTO t SELECT generate_series(1, 10)")

    spec["instances"]["db"]["high_availability"] = True
    p.set_spec(spec)
    preview = p.preview()
    assert step_ops(preview) == {"same": 1, "update": 1}, preview.change_summary  # an update, not a replace
    assert "high_availability" in preview.stdout
    p.up()
    out = p.outputs()
    assert out["urls"]["db"] == url  # the same endpoint: hostname and port do not move
    assert out["status"]["db"] == "available" and len(out["members"]["db"]) == 3
    assert rows(url) == 10

    # the primary's host dies: a refresh says degraded (another member leads), the next up brings it back
    eng = LocalEngine(p.data_dir)
    old = next(m for m in cluster.members(eng, "stackha") if m.name == out["leader"]["db"])
    cluster.fabric(eng).kill(old.host)
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
    assert not (p.data_dir / "instances" / "stackha" / "m").exists()
    assert not Fabric(Path(p.data_dir)).is_up(Fabric(Path(p.data_dir)).host(1))  # the last HA instance took the hosts

    p.destroy()
    assert LocalEngine(p.data_dir).info("stackha") is None
