"""The simulated hosts' subnets: two data dirs whose hashes meet must not share one (their namespaces' names
would meet too, and each engine would wire its members into the other's hosts)."""

from __future__ import annotations

import json
import shutil

import pytest

from pulumi_dbos.engine.ha import hosts
from pulumi_dbos.engine.ha.hosts import Fabric
from pulumi_dbos.errors import EngineError
from tests.conftest import _short_tmpdir
from tests.ha.conftest import _skip_reason

pytestmark = pytest.mark.ha


def test_a_second_data_dir_on_a_taken_subnet_is_refused_with_the_first_ones_name() -> None:
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    root = _short_tmpdir("pn")
    first, second = Fabric(root / "a", count=1), Fabric(root / "b", count=1)
    second.prefix, second.subnet = first.prefix, first.subnet  # what a meeting of the two hashes gives
    try:
        first.ensure()
        with pytest.raises(EngineError, match=str((root / "a").resolve())):
            second.ensure()
        assert not second.present() and not second.is_up(second.host(1))  # refused before making anything
        second.teardown()  # a refused fabric's teardown leaves the first one's hosts and blackhole route alone
        assert first.present() and first.is_up(first.host(1))
        blackhole = first._ip("route", "show", "type", "blackhole", first.subnet).stdout
        assert blackhole.strip(), "the first fabric's blackhole route went with the refused one's teardown"
        first.teardown()
        # a claim whose fabric is gone (its bridge does not exist) is stale: taken over
        claim = hosts.CLAIMS / first.subnet.replace("/", "_")
        claim.write_text(json.dumps({"data_dir": str(root / "gone"), "bridge": "dbosgone00"}))
        second.ensure()
        assert second.present() and json.loads(claim.read_text())["data_dir"] == str((root / "b").resolve())
        second.teardown()
        assert not claim.exists()
    finally:
        first.teardown()
        second.teardown()
        shutil.rmtree(root, ignore_errors=True)
