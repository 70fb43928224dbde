"""The engine under test: ``contract_engine`` is parametrised by engine name (see engines.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pulumi_dbos.engine.contract import Engine
from tests.contract.engines import ENGINE_FACTORIES, EXACT
from tests.contract.helpers import Instances


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A test marked ``extension("what")`` needs that pulumi-dbos extension: against an engine without them
    (``serve --cloud-exact``) it is skipped, and the skip says why."""
    for item in items:
        marker = item.get_closest_marker("extension")
        callspec = getattr(item, "callspec", None)
        if marker is None or callspec is None or callspec.params.get("contract_engine") not in EXACT:
            continue
        what = marker.args[0] if marker.args else "an extension"
        item.add_marker(pytest.mark.skip(reason=f"needs pulumi-dbos's extension of DBOS Cloud's API ({what}); "
                                                "DBOS Cloud has none"))


@pytest.fixture(scope="session", params=sorted(ENGINE_FACTORIES))
def contract_engine(request: pytest.FixtureRequest) -> Iterator[Engine]:
    """One engine per run: engine set-up is slow, instances are cheap. Tests use names of their own
    (``instances``), so they stay independent of one another."""
    with ENGINE_FACTORIES[request.param]() as engine:
        yield engine


@pytest.fixture
def instances(contract_engine: Engine) -> Iterator[Instances]:
    """Instances of one test: destroyed after it, also when it fails."""
    made = Instances(contract_engine)
    try:
        yield made
    finally:
        made.cleanup()


@pytest.fixture(scope="module")
def module_instances(contract_engine: Engine) -> Iterator[Instances]:
    """Instances shared by the tests of a module (sources, external servers): destroyed after them."""
    made = Instances(contract_engine)
    try:
        yield made
    finally:
        made.cleanup()
