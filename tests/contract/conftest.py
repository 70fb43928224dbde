"""The engine under test: ``contract_engine`` is parametrised by engine name (see engines.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pulumi_dbos.engine.contract import Engine
from tests.contract.engines import ENGINE_FACTORIES, EXACT, HA
from tests.contract.helpers import Instances


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A test marked ``extension("what")`` needs that pulumi-dbos extension: against an engine without them
    (``serve --cloud-exact``) it is skipped, and the skip says why. A test marked ``same_on_ha("why")`` is not
    repeated on ``local-ha`` (every instance highly available: ~10 s more per instance made), where the engine's
    path for an HA instance is the single server's, covered on ``local``: the skip says which path."""
    for item in items:
        callspec = getattr(item, "callspec", None)
        same = item.get_closest_marker("same_on_ha")
        if same is not None and callspec is not None and callspec.params.get("contract_engine") in HA:
            item.add_marker(pytest.mark.skip(reason=f"the same path for HA instances as on `local` ({same.args[0]}); "
                                                    "not repeated on HA instances to keep the suite's time"))
        marker = item.get_closest_marker("extension")
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
