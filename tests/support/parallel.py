"""How the suite is split between pytest-xdist workers (``scripts/test.sh``: ``-n N --dist loadgroup
--no-loadscope-reorder``; docs/development.md says why).

A worker runs *units*; xdist builds each fixture once per worker that uses it, so a unit is what shares
an expensive fixture (:func:`group`):

- the tests using one of our session-scoped fixtures (``tenants``; ``contract_engine``, once per engine)
  form one unit, named after the fixture: built once per run;
- else the tests of a file with a module- (or class-) scoped fixture of ours form one unit, the file
  (``--dist loadfile``): one serve per module, as when run serially;
- every other test is a unit of its own: nothing is shared, so any worker may run it.

An ``xdist_group`` mark written on a test wins. Units are handed out longest first (:func:`longest_first`,
by the serial durations in ``durations.json``), so that no long unit starts last.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

#: seconds per test id, measured in a serial run (``python -m tests.support.parallel JUNIT_XML`` rewrites it
#: from a ``--junitxml`` report); a test not in it counts as :data:`UNKNOWN`
DURATIONS = Path(__file__).with_name("durations.json")
UNKNOWN = 1.0
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


def group(items: list[pytest.Item]) -> None:
    """Mark each item with the ``xdist_group`` of its unit (see the module's docstring)."""
    for item in items:
        if item.get_closest_marker("xdist_group") is not None:
            continue
        shared = _shared_scope(item)
        if shared is not None:
            # xdist appends "@<group>" to the test id and reads it back after the last "@" behind any "]"
            item.add_marker(pytest.mark.xdist_group(shared[1].replace("@", "_").replace("]", ")")))


def _unit(item: pytest.Item) -> str:
    mark = item.get_closest_marker("xdist_group")
    if mark is None:
        return item.nodeid
    return str(mark.args[0] if mark.args else mark.kwargs.get("name", "default"))


def longest_first(items: list[pytest.Item]) -> list[pytest.Item]:
    """``items`` reordered unit by unit, the longest unit first (stable; a unit's tests keep their order)."""
    try:
        seconds: dict[str, float] = json.loads(DURATIONS.read_text())
    except (OSError, ValueError):
        seconds = {}
    units: dict[str, list[pytest.Item]] = {}
    for item in items:
        units.setdefault(_unit(item), []).append(item)
    weight = {u: sum(seconds.get(i.nodeid, UNKNOWN) for i in its) for u, its in units.items()}
    order = sorted(units, key=lambda u: -weight[u])
    return [item for u in order for item in units[u]]


def _from_junit(path: Path) -> dict[str, float]:
    """Test id -> seconds (setup + call + teardown) of a ``--junitxml`` report, tests of 2 s or more."""
    import xml.etree.ElementTree as ET

    out: dict[str, float] = {}
    for case in ET.parse(path).iter("testcase"):
        cls, name = case.get("classname", ""), case.get("name", "")
        parts = cls.split(".")
        # classname "tests.e2e.test_app" (or "...test_mod.Class"): the file is the part ending in test_*
        idx = max(i for i, p in enumerate(parts) if p.startswith("test_"))
        nodeid = "/".join(parts[: idx + 1]) + ".py::" + "::".join([*parts[idx + 1:], name])
        out[nodeid] = out.get(nodeid, 0.0) + float(case.get("time") or 0)
    return {k: round(v, 1) for k, v in sorted(out.items()) if v >= 2.0}


if __name__ == "__main__":
    import sys

    DURATIONS.write_text(json.dumps(_from_junit(Path(sys.argv[1])), indent=1, sort_keys=True) + "\n")
