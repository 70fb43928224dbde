"""Linked instances: an existing server registered by its coordinates, verified, never owned.

The "external" server is a second provisioned instance of the same engine; the link logs in as its user, or
as ``dbosadmin`` where the engine speaks to DBOS Cloud without extensions (``engines.link_user``).
"""

from __future__ import annotations

import pytest

from pulumi_dbos.engine.contract import Engine, InstanceInfo, Kind, Status
from pulumi_dbos.errors import AlreadyExistsError, DbosError
from tests.contract.engines import link_user
from tests.contract.helpers import Instances, connect, names_of

EXT_PW = "External-pw-4"
pytestmark = pytest.mark.same_on_ha("a link is a catalog row with a host:port, an HA instance's endpoint like any server's")


@pytest.fixture(scope="module")
def external(module_instances: Instances) -> InstanceInfo:
    info = module_instances.provision("ext", password=EXT_PW)
    with connect(info, EXT_PW) as conn:
        conn.execute("CREATE TABLE marker (x int)")
        conn.execute("INSERT INTO marker VALUES (42)")
    return info


@pytest.fixture(scope="module")
def user(contract_engine: Engine, external: InstanceInfo) -> str:
    """The user links to ``external`` log in as (with ``EXT_PW``)."""
    return link_user(contract_engine, external, EXT_PW)


def link(engine: Engine, name: str, ext: InstanceInfo, password: str = EXT_PW) -> InstanceInfo:
    return engine.link(name, ext.hostname, ext.port, link_user(engine, ext, EXT_PW), password)


def external_is_running(engine: Engine, ext: InstanceInfo) -> None:
    got = engine.info(ext.name)
    assert got is not None and got.status == Status.AVAILABLE and got.kind == Kind.PROVISIONED
    with connect(ext, EXT_PW) as conn:
        assert conn.execute("SELECT x FROM marker").fetchall() == [(42,)]


def test_link_points_at_the_real_server(contract_engine: Engine, instances: Instances,
                                        external: InstanceInfo, user: str) -> None:
    name = instances.name("lnk")
    linked = link(contract_engine, name, external)
    assert linked.name == name and linked.kind == Kind.LINKED and linked.is_linked
    assert (linked.hostname, linked.port, linked.username) == (external.hostname, external.port, user)
    assert linked.status == Status.AVAILABLE
    got = contract_engine.info(name)
    assert got is not None and got.kind == Kind.LINKED and (got.hostname, got.port) == (linked.hostname, linked.port)
    assert name in names_of(contract_engine.list())
    # its coordinates reach the external server's data
    with connect(linked, EXT_PW) as conn:
        assert conn.execute("SELECT x FROM marker").fetchall() == [(42,)]
    assert contract_engine.check_credentials(name, user, EXT_PW) is True
    assert contract_engine.check_credentials(name, user, "Wrong-pw-123") is False
    # nothing to start: a no-op that leaves it linked
    again = contract_engine.ensure_running(name)
    assert again.kind == Kind.LINKED and (again.hostname, again.port) == (external.hostname, external.port)


def test_link_with_a_wrong_password_registers_nothing(contract_engine: Engine, instances: Instances,
                                                      external: InstanceInfo) -> None:
    name = instances.name("lnk_bad")
    bad = "Wrong-pw-5678"
    with pytest.raises(DbosError) as err:
        link(contract_engine, name, external, bad)
    assert bad not in str(err.value)
    assert contract_engine.info(name) is None
    assert name not in names_of(contract_engine.list())
    external_is_running(contract_engine, external)


def test_link_to_nothing_registers_nothing(contract_engine: Engine, instances: Instances,
                                           external: InstanceInfo, user: str) -> None:
    name = instances.name("lnk_no")
    with pytest.raises(DbosError):
        contract_engine.link(name, external.hostname, 1, user, EXT_PW)  # nothing listens on port 1
    assert contract_engine.info(name) is None


def test_link_under_a_taken_name(contract_engine: Engine, external: InstanceInfo) -> None:
    with pytest.raises(AlreadyExistsError):
        link(contract_engine, external.name, external)
    got = contract_engine.info(external.name)
    assert got is not None and got.port == external.port
    external_is_running(contract_engine, external)


def test_unlink_leaves_the_server_running(contract_engine: Engine, instances: Instances,
                                          external: InstanceInfo) -> None:
    name = instances.name("lnk_u")
    link(contract_engine, name, external)
    contract_engine.unlink(name)
    assert contract_engine.info(name) is None
    assert name not in names_of(contract_engine.list())
    external_is_running(contract_engine, external)


def test_destroy_of_a_linked_instance_only_unlinks(contract_engine: Engine, instances: Instances,
                                                   external: InstanceInfo) -> None:
    name = instances.name("lnk_d")
    link(contract_engine, name, external)
    contract_engine.destroy(name)
    assert contract_engine.info(name) is None
    external_is_running(contract_engine, external)
