"""Restore drills through the engine contract: on the local engine and a pulumi-dbos serve they restore,
check and keep the result (DBOS Cloud's API has none: tests/integration/test_serve_exact.py)."""

from __future__ import annotations

import pytest

from pulumi_dbos.engine.contract import Engine
from tests.contract.helpers import PW, Instances, connect


@pytest.mark.extension("restore drills, GET/POST databases/userdb/{name}/drills")
def test_drill_restores_checks_and_keeps_the_result(contract_engine: Engine, instances: Instances) -> None:
    info = instances.provision("drl")
    with connect(info, PW) as conn:
        conn.execute("CREATE TABLE t (x int)")
        conn.execute("INSERT INTO t SELECT generate_series(1, 50)")
        conn.execute("ANALYZE t")  # no autoanalyze (a transaction of its own) while the drill runs
    assert contract_engine.drills(info.name) == []
    r = contract_engine.drill(info.name, check_sql="SELECT count(*) = 50 FROM t")
    assert r.ok, r.reason
    assert r.instance == info.name and r.sql_checked and r.tables >= 1
    assert r.rto_seconds is not None and r.rto_seconds > 0 and r.rpo_seconds is not None
    assert contract_engine.drills(info.name) == [r]
    assert r.summary() == {"at": r.at, "ok": True, "rto_seconds": r.rto_seconds, "rpo_seconds": r.rpo_seconds}
    assert [i.name for i in contract_engine.list() if i.name.startswith("drill_")] == []  # the scratch: gone, never listed
    with connect(info, PW) as conn:
        assert conn.execute("SELECT count(*) FROM t").fetchone() == (50,)

