"""How the suite is split between pytest-xdist workers (``scripts/test.sh``: ``-n N --dist loadgroup
--no-loadscope-reorder``; docs/development.md says why).

A worker runs *units*; xdist builds each fixture once per worker that uses it, so a unit is what shares
an expensive fixture (:func:`unit_of`):

- the tests using one of our session-scoped fixtures (``tenants``; ``contract_engine``, once per engine)
  form one unit, named after the fixture: built once per run;
- else the tests of a file with a module- (or class-) scoped fixture of ours form one unit, the file
  (as ``--dist loadfile``): one serve per module, as when run serially;
- every other test is a unit of its own: nothing is shared, so any worker may take it.

An ``xdist_group`` mark written on a test wins. The workers tell the controller each test's unit
(:func:`publish`), whose scheduler (:func:`make_scheduler`, xdist's load-by-scope) hands whole units
out, the longest first (:func:`longest_first`, by the durations in ``durations.json``), so that no
long unit starts last.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

#: seconds per test id, measured in a run (only their order matters) (``python -m tests.support.parallel JUNIT_XML`` rewrites it
#: from a ``--junitxml`` report); a test not in it (new since, or under 2 s) counts as :data:`UNKNOWN` of its
#: suite's directory, so a new slow e2e test is still handed out early rather than last
DURATIONS = Path(__file__).with_name("durations.json")
UNKNOWN = {"e2e": 120.0, "conformance": 120.0, "integration": 20.0, "security": 20.0, "reliability": 20.0,
           "contract": 10.0}


def _unknown(nodeid: str) -> float:
    parts = nodeid.split("/")
    return UNKNOWN.get(parts[1], 1.0) if len(parts) > 2 else 1.0
#: where the workers write each test's unit for the controller (set by tests/conftest.py)
UNITS_ENV = "PULUMI_DBOS_TEST_UNITS"
_WIDE = ("session", "package", "module", "class")


def _shared_scope(item: pytest.Item) -> tuple[str, str] | None:
    """(scope, group) of the widest-scoped fixture of this repository's tests that ``item`` uses, if any."""
    info = getattr(item, "_fixtureinfo", None)
    best: tuple[int, str] | None = None
    for name in getattr(item, "fixturenames", ()):
        defs = info.name2fixturedefs.get(name) if info is not None else None
        if not defs:
            continue
        fdef = defs[-1]
        if fdef.scope not in _WIDE or not getattr(fdef.func, "__module__", "").startswith("tests."):
            continue
        rank = _WIDE.index(fdef.scope)
        if fdef.scope in ("session", "package"):
            callspec = getattr(item, "callspec", None)
            param = callspec.params.get(name) if callspec is not None else None
            gname = name if param is None else f"{name}:{param}"
        elif fdef.scope == "module":
            gname = item.nodeid.split("::")[0]
        else:
            gname = item.nodeid.rsplit("::", 1)[0]
        if best is None or rank < best[0] or (rank == best[0] and gname < best[1]):
            best = (rank, gname)
    return None if best is None else (_WIDE[best[0]], best[1])


def unit_of(item: pytest.Item) -> str:
    """The unit ``item`` belongs to (see the module's docstring); an ``xdist_group`` mark wins."""
    mark = item.get_closest_marker("xdist_group")
    if mark is not None:
        return str(mark.args[0] if mark.args else mark.kwargs.get("name", "default"))
    shared = _shared_scope(item)
    return item.nodeid if shared is None else shared[1]


def _plain(nodeid: str) -> str:
    """``nodeid`` without the "@group" xdist appends to marked tests (under pytest < 9.2)."""
    return nodeid[: nodeid.rfind("@")] if nodeid.rfind("@") > nodeid.rfind("]") else nodeid


def publish(items: list[pytest.Item]) -> None:
    """In a worker: write every test's unit where the controller's scheduler reads it (:data:`UNITS_ENV`).
    (xdist's own ``loadgroup`` puts the group into the test id, which pytest 9.2 no longer lets it change.)"""
    path = os.environ.get(UNITS_ENV)
    if not path:
        return
    tmp = f"{path}.{os.getpid()}"
    Path(tmp).write_text(json.dumps({item.nodeid: unit_of(item) for item in items}))
    os.replace(tmp, path)  # every worker writes the same: whole files only


def make_scheduler(config: pytest.Config, log: Any) -> Any:
    """The controller's scheduler: xdist's load-by-scope, a scope being a unit (:func:`unit_of`)."""
    from xdist.scheduler import LoadScopeScheduling

    class UnitScheduling(LoadScopeScheduling):  # type: ignore[misc]
        units: dict[str, str] | None = None

        def _split_scope(self, nodeid: str) -> str:
            if self.units is None:
                self.units = json.loads(Path(os.environ[UNITS_ENV]).read_text())
            return self.units.get(_plain(nodeid), nodeid)

    return UnitScheduling(config, log)


def longest_first(items: list[pytest.Item]) -> list[pytest.Item]:
    """``items`` reordered unit by unit, the longest unit first (stable; a unit's tests keep their order)."""
    try:
        seconds: dict[str, float] = json.loads(DURATIONS.read_text())
    except (OSError, ValueError):
        seconds = {}
    units: dict[str, list[pytest.Item]] = {}
    for item in items:
        units.setdefault(unit_of(item), []).append(item)
    weight = {u: sum(seconds.get(i.nodeid) or _unknown(i.nodeid) for i in its) for u, its in units.items()}
    order = sorted(units, key=lambda u: -weight[u])
    return [item for u in order for item in units[u]]


def _from_junit(path: Path) -> dict[str, float]:
    """Test id -> seconds (setup + call + teardown) of a ``--junitxml`` report, tests of 2 s or more."""
    import xml.etree.ElementTree as ET

    out: dict[str, float] = {}
    for case in ET.parse(path).iter("testcase"):
        cls, name = case.get("classname", ""), case.get("name", "")
        if name.rfind("@") > name.rfind("]"):
            name = name[: name.rfind("@")]  # the group xdist appended to the test id
        parts = cls.split(".")
        # classname "tests.e2e.test_app" (or "...test_mod.Class"): the file is the part ending in test_*
        idx = max(i for i, p in enumerate(parts) if p.startswith("test_"))
        nodeid = "/".join(parts[: idx + 1]) + ".py::" + "::".join([*parts[idx + 1:], name])
        out[nodeid] = out.get(nodeid, 0.0) + float(case.get("time") or 0)
    return {k: round(v, 1) for k, v in sorted(out.items()) if v >= 2.0}


if __name__ == "__main__":
    import sys

    DURATIONS.write_text(json.dumps(_from_junit(Path(sys.argv[1])), indent=1, sort_keys=True) + "\n")


def worker_port_range(worker: str, count: int) -> str:
    """``PULUMI_DBOS_PORT_RANGE`` for xdist worker ``gwN`` of ``count``: a disjoint slice of the engine's
    default range. Port claims are per claims directory and a free port is only checked, not held, until
    the server or proxy binds it; two workers picking from one range met at the same port (a proxy's
    "Address already in use", a port released by one test and claimed by another's engine meanwhile)."""
    from pulumi_dbos.engine.local.ports import DEFAULT_PORT_RANGE

    lo, hi = DEFAULT_PORT_RANGE
    n, count = int(worker.removeprefix("gw")), max(count, 1)
    span = (hi - lo + 1) // count
    return f"{lo + n * span}-{lo + (n + 1) * span - 1}"
