"""Failover, switchover, rejoin and PITR of a 3-member HA instance (issue 33). Every test runs writers that
commit one row at a time and asserts that every acknowledged commit is still there afterwards."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from pulumi_dbos.engine.ha import cluster
from pulumi_dbos.engine.waits import wait_until
from tests.conftest import ROOT
from tests.ha.conftest import PW, HaInstance, Writer, endpoint_dsn, present

pytestmark = pytest.mark.ha


def report(**figures: object) -> None:
    print("HA-FIGURES " + json.dumps(figures))


def test_members_roles_and_status(ha: HaInstance) -> None:
    info = ha.engine.info(ha.name)
    assert info is not None and info.high_availability
    assert info.status == "available"
    roles = sorted(m["role"] for m in info.members or [])
    assert roles == ["leader", "replica", "sync_standby"], info.members
    assert info.leader and info.sync_standby and info.timeline


def test_kill_primary_host(ha: HaInstance) -> None:
    """kill -9 of every process of the primary's host and its namespace, while two writers commit: one through
    the endpoint (the instance's port), one through libpq's multi-host URL. A new primary within the gap, no
    acknowledged commit lost, the endpoint reaches the new primary, the old primary rejoins (pg_rewind)."""
    before = ha.topology()
    old = next(m for m in cluster.members(ha.engine, ha.name) if m.name == before.leader)
    via_endpoint = Writer(endpoint_dsn(ha.port), "w_endpoint").start()
    via_libpq = Writer(ha.multi_host_url(), "w_libpq").start()
    via_endpoint.wait_commits(50)
    via_libpq.wait_commits(50)
    t0 = time.monotonic()
    killed = ha.fabric.kill(old.host)
    assert killed, "the primary's host had no process to kill"
    new = wait_until(lambda: (t if (t := ha.topology()).leader not in (None, old.name) else None), 60,
                     "a new leader after the primary's host died", interval=0.1)
    assert new is not None
    failover = time.monotonic() - t0
    via_endpoint.wait_commits(50)
    via_libpq.wait_commits(50)
    info = ha.engine.info(ha.name)
    assert info is not None and info.status == "degraded", info
    via_endpoint.stop()
    via_libpq.stop()
    gap_endpoint, gap_libpq = via_endpoint.gap_after(t0), via_libpq.gap_after(t0)
    assert set(via_endpoint.acked) <= present(endpoint_dsn(ha.port), "w_endpoint")
    assert set(via_libpq.acked) <= present(endpoint_dsn(ha.port), "w_libpq")
    # the host comes back: its etcd member and Patroni restart, the old primary rejoins as a standby
    t1 = time.monotonic()
    ha.engine.ensure_running(ha.name)
    cluster.wait_healthy(ha.engine, ha.name)
    rejoin = time.monotonic() - t1
    top = ha.topology()
    back = next(m for m in top.members if m["name"] == old.name)
    assert back["role"] in ("replica", "sync_standby") and back["timeline"] == top.timeline
    log = (old.dir / "log").read_text(errors="replace")
    rewound = "pg_rewind" in log or "rewind" in log.lower()
    report(fault="kill -9 of the primary's host", failover_s=round(failover, 2),
           gap_endpoint_s=round(gap_endpoint, 2), gap_libpq_s=round(gap_libpq, 2),
           commits_endpoint=len(via_endpoint.acked), commits_libpq=len(via_libpq.acked), lost=0,
           rejoin_s=round(rejoin, 2), rewind_in_log=rewound)


def test_kill_primary_postmaster(ha: HaInstance) -> None:
    """kill -9 of the primary's postmaster alone (its host lives): Patroni notices and brings a primary back (its
    own PostgreSQL after crash recovery, or the synchronous standby); no acknowledged commit lost. The dead
    postmaster is reaped at once by its member's reaper (``engine/ha/reaper.py``): a zombie left to a slow init
    looks running to Patroni, which then notices nothing."""
    import os
    import signal
    cluster.wait_healthy(ha.engine, ha.name)
    w = Writer(endpoint_dsn(ha.port), "w_postmaster").start()
    w.wait_commits(50)
    lead = cluster.leader(ha.engine, ha.name)
    t0 = time.monotonic()
    pid = int((lead.pgdata / "postmaster.pid").read_text().split()[0])
    os.kill(pid, signal.SIGKILL)
    assert wait_until(lambda: not Path(f"/proc/{pid}").exists(), 2, "the killed postmaster reaped", interval=0.02,
                      raise_on_timeout=False), "the killed postmaster is still a zombie"
    w.wait_commits(50, timeout=90)
    w.stop()
    assert set(w.acked) <= present(endpoint_dsn(ha.port), "w_postmaster")
    cluster.wait_healthy(ha.engine, ha.name)
    report(fault="kill -9 of the primary's postmaster", gap_s=round(w.gap_after(t0), 2), commits=len(w.acked),
           lost=0, leader_after=ha.topology().leader == lead.name)


def test_partition_of_the_primary(ha: HaInstance) -> None:
    """The primary's host cut off the network while a writer on that host (its Unix socket) and one through the
    endpoint commit: the cut-off primary acknowledges nothing after the cut (its synchronous standby is out of
    reach and etcd has no quorum there to drop it), the others elect a new primary, and once healed the old one
    rejoins; every acknowledged commit of both writers is there."""
    cluster.wait_healthy(ha.engine, ha.name)
    lead = cluster.leader(ha.engine, ha.name)
    local = (f"host={lead.sockdir} port={lead.port} user=app_user password={PW} dbname=postgres "
             "connect_timeout=3")
    on_host = Writer(local, "w_cut_local").start()
    via_endpoint = Writer(endpoint_dsn(ha.port), "w_cut_endpoint").start()
    on_host.wait_commits(50)
    via_endpoint.wait_commits(50)
    t_cut = time.monotonic()
    ha.fabric.partition(lead.host)
    try:
        new = wait_until(lambda: (t if (t := ha.topology()).leader not in (None, lead.name) else None), 90,
                         "a new leader on the other side of the partition", interval=0.2)
        assert new is not None
        via_endpoint.wait_commits(50, timeout=60)
    finally:
        ha.fabric.partition(lead.host, cut=False)
    failover = time.monotonic() - t_cut
    cluster.wait_healthy(ha.engine, ha.name)
    on_host.stop()
    via_endpoint.stop()
    after_cut = [s for s in on_host.stamps if s > t_cut + 1.0]
    assert not after_cut, f"the cut-off primary acknowledged {len(after_cut)} commits after the cut"
    assert set(on_host.acked) <= present(endpoint_dsn(ha.port), "w_cut_local")
    assert set(via_endpoint.acked) <= present(endpoint_dsn(ha.port), "w_cut_endpoint")
    report(fault="partition of the primary", failover_s=round(failover, 2),
           gap_endpoint_s=round(via_endpoint.gap_after(t_cut), 2), commits_on_host=len(on_host.acked),
           commits_endpoint=len(via_endpoint.acked), acknowledged_after_cut=0, lost=0)


def test_switchover_cli(ha: HaInstance) -> None:
    """`pulumi-dbos db switchover NAME`: the synchronous standby becomes the primary, the endpoint follows,
    no acknowledged commit is lost."""
    before = cluster.wait_healthy(ha.engine, ha.name)
    w = Writer(endpoint_dsn(ha.port), "w_switch").start()
    w.wait_commits(50)
    t0 = time.monotonic()
    cp = subprocess.run([shutil.which("pulumi-dbos") or "pulumi-dbos", "db", "switchover", ha.name,  # noqa: S603
                         "--data-dir", str(ha.data_dir)], capture_output=True, text=True, timeout=120)
    assert cp.returncode == 0, cp.stdout + cp.stderr
    assert f"leader {before.leader} -> {before.sync_standby}" in cp.stdout
    w.wait_commits(50)
    w.stop()
    assert set(w.acked) <= present(endpoint_dsn(ha.port), "w_switch")
    after = wait_until(lambda: (t if ((t := ha.topology()).timeline or 0) > (before.timeline or 0) else None), 30,
                       "the new leader's timeline in etcd", interval=0.1)
    assert after is not None and after.leader == before.sync_standby
    report(fault="planned switchover (CLI)", gap_s=round(w.gap_after(t0), 2), commits=len(w.acked), lost=0)


def test_pitr_across_timeline_switch(ha: HaInstance) -> None:
    """A restore into a new instance, from the shared repository, to a time after a timeline switch: exactly the
    rows committed before that time; a single server (Patroni's settings and roles gone), then an HA instance of
    its own (``RestoredInstance(high_availability=True)``: restore, then ``set_high_availability``); then a restore
    drill of the newest point, checked."""
    import psycopg
    dsn = endpoint_dsn(ha.port)
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("CREATE TABLE IF NOT EXISTS pitr (x int)")
        c.execute("INSERT INTO pitr SELECT generate_series(1, 100)")
    tl_before = ha.topology().timeline
    ha.engine.switchover(ha.name)
    cluster.wait_healthy(ha.engine, ha.name)
    assert wait_until(lambda: (ha.topology().timeline or 0) > (tl_before or 0), 30, "a new timeline", interval=0.1)
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("INSERT INTO pitr SELECT generate_series(101, 150)")
    time.sleep(1.1)
    target = datetime.now(timezone.utc).replace(microsecond=0)
    time.sleep(1.1)
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("INSERT INTO pitr SELECT generate_series(151, 200)")
    info = ha.engine.restore_to_new(ha.name, "hapitr", target.isoformat().replace("+00:00", "Z"), password=PW)
    try:
        assert info.status == "available" and not info.high_availability

        def rows(port: int) -> list[Any]:
            with psycopg.connect(endpoint_dsn(port), autocommit=True) as c:
                roles = c.execute("SELECT count(*) FROM pg_roles WHERE rolname LIKE 'dbos_re%'").fetchone()
                return [*(c.execute("SELECT count(*), max(x) FROM pitr").fetchone() or ()), *(roles or ())]

        assert rows(info.port) == [150, 150, 0]  # the HA roles dropped with the rest of Patroni's
        info = ha.engine.set_high_availability("hapitr", True, members=2)  # 2: the same path, 5 s less
        assert info.high_availability and len(info.members or []) == 2 and info.leader, info
        assert rows(info.port) == [150, 150, 2]  # its own members, its own roles
    finally:
        ha.engine.destroy("hapitr")
    assert ha.topology().leader, "the source's members are untouched by the restore's destroy"
    # a restore drill (the single-server drill: the leader read through the endpoint's members, the repository's
    # newest backup and WAL restored into a scratch server) reaches the newest point across the same timelines
    drill = ha.engine.drill(ha.name, check_sql="SELECT count(*) = 200 FROM pitr")
    assert drill.ok and drill.sql_checked and drill.tables >= 1, drill
    assert [i.name for i in ha.engine.list() if i.name.startswith("drill_")] == []


def _wal_until_due(ha: HaInstance) -> None:
    """WAL positions past the watcher's limit, cheaply: a commit and a segment switch at a time on the leader."""
    from pulumi_dbos.engine.ha import restores as ha_backups
    from pulumi_dbos.engine.local import autobackup
    need = autobackup.limit_for(ha.engine.catalog, ha.name)
    for _ in range(200):
        if (ha_backups.wal_since_backup(ha.engine, ha.name) or 0) >= need:
            return
        with cluster.admin(ha.engine, ha.name) as c:
            c.execute("SELECT pg_catalog.pg_current_xact_id()")
            c.execute("SELECT pg_catalog.pg_switch_wal()")
    raise AssertionError(f"{need} bytes of WAL not reached")


def test_the_watcher_backs_up_the_leader_across_a_switchover(ha: HaInstance, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The local engine's backup watcher (one round of it: ``watch_once``) takes the HA instance's scheduled
    backups by the same WAL-volume rule as a single server's, from the current leader into the instance's stanza
    with its retention (pgBackRest expires after each); after a switchover the next one comes from the new
    leader, on the new timeline, into the same stanza."""
    from pulumi_dbos.engine.local import autobackup
    monkeypatch.setenv("PULUMI_DBOS_WAL_BACKUP_MB", "4")
    monkeypatch.setenv("PULUMI_DBOS_LOCK_DIR", str(tmp_path))  # this test's own host lock
    eng = ha.engine
    rec = eng.catalog.get(ha.name)
    assert rec is not None and rec.stanza

    def backups() -> list[Any]:
        st = eng.repo.stanza(rec.stanza or "")
        return st.backups if st else []

    def round_() -> None:
        assert autobackup.watch_once(eng.layout, eng.catalog, eng.server), "the watcher saw nothing running"

    cluster.wait_healthy(eng, ha.name)
    _wal_until_due(ha)
    before = backups()
    round_()
    first = backups()
    assert len(first) == len(before) + 1, "no scheduled backup of the HA instance"
    b1 = first[-1]
    assert b1.annotations["high-availability"] == "true" and b1.label.endswith("I")  # incremental
    assert b1.annotations["retention-hours"] == str(rec.retention_hours)
    round_()
    assert len(backups()) == len(first), "a backup taken although not due"

    tl = ha.topology().timeline or 0
    ha.engine.switchover(ha.name)  # a new leader: the old one may still be rejoining, no matter
    _wal_until_due(ha)
    round_()
    second = backups()
    assert len(second) == len(first) + 1, "no scheduled backup after the switchover"
    b2 = second[-1]
    assert int(b2.start_wal[:8], 16) > int(b1.start_wal[:8], 16) and int(b2.start_wal[:8], 16) > tl, \
        (b1.start_wal, b2.start_wal, tl)


def test_reset_password_on_the_leader(ha: HaInstance) -> None:
    """A password reset runs on the leader and reaches every member: after a switchover the new password works
    and the old one does not."""
    import psycopg
    new_pw = "Ha-rotated-456"
    ha.engine.reset_credentials(ha.name, "app_user", new_pw)
    try:
        ha.engine.switchover(ha.name)
        url = endpoint_dsn(ha.port)
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(url).close()
        with psycopg.connect(url.replace(PW, new_pw), autocommit=True) as c:
            assert c.execute("SELECT pg_is_in_recovery()").fetchone() == (False,)
        assert ha.engine.check_credentials(ha.name, "app_user", new_pw)
    finally:
        ha.engine.reset_credentials(ha.name, "app_user", PW)


def test_dbos_workflow_runs_across_a_switchover(ha: HaInstance, tmp_path: Path) -> None:
    """The sample DBOS Transact app (examples/greet) bound to the HA instance: a durable workflow started before
    a switchover (two steps around a durable sleep) completes after it, its process untouched, both of its
    committed rows there."""
    import json
    import urllib.request

    from pulumi_dbos.appsource import pack
    from pulumi_dbos.engine.contract import AppDatabaseAccess, AppDeploy

    def call(url: str, method: str = "GET") -> Any:
        req = urllib.request.Request(url, method=method)  # noqa: S310 - http://127.0.0.1 only
        with urllib.request.urlopen(req, timeout=10) as r:  # noqa: S310
            return json.loads(r.read())

    src = tmp_path / "greet"
    shutil.copytree(ROOT / "examples" / "greet", src, ignore=shutil.ignore_patterns("__pycache__"))
    version, archive = pack(src)
    access = AppDatabaseAccess(ha.name, "127.0.0.1", ha.port, "app_user", PW)
    app = ha.engine.apps.deploy(AppDeploy("greet", version, archive, access, "greet", {}))
    try:
        before = cluster.wait_healthy(ha.engine, ha.name)
        wf = call(app.app_url + "/greet/ann?delay=8", "POST")["workflow_id"]
        time.sleep(1)
        ha.engine.switchover(ha.name)
        assert ha.topology().leader != before.leader
        done = wait_until(lambda: call(app.app_url + f"/workflows/{wf}")["status"] in ("SUCCESS", "ERROR") and
                          call(app.app_url + f"/workflows/{wf}"), 90, "the workflow finishing", interval=0.5)
        assert done and done["status"] == "SUCCESS", done
        rows = [r for r in call(app.app_url + "/greetings") if r["name"] == "ann"]
        assert [r["status"] for r in rows] == ["started", "done"]
    finally:
        ha.engine.apps.delete("greet")


def test_port_move_moves_the_endpoint(ha: HaInstance) -> None:
    """A port change of an HA instance moves its endpoint (the members keep theirs on their hosts): the new port
    reaches the primary, the old one is free."""
    import socket

    import psycopg
    cluster.wait_healthy(ha.engine, ha.name)
    old = ha.port
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        new = int(s.getsockname()[1])
    info = ha.engine.set_port(ha.name, new)
    assert info.port == new and info.status in ("available", "degraded")  # members: their own business
    with psycopg.connect(endpoint_dsn(new), autocommit=True) as c:
        assert c.execute("SELECT pg_is_in_recovery()").fetchone() == (False,)
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(endpoint_dsn(old)).close()


def test_destroy_removes_every_member_and_the_hosts(ha: HaInstance) -> None:
    """Last: the destroy of the data dir's only HA instance stops every member on every host, removes their data,
    etcd, the namespaces, the bridge and the blackhole route; the repository keeps its backups, and the instance
    restores from them by name into a single server."""
    import subprocess

    import psycopg
    with psycopg.connect(endpoint_dsn(ha.port), autocommit=True) as c:
        c.execute("CREATE TABLE kept (x int)")
        c.execute("INSERT INTO kept SELECT generate_series(1, 7)")
    members = cluster.members(ha.engine, ha.name)
    fabric = ha.fabric
    ha.engine.destroy(ha.name)
    assert ha.engine.info(ha.name) is None or ha.engine.info(ha.name).status == "lost"  # type: ignore[union-attr]
    assert not any(m.running() for m in members) and not any(m.dir.exists() for m in members)
    assert not any(fabric.is_up(h) for h in fabric.hosts)
    routes = subprocess.run(["ip", "route", "show", fabric.subnet], capture_output=True, text=True).stdout  # noqa: S603,S607
    assert not routes.strip(), routes
    assert not (ha.data_dir / "ha" / "etcd").exists()
    assert ha.engine.repo.of_instance(ha.name), "the destroyed instance's backups are kept"
    # and restore by name (from the repository alone) into a single server: a member's files made a server's
    info = ha.engine.restore_to_new(ha.name, "hagone", "latest", password=PW)
    with psycopg.connect(endpoint_dsn(info.port), autocommit=True) as c:
        assert c.execute("SELECT count(*) FROM kept").fetchone() == (7,)
        assert c.execute("SELECT count(*) FROM pg_roles WHERE rolname LIKE 'dbos_re%'").fetchone() == (0,)
    ha.engine.destroy("hagone")
