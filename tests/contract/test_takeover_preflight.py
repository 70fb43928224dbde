"""Idempotent re-runs (takeover of what a run already made) and preflight checks of new instances."""

from __future__ import annotations

import pytest

from pulumi_dbos.engine.contract import Engine, InstanceInfo, Kind, Preflight, Problem, Status
from tests.contract.helpers import OWNER_A, OWNER_B, PW, Instances, authenticates, connect, fields, rows


# ---------------------------------------------------------------- takeover
@pytest.mark.extension("Owner on provision, POST .../stop")
def test_takeover_by_the_owner_returns_it_working(contract_engine: Engine, instances: Instances) -> None:
    made = instances.provision("tko", owner=OWNER_A)
    with connect(made, PW) as conn:
        conn.execute("CREATE TABLE t (x int)")
        conn.execute("INSERT INTO t VALUES (1)")
    contract_engine.stop(made.name)  # e.g. the machine rebooted before the re-run
    taken = contract_engine.takeover(made.name, OWNER_A)
    assert taken is not None
    assert (taken.name, taken.port, taken.kind, taken.status) == (made.name, made.port, Kind.PROVISIONED,
                                                                  Status.AVAILABLE)
    assert rows(taken, PW) == [1]


@pytest.mark.same_on_ha("who may take an instance over is the catalog's owner; an HA instance's own path (its data in its members, its members started) is test_takeover_by_the_owner_returns_it_working's")
@pytest.mark.extension("Owner on provision and UserDBInstance.Owner")
def test_takeover_by_another_owner_returns_none(contract_engine: Engine, instances: Instances) -> None:
    made = instances.provision("tkx", owner=OWNER_A)
    assert contract_engine.takeover(made.name, OWNER_B) is None
    assert contract_engine.takeover(made.name, None) is None
    got = contract_engine.info(made.name)
    assert got is not None and got.owner == OWNER_A and got.status == Status.AVAILABLE
    assert authenticates(made, PW)
    assert contract_engine.takeover(made.name, OWNER_A) is not None  # still the owner's


@pytest.mark.same_on_ha("who may take an instance over is the catalog's owner; an HA instance's own path (its data in its members, its members started) is test_takeover_by_the_owner_returns_it_working's")
@pytest.mark.extension("Owner on provision, PATCH databases/userdb/{name} with Owner")
def test_takeover_with_adopt_returns_it(contract_engine: Engine, instances: Instances) -> None:
    made = instances.provision("tka", owner=OWNER_A)
    taken = contract_engine.takeover(made.name, OWNER_B, adopt=True)
    assert taken is not None
    assert (taken.name, taken.port, taken.status) == (made.name, made.port, Status.AVAILABLE)
    assert authenticates(taken, PW)
    # it now belongs to the adopter
    got = contract_engine.info(made.name)
    assert got is not None and got.owner == OWNER_B
    assert contract_engine.takeover(made.name, OWNER_A) is None


@pytest.mark.same_on_ha("who may take an instance over is the catalog's owner; an HA instance's own path (its data in its members, its members started) is test_takeover_by_the_owner_returns_it_working's")
def test_takeover_without_an_owner_needs_adopt(contract_engine: Engine, instances: Instances) -> None:
    """An instance that records no owner (DBOS Cloud records none; here one made without): nobody's to take
    over by name, so a re-run of an interrupted create takes it with ``adopt`` only."""
    made = instances.provision("tkn")
    assert contract_engine.takeover(made.name, OWNER_A) is None
    taken = contract_engine.takeover(made.name, OWNER_A, adopt=True)
    assert taken is not None and (taken.name, taken.port, taken.status) == (made.name, made.port, Status.AVAILABLE)
    assert authenticates(taken, PW)


def test_takeover_of_nothing(contract_engine: Engine) -> None:
    assert contract_engine.takeover("not_there", OWNER_A) is None
    assert contract_engine.takeover("not_there", OWNER_A, adopt=True) is None
    assert contract_engine.info("not_there") is None


# ---------------------------------------------------------------- preflight
@pytest.fixture(scope="module")
def owned(module_instances: Instances) -> InstanceInfo:
    """An instance of OWNER_A that the preflight tests only look at."""
    return module_instances.provision("pf_own", owner=OWNER_A)


def new_instance(name: str, owner: str | None = OWNER_B, *, creating: bool = True, adopt: bool = False,
                 port: int | None = None) -> Preflight:
    return Preflight(kind=Kind.PROVISIONED, name=name, owner=owner, creating=creating, adopt=adopt, port=port)


def test_preflight_of_a_free_name(contract_engine: Engine, instances: Instances) -> None:
    name = instances.name("pf_free")
    assert contract_engine.preflight(new_instance(name)) == []
    assert contract_engine.info(name) is None  # a preflight creates nothing


@pytest.mark.same_on_ha("preflight reads the catalog: names, owners, ports")
def test_preflight_of_a_name_taken_by_another_owner(contract_engine: Engine, owned: InstanceInfo) -> None:
    made = owned
    problems = contract_engine.preflight(new_instance(made.name, OWNER_B))
    assert len(problems) == 1 and isinstance(problems[0], Problem), problems
    assert problems[0].field == "instance_name"
    assert "adopt" in problems[0].message.lower()
    assert PW not in problems[0].message


@pytest.mark.same_on_ha("preflight reads the catalog: names, owners, ports")
@pytest.mark.extension("UserDBInstance.Owner: whose instance it is")
def test_preflight_of_a_name_that_is_no_conflict(contract_engine: Engine, owned: InstanceInfo) -> None:
    made = owned
    # the same owner re-running an interrupted create (takeover will pick it up)
    assert contract_engine.preflight(new_instance(made.name, OWNER_A)) == []
    # adopting it on purpose
    assert contract_engine.preflight(new_instance(made.name, OWNER_B, adopt=True)) == []
    # an update of the instance the resource already manages: its own name and port are no conflict
    assert contract_engine.preflight(new_instance(made.name, OWNER_A, creating=False, port=made.port)) == []


@pytest.mark.same_on_ha("preflight reads the catalog: names, owners, ports")
def test_preflight_of_a_port_another_instance_uses(contract_engine: Engine, instances: Instances,
                                                   owned: InstanceInfo) -> None:
    problems = contract_engine.preflight(new_instance(instances.name("pf_pn"), port=owned.port))
    assert fields(problems) == {"port"}, problems
