"""The engine under test: ``contract_engine`` is parametrised by engine name (see engines.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pulumi_dbos.engine.contract import Engine
from tests.contract.engines import ENGINE_FACTORIES
from tests.contract.helpers import Instances


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
