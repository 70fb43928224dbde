"""Provisioned instances: create, look up, start/stop, credentials, retention, port, destroy."""

from __future__ import annotations

from collections.abc import Callable

import psycopg
import pytest

from pulumi_dbos.engine.contract import AppEngine, Engine, InstanceInfo, Kind, Status
from pulumi_dbos.errors import AlreadyExistsError, DbosError, NotFoundError
from tests.contract.engines import ENGINE_FACTORIES
from tests.contract.helpers import (
    OWNER_A,
    PW,
    USER,
    Instances,
    authenticates,
    connect,
    free_port,
    names_of,
    rows,
    wait_until,
)

NEW_PW = "Contract-new-pw-2"


@pytest.fixture(scope="module")
def bystander(module_instances: Instances) -> InstanceInfo:
    """An instance whose name, port, data and password no test changes (a backup changes none of them):
    what fails or happens to other instances must leave it as it is."""
    return module_instances.provision("bystand", owner=OWNER_A)


def test_engine_implements_the_protocol(contract_engine: Engine, request: pytest.FixtureRequest) -> None:
    assert isinstance(contract_engine, Engine)
    assert isinstance(contract_engine.apps, AppEngine)
    param = request.node.callspec.params["contract_engine"]
    assert param in (contract_engine.kind, f"{contract_engine.kind}-exact", f"{contract_engine.kind}-ha")
    assert param in ENGINE_FACTORIES
    assert isinstance(contract_engine.describe(), str) and contract_engine.describe()


# ---------------------------------------------------------------- provision, info, list
def test_provision_then_connect(contract_engine: Engine, instances: Instances) -> None:
    info = instances.provision("prov", owner=OWNER_A)
    assert info.status == Status.AVAILABLE
    assert info.kind == Kind.PROVISIONED and not info.is_linked
    assert info.username == USER and info.hostname and info.port > 0
    with connect(info, PW) as conn:
        assert conn.execute("SELECT current_user").fetchone() == (USER,)
        conn.execute("CREATE TABLE t (x int)")
        conn.execute("INSERT INTO t VALUES (1)")
    assert rows(info, PW) == [1]
    assert not authenticates(info, "Wrong-pw-123")


def test_provision_of_a_taken_name_is_refused_and_changes_nothing(contract_engine: Engine,
                                                                   bystander: InstanceInfo) -> None:
    info = bystander
    with pytest.raises(AlreadyExistsError):
        contract_engine.provision(info.name, USER, NEW_PW)
    again = contract_engine.info(info.name)
    assert again is not None and again.port == info.port and again.status == Status.AVAILABLE
    assert authenticates(info, PW)
    assert not authenticates(info, NEW_PW)


@pytest.mark.same_on_ha("a port taken is refused before HA is turned on")
def test_failed_provision_leaves_nothing(contract_engine: Engine, instances: Instances,
                                        bystander: InstanceInfo) -> None:
    """A port another instance uses: the provision fails, and the name stays free."""
    other = bystander
    name = instances.name("failed")
    with pytest.raises(DbosError):
        contract_engine.provision(name, USER, PW, port=other.port)
    assert contract_engine.info(name) is None
    assert name not in names_of(contract_engine.list())
    assert authenticates(other, PW)  # the other instance is untouched
    # nothing left behind blocks the name
    info = contract_engine.provision(name, USER, PW)
    assert info.port != other.port and authenticates(info, PW)


@pytest.mark.extension("RetentionHours and Owner on provision, UserDBInstance.RetentionHours/Owner/CreatedAt")
def test_info_and_list(contract_engine: Engine, instances: Instances, bystander: InstanceInfo) -> None:
    a = instances.provision("lista", owner=OWNER_A, retention_hours=12)
    b = bystander
    assert a.port != b.port
    got = contract_engine.info(a.name)
    assert got is not None
    assert (got.name, got.status, got.hostname, got.port, got.username, got.kind, got.retention_hours) == (
        a.name, Status.AVAILABLE, a.hostname, a.port, USER, Kind.PROVISIONED, 12)
    assert got.owner == OWNER_A
    assert got.created_at
    listed = {i.name: i for i in contract_engine.list()}
    assert {a.name, b.name} <= set(listed)
    for made in (a, b):
        assert (listed[made.name].port, listed[made.name].username, listed[made.name].kind) == (
            made.port, USER, Kind.PROVISIONED)
    assert contract_engine.info("never_made") is None


# ---------------------------------------------------------------- running state
@pytest.mark.extension("POST databases/userdb/{name}/stop and /start")
def test_stop_then_ensure_running(contract_engine: Engine, instances: Instances) -> None:
    info = instances.provision("stop")
    with connect(info, PW) as conn:
        conn.execute("CREATE TABLE t (x int)")
        conn.execute("INSERT INTO t VALUES (7)")
    assert contract_engine.stop(info.name).status == Status.STOPPED
    stopped = contract_engine.info(info.name)
    assert stopped is not None and stopped.status == Status.STOPPED
    assert not authenticates(info, PW)
    started = contract_engine.ensure_running(info.name)
    assert started.status == Status.AVAILABLE and started.port == info.port
    assert rows(info, PW) == [7]
    # running already: a no-op
    assert contract_engine.ensure_running(info.name).status == Status.AVAILABLE
    assert authenticates(info, PW)


# ---------------------------------------------------------------- credentials
def test_reset_credentials(contract_engine: Engine, instances: Instances) -> None:
    info = instances.provision("reset")
    session = connect(info, PW)
    try:
        reset = contract_engine.reset_credentials(info.name, USER, NEW_PW)
        assert reset.name == info.name and reset.status == Status.AVAILABLE
        assert authenticates(info, NEW_PW)
        assert not authenticates(info, PW)
        assert contract_engine.check_credentials(info.name, USER, NEW_PW) is True
        assert contract_engine.check_credentials(info.name, USER, PW) is False

        def session_ended() -> bool:
            try:
                session.execute("SELECT 1")
            except psycopg.Error:
                return True
            return False

        wait_until(session_ended, 10, "the old password's session ending")
    finally:
        session.close()


def test_check_credentials(contract_engine: Engine, bystander: InstanceInfo) -> None:
    assert contract_engine.check_credentials(bystander.name, USER, PW) is True
    assert contract_engine.check_credentials(bystander.name, USER, "Wrong-pw-123") is False
    assert contract_engine.check_credentials(bystander.name, "nobody_here", PW) is False


@pytest.mark.same_on_ha("retention is the catalog's and the repository's, whatever the members")
# ---------------------------------------------------------------- retention, port
@pytest.mark.extension("RetentionHours on provision, PATCH databases/userdb/{name}")
def test_set_retention(contract_engine: Engine, instances: Instances) -> None:
    info = instances.provision("ret", retention_hours=12)
    assert info.retention_hours == 12
    assert contract_engine.set_retention(info.name, 48).retention_hours == 48
    got = contract_engine.info(info.name)
    assert got is not None and got.retention_hours == 48
    assert authenticates(info, PW)


@pytest.mark.extension("PATCH databases/userdb/{name} with Port")
def test_set_port_moves_the_instance(contract_engine: Engine, instances: Instances) -> None:
    info = instances.provision("port")
    with connect(info, PW) as conn:
        conn.execute("CREATE TABLE t (x int)")
        conn.execute("INSERT INTO t VALUES (5)")
    port = free_port(contract_engine)
    moved = contract_engine.set_port(info.name, port)
    assert moved.port == port and moved.status == Status.AVAILABLE
    got = contract_engine.info(info.name)
    assert got is not None and got.port == port
    assert rows(moved, PW) == [5]
    assert not authenticates(info, PW)  # nothing on the old port any more


@pytest.mark.extension("PATCH databases/userdb/{name} with Port")
def test_set_port_to_a_used_port_keeps_the_old_one(contract_engine: Engine, instances: Instances,
                                                    bystander: InstanceInfo) -> None:
    info = instances.provision("portk")
    other = bystander
    with pytest.raises(DbosError):
        contract_engine.set_port(info.name, other.port)
    got = contract_engine.info(info.name)
    assert got is not None and got.port == info.port and got.status == Status.AVAILABLE
    assert authenticates(info, PW) and authenticates(other, PW)


# ---------------------------------------------------------------- destroy
def test_destroy(contract_engine: Engine, instances: Instances) -> None:
    info = instances.provision("destr")
    with connect(info, PW) as conn:
        conn.execute("CREATE TABLE t (x int)")
    contract_engine.destroy(info.name)
    assert contract_engine.info(info.name) is None
    assert info.name not in names_of(contract_engine.list())
    assert not authenticates(info, PW)
    contract_engine.destroy(info.name)  # again: a no-op
    contract_engine.destroy("never_made")
    # the name is free again, for a new, empty instance
    fresh = contract_engine.provision(info.name, USER, PW)
    with connect(fresh, PW) as conn:
        assert conn.execute("SELECT to_regclass('t')").fetchone() == (None,)


# ---------------------------------------------------------------- missing instances
MISSING_CALLS: dict[str, Callable[[Engine, str], object]] = {
    "reset_credentials": lambda e, n: e.reset_credentials(n, USER, PW),
    "set_retention": lambda e, n: e.set_retention(n, 48),
    "restore_window": lambda e, n: e.restore_window(n),
    "backup": lambda e, n: e.backup(n),
    "set_port": lambda e, n: e.set_port(n, free_port(e)),
    "ensure_running": lambda e, n: e.ensure_running(n),
    "stop": lambda e, n: e.stop(n),
}


@pytest.mark.parametrize("call", sorted(MISSING_CALLS))
def test_missing_instance_is_not_found(contract_engine: Engine, call: str) -> None:
    with pytest.raises(NotFoundError):
        MISSING_CALLS[call](contract_engine, "not_there")


def test_missing_instance_info_is_none(contract_engine: Engine) -> None:
    assert contract_engine.info("not_there") is None
    assert "not_there" not in names_of(contract_engine.list())
    contract_engine.destroy("not_there")
    assert contract_engine.info("not_there") is None


# ---------------------------------------------------------------- backups
@pytest.mark.extension("POST databases/userdb/{name}/backup and the restorable window")
def test_backup(contract_engine: Engine, bystander: InstanceInfo) -> None:
    info = bystander
    backup = contract_engine.backup(info.name)
    assert backup.instance == info.name and backup.backup_id
    assert backup.started_at and backup.finished_at
    earliest, latest = contract_engine.restore_window(info.name)
    assert earliest <= latest
    assert authenticates(info, PW)


@pytest.mark.same_on_ha("the owner is the catalog's")
# ---------------------------------------------------------------- owner, crash recovery
@pytest.mark.extension("Owner on provision, PATCH databases/userdb/{name} with Owner")
def test_set_owner_records_the_new_owner(contract_engine: Engine, instances: Instances) -> None:
    """serve's PATCH with Owner went around the contract (a catalog write); now it is the engine's."""
    info = instances.provision("own", owner=OWNER_A)
    assert contract_engine.set_owner(info.name, "stack-b#urn").owner == "stack-b#urn"
    got = contract_engine.info(info.name)
    assert got is not None and got.owner == "stack-b#urn" and authenticates(info, PW)
    with pytest.raises(NotFoundError):
        contract_engine.set_owner("never_made", OWNER_A)


def test_recover_interrupted_leaves_finished_instances(contract_engine: Engine, bystander: InstanceInfo) -> None:
    assert bystander.name not in contract_engine.recover_interrupted()
    got = contract_engine.info(bystander.name)
    assert got is not None and got.status == Status.AVAILABLE and authenticates(bystander, PW)


# ---------------------------------------------------------------- high availability (tests/ha has the HA instances)
def test_a_single_server_is_not_high_available_and_has_nothing_to_switch_over(contract_engine: Engine,
                                                                               bystander: InstanceInfo) -> None:
    """Every engine: turning HA off on a single server changes nothing; a switchover of it is refused, naming why.
    (On ``local-ha`` the bystander is highly available: turning HA off makes it a single server, same port.)"""
    info = contract_engine.set_high_availability(bystander.name, False)
    assert not info.high_availability and info.port == bystander.port and info.status == Status.AVAILABLE
    with pytest.raises(DbosError, match="high.availability"):
        contract_engine.switchover(bystander.name)
