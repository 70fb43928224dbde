"""Restore drills in `pulumi-dbos serve`: scheduled in its background thread, run on request through the
extension route, read by the dbos-cloud engine; their scratch instances in no list and no quota, and one a
killed server left removed at its next start."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from pulumi_dbos.engine import LocalEngine, get_engine
from pulumi_dbos.engine.local.drills import DRILL_OWNER
from tests.integration.test_serve import (
    PW,
    client,
    cloud_error,
    connect,
    info,
    name,
    names,
    provision,
    wait_for,
)
from tests.support.serve import Serve, running_serve

DRILLS = "/v1alpha1/acme/databases/userdb/{}/drills"


@pytest.fixture(scope="module")
def own_host() -> Iterator[None]:
    """This module's own drill and backup locks (no other run on the machine delays its drills), and no load
    limit (the machine is shared: its load says nothing about this test)."""
    lock_dir = tempfile.mkdtemp(prefix="drl")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PULUMI_DBOS_LOCK_DIR", lock_dir)
        mp.setenv("PULUMI_DBOS_DRILL_MAX_LOAD", "1000")
        yield
    shutil.rmtree(lock_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def drilling(own_host: None) -> Iterator[Serve]:
    with running_serve(extra_args=["--drill-interval", "3"]) as s:
        yield s


@pytest.fixture(scope="module")
def quiet(own_host: None) -> Iterator[Serve]:
    """No scheduled drills: a scratch instance made by hand stays until serve removes it."""
    with running_serve(extra_args=["--drill-interval", "0", "--max-instances", "2"]) as s:
        yield s


def with_rows(i: dict[str, Any], n: int) -> None:
    with connect(i, PW) as conn:
        conn.execute("CREATE TABLE t (x int)")
        conn.execute("INSERT INTO t SELECT generate_series(1, %s)", (n,))
        conn.execute("ANALYZE t")  # no autoanalyze (a transaction of its own) during a drill


def drills(api: httpx.Client, db: str) -> list[dict[str, Any]]:
    r = api.get(DRILLS.format(db))
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def test_scheduled_drills_run_and_are_read_by_the_engine(drilling: Serve) -> None:
    with client(drilling, drilling.token()) as api:
        db = name("sd")
        with_rows(provision(api, db), 10)

        def drilled() -> bool:
            assert names(api) == {db}  # a drill's scratch instance is never listed
            return any(d["Ok"] for d in drills(api, db))

        wait_for(drilled, 180, "a scheduled restore drill passed")
        d = next(d for d in drills(api, db) if d["Ok"])
        assert d["PostgresInstanceName"] == db and d["Tables"] >= 1 and d["RtoSeconds"] > 0
        assert d["RpoSeconds"] is not None and d["RestoredTo"]
        assert f"restore drill of {db} passed" in drilling.log()
        eng = get_engine("dbos-cloud", domain=drilling.domain, token=drilling.token(), ca_cert=str(drilling.ca_cert))
        kept = eng.drills(db)
        assert kept is not None and any(k.ok and k.at == d["At"] for k in kept)
        # the newest comes with the instance (DatabaseInstance.last_drill reads it from there on refresh)
        last = info(api, db)["LastDrill"]
        assert set(last) == {"At", "Ok", "RtoSeconds", "RpoSeconds"} and last["At"] >= d["At"]
        seen = eng.info(db)
        assert seen is not None and seen.last_drill is not None and seen.last_drill["at"] >= d["At"]

        # on request: a check that holds, then one that does not (loud in the log, Ok false, still 201)
        r = api.post(DRILLS.format(db), json={"CheckSql": "SELECT count(*) = 10 FROM t"})
        assert r.status_code == 201, r.text
        assert r.json()["Ok"] is True and r.json()["SqlChecked"] is True
        r = api.post(DRILLS.format(db), json={"CheckSql": "SELECT count(*) = 11 FROM t"})
        assert r.status_code == 201, r.text
        assert r.json()["Ok"] is False and "returned False" in r.json()["Reason"]
        assert f"RESTORE DRILL FAILED for {db}" in drilling.log()
        api.post(DRILLS.format(db), json={"CheckSql": "SELECT true"})  # the scheduled ones pass again
        cloud_error(api.get(DRILLS.format("nosuch_db")), 404)
        with connect(info(api, db), PW) as conn:  # the source: its data, untouched
            assert conn.execute("SELECT count(*) FROM t").fetchone() == (10,)


def test_scratch_counts_for_nothing_and_a_killed_servers_is_removed(quiet: Serve) -> None:
    with client(quiet, quiet.token()) as api:
        db = name("qd")
        src = provision(api, db)
        with_rows(src, 3)
        cloud_error(api.post("/v1alpha1/acme/databases/userdb", json={
            "Name": name("own"), "AdminName": "u_user", "AdminPassword": PW, "Owner": DRILL_OWNER}), 400, "reserved")
        org = LocalEngine(quiet.data_dir / "orgs" / "acme")
        scratch = org.restore_to_new(db, "drill_0000dead", "latest", password=PW, owner=DRILL_OWNER)
        assert names(api) == {db}
        second = name("q2")
        provision(api, second)  # --max-instances 2: the scratch one is not counted
        cloud_error(api.post("/v1alpha1/acme/databases/userdb", json={
            "Name": name("q3"), "AdminName": "u_user", "AdminPassword": PW}), 400, "--max-instances 2")
        quiet.kill()
        quiet.start()
        assert org.catalog.get(scratch.name) is None
        assert not (quiet.data_dir / "orgs" / "acme" / "instances" / scratch.name).exists()
        assert "as a restore drill's scratch instance" in quiet.log()
        assert names(api) == {db, second}
        with connect(info(api, db), PW) as conn:
            assert conn.execute("SELECT count(*) FROM t").fetchone() == (3,)



def test_scheduled_drills_wait_while_the_host_is_busy(drilling: Serve) -> None:
    from pulumi_dbos.engine.local.autobackup import host_lock_path
    from pulumi_dbos.engine.local.workers import try_lock

    with client(drilling, drilling.token()) as api:
        db = name("bz")
        with try_lock(host_lock_path()) as held:  # "a base backup is running on this host"
            assert held
            with_rows(provision(api, db), 5)
            marker = len(drilling.log())
            wait_for(lambda: drilling.log().count("restore drills wait: a base backup is running on this host",
                                                  marker) >= 2, 60, "two scheduled rounds waited")
            assert drills(api, db) == []
        wait_for(lambda: any(d["Ok"] for d in drills(api, db)), 180, "the drill ran once the host was free")
