"""Point-in-time restore into a new instance: the window, exact contents as of a time, failures.

One source instance serves the module: it holds row 1 committed before ``between`` and row 2
after it. Tests only add rows above 2, so "rows as of ``between``" stays ``[1]``.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import pytest

from pulumi_dbos.engine.contract import Engine, InstanceInfo, Kind, Preflight, Status
from pulumi_dbos.errors import AlreadyExistsError, DbosError, NotFoundError
from pulumi_dbos.timeutil import parse_rfc3339
from tests.contract.engines import link_user
from tests.contract.helpers import (
    OWNER_A,
    PW,
    USER,
    Instances,
    authenticates,
    connect,
    fields,
    rfc3339,
    rows,
    server_now,
)

RESTORED_PW = "Restored-pw-3"
_values = itertools.count(100)


@dataclass(frozen=True)
class Source:
    info: InstanceInfo
    between: datetime  # server time after row 1 committed and before row 2 did


@pytest.fixture(scope="module")
def source(module_instances: Instances) -> Source:
    info = module_instances.provision("src")
    with connect(info, PW) as conn:
        conn.execute("CREATE TABLE t (x int)")
        conn.execute("INSERT INTO t VALUES (1)")
        time.sleep(0.05)
        between = server_now(conn)
        time.sleep(0.05)
        conn.execute("INSERT INTO t VALUES (2)")
    return Source(info, between)


@pytest.mark.extension("the restorable window, UserDBInstance.EarliestRestorableTime/LatestRestorableTime")
def test_restore_window(contract_engine: Engine, source: Source) -> None:
    earliest, latest = contract_engine.restore_window(source.info.name)
    for t in (earliest, latest):
        assert isinstance(t, datetime) and t.tzinfo is not None and t.utcoffset() is not None
    assert earliest <= latest
    assert earliest <= source.between
    assert earliest <= datetime.now(timezone.utc) + timedelta(minutes=5)


def test_restore_at_a_time_holds_exactly_the_rows_then(contract_engine: Engine, instances: Instances,
                                                       source: Source) -> None:
    name = instances.name("rst_t")
    restored = contract_engine.restore_to_new(source.info.name, name, rfc3339(source.between),
                                              password=RESTORED_PW, owner=OWNER_A)
    assert restored.name == name and restored.status == Status.AVAILABLE
    assert restored.username == source.info.username == USER
    assert restored.port != source.info.port
    assert rows(restored, RESTORED_PW) == [1]
    # the source's user, with the password given to the restore (the source keeps its own)
    assert authenticates(restored, RESTORED_PW) and not authenticates(restored, PW)
    assert contract_engine.check_credentials(name, USER, RESTORED_PW) is True
    assert contract_engine.check_credentials(name, USER, PW) is False
    assert authenticates(source.info, PW) and not authenticates(source.info, RESTORED_PW)
    # independent of its source, which is untouched
    with connect(restored, RESTORED_PW) as conn:
        conn.execute("INSERT INTO t VALUES (-1)")
    assert {1, 2} <= set(rows(source.info, PW)) and -1 not in rows(source.info, PW)
    got = contract_engine.info(source.info.name)
    assert got is not None and got.status == Status.AVAILABLE


def test_restore_latest_holds_every_committed_row(contract_engine: Engine, instances: Instances,
                                                  source: Source) -> None:
    value = next(_values)
    with connect(source.info, PW) as conn:
        conn.execute("INSERT INTO t VALUES (%s)", (value,))
    expected = rows(source.info, PW)
    assert value in expected
    restored = contract_engine.restore_to_new(source.info.name, instances.name("rst_l"), "latest",
                                              password=RESTORED_PW)
    assert rows(restored, RESTORED_PW) == expected
    assert not authenticates(restored, PW)


@pytest.mark.extension("UserDBInstance.Kind/SourceInstance/RestoredTo/Owner")
def test_restored_instance_says_what_it_was_restored_from(contract_engine: Engine, instances: Instances,
                                                          source: Source) -> None:
    restored = contract_engine.restore_to_new(source.info.name, instances.name("rst_k"), rfc3339(source.between),
                                              password=RESTORED_PW, owner=OWNER_A)
    assert restored.kind == Kind.RESTORED and restored.source_instance == source.info.name
    assert restored.restored_to is not None
    assert abs(parse_rfc3339(restored.restored_to) - source.between) < timedelta(seconds=1)
    assert restored.owner == OWNER_A
    got = contract_engine.info(restored.name)
    assert got is not None and (got.kind, got.source_instance) == (Kind.RESTORED, source.info.name)


def test_restore_from_a_missing_source(contract_engine: Engine, instances: Instances) -> None:
    name = instances.name("rst_m")
    with pytest.raises(NotFoundError):
        contract_engine.restore_to_new("not_there", name, "latest", password=RESTORED_PW)
    assert contract_engine.info(name) is None


def test_restore_time_outside_the_window(contract_engine: Engine, instances: Instances, source: Source) -> None:
    name = instances.name("rst_o")
    # an hour before the source existed (no window reaches it), and tomorrow
    for when in (source.between - timedelta(hours=1), datetime.now(timezone.utc) + timedelta(days=1)):
        with pytest.raises(DbosError):
            contract_engine.restore_to_new(source.info.name, name, rfc3339(when), password=RESTORED_PW)
        assert contract_engine.info(name) is None
    assert name not in {i.name for i in contract_engine.list()}


def test_restore_onto_a_taken_name(contract_engine: Engine, instances: Instances, source: Source) -> None:
    taken = instances.provision("rst_tk")
    with pytest.raises(AlreadyExistsError):
        contract_engine.restore_to_new(source.info.name, taken.name, "latest", password=RESTORED_PW)
    got = contract_engine.info(taken.name)
    assert got is not None and got.kind == Kind.PROVISIONED and got.port == taken.port
    assert authenticates(taken, PW) and not authenticates(taken, RESTORED_PW)


# ---------------------------------------------------------------- preflight of restores
def restore_request(name: str, source: str, restore_time: str) -> Preflight:
    return Preflight(kind=Kind.RESTORED, name=name, owner=OWNER_A, source=source, restore_time=restore_time)


def test_preflight_of_a_valid_restore(contract_engine: Engine, instances: Instances, source: Source) -> None:
    name = instances.name("pf_ok")
    assert contract_engine.preflight(restore_request(name, source.info.name, "latest")) == []
    assert contract_engine.preflight(restore_request(name, source.info.name, rfc3339(source.between))) == []
    assert contract_engine.info(name) is None  # a preflight creates nothing


@pytest.mark.extension("the restorable window (DBOS Cloud does not report it: its restore says)")
def test_preflight_restore_time_outside_the_window(contract_engine: Engine, instances: Instances,
                                                   source: Source) -> None:
    earliest, _ = contract_engine.restore_window(source.info.name)
    name = instances.name("pf_rt")
    for when in (earliest - timedelta(hours=1), datetime.now(timezone.utc) + timedelta(days=1)):
        problems = contract_engine.preflight(restore_request(name, source.info.name, rfc3339(when)))
        assert fields(problems) == {"restore_time"}, problems
        assert problems[0].message
    assert contract_engine.info(name) is None


def test_preflight_restore_from_a_linked_instance(contract_engine: Engine, instances: Instances,
                                                  source: Source) -> None:
    # the source's own server, registered a second time as a linked instance
    linked = contract_engine.link(instances.name("pf_lnk"), source.info.hostname, source.info.port,
                                  link_user(contract_engine, source.info, PW), PW)
    name = instances.name("pf_ls")
    problems = contract_engine.preflight(restore_request(name, linked.name, "latest"))
    assert fields(problems) == {"source"}, problems
    with pytest.raises(DbosError):
        contract_engine.restore_to_new(linked.name, name, "latest", password=RESTORED_PW)
    assert contract_engine.info(name) is None


def test_preflight_restore_from_a_source_not_made_yet(contract_engine: Engine, instances: Instances) -> None:
    """The source may be created in the same update as the restore: only the restore itself fails."""
    name = instances.name("pf_ms")
    assert contract_engine.preflight(restore_request(name, "not_there", "latest")) == []
    assert contract_engine.info(name) is None
