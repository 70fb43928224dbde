"""Preflight checks of the local engine: what ``check()`` reports at preview. Creates nothing."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ...errors import DbosError
from ...timeutil import parse_rfc3339, to_rfc3339, utcnow
from ..contract import Kind, Preflight, Problem, adopt_problem
from . import ports
from .catalog import Catalog
from .paths import check_data_dir

if TYPE_CHECKING:
    from . import LocalEngine


def preflight(eng: LocalEngine, req: Preflight) -> list[Problem]:
    """Problems ``req`` would meet on ``eng`` (data dir, taken name, port, restore source and window). Creates nothing."""
    problems = [Problem("data_dir", p) for p in check_data_dir(eng.data_dir, eng.run_as.user)]
    if problems:
        return problems
    if req.kind is Kind.RESTORED and req.restore_time not in (None, "latest"):
        target = parse_rfc3339(req.restore_time)
        if target > utcnow():
            problems.append(Problem("restore_time", f"restore_time {req.restore_time} is in the future "
                                    f"(now is {to_rfc3339(utcnow())})"))
    try:
        catalog = eng.existing_catalog()
    except DbosError as exc:
        return problems + [Problem("data_dir", exc.message)]
    existing = catalog.get(req.name) if catalog else None
    if req.creating and existing is not None and not req.adopt and (req.owner is None
                                                                      or existing.owner != req.owner):
        whose = f" (managed by {existing.owner.split('#')[0]})" if existing.owner else ""
        problems.append(Problem(
            "instance_name", f"an instance named {req.name!r} already exists in {eng.describe()}{whose}; "
            "choose another instance_name, or set adopt=True to take it over"))
    adopting = adopt_problem(req, existing.username if existing else None)
    if adopting is not None:
        problems.append(adopting)
    if req.port is not None and req.kind is not Kind.LINKED and (req.creating or existing is None
                                                                 or existing.port != req.port):
        why = ports.problem(catalog, req.port, req.name)
        if why:
            problems.append(Problem("port", why))
    if req.kind is Kind.RESTORED and req.source and catalog is not None:
        problems += _restore_problems(eng, catalog, req)
    if req.high_availability:
        from ..ha.cluster import require_hosts
        problems += [Problem("high_availability", p) for p in require_hosts(eng)]
    if req.creating and req.kind is Kind.PROVISIONED and existing is None and catalog is not None:
        lost = eng._lost_record(req.name)
        if lost is not None:  # a lost instance is never re-created empty over its own backups
            err = eng._lost_error(lost)
            problems.append(Problem("instance_name", f"{err.message}; {err.hint}"))
    return problems


def _restore_problems(eng: LocalEngine, catalog: Catalog, req: Preflight) -> list[Problem]:
    src = catalog.get(str(req.source))
    if src is None or (not src.linked and not eng.has_data(src.name)):
        # lost, destroyed (its backups kept), or created in the same update (checked when the restore runs)
        if req.restore_time in (None, "latest") or not eng.repo.exists():
            return []
        try:
            earliest, latest = eng.restore_window(str(req.source))
        except DbosError:
            return []
        target = parse_rfc3339(str(req.restore_time))
        if not earliest <= target <= latest:
            return [Problem("restore_time", f"restore_time {req.restore_time} is outside what the backup "
                            f"repository can restore of {req.source!r} [{to_rfc3339(earliest)}, {to_rfc3339(latest)}]")]
        return []
    if src.linked:
        return [Problem("source", f"{src.name!r} is a linked instance: point-in-time restore needs an "
                        "instance whose WAL this engine archives")]
    if req.restore_time in (None, "latest"):
        return []
    try:
        earliest, latest = eng.restore_window(src.name)
    except DbosError as exc:
        return [Problem("source", exc.message)]
    target = parse_rfc3339(str(req.restore_time))
    if not earliest <= target <= latest:
        return [Problem("restore_time", f"restore_time {req.restore_time} is outside the restorable "
                        f"window of {src.name!r} [{to_rfc3339(earliest)}, {to_rfc3339(latest)}]")]
    return []
