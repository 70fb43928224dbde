"""Preflight of the dbos-cloud engine: what ``check()`` reports at preview, from one cached list. Creates nothing.

Everything that can be decided from the organization's instance list is decided here (no call per
resource); ``pulumi-dbos serve`` is asked in addition (its preflight extension) for new instances,
because it also knows what the list does not say (ports taken by other processes of its machine).
"""

from __future__ import annotations

from datetime import datetime

from ...errors import DbosError
from ...timeutil import parse_rfc3339, to_rfc3339, utcnow
from ..contract import InstanceInfo, Kind, Preflight, Problem

CLOUD_PORT = ("DBOS Cloud chooses an instance's port (the API has no field for it): remove `port`, "
              "or use pulumi-dbos serve or the local engine")
CLOUD_RETENTION = ("DBOS Cloud chooses how long backups are kept (the API has no field for it): remove "
                   "`retention_hours`, or use pulumi-dbos serve or the local engine")


def preflight(req: Preflight, instances: list[InstanceInfo], *, serve: bool, where: str) -> list[Problem]:
    by_name = {i.name: i for i in instances}
    existing = by_name.get(req.name)
    problems: list[Problem] = []
    if req.creating and existing is not None and not req.adopt and (req.owner is None or existing.owner != req.owner):
        whose = f" (managed by {existing.owner.split('#')[0]})" if existing.owner else ""
        problems.append(Problem("instance_name", f"an instance named {req.name!r} already exists in {where}{whose}; "
                                "choose another instance_name, or set adopt=True to take it over"))
    if req.port is not None and req.kind is not Kind.LINKED:
        if not serve:
            problems.append(Problem("port", CLOUD_PORT))
        elif req.creating or existing is None or existing.port != req.port:
            users = [i.name for i in instances if i.port == req.port and i.name != req.name and not i.is_linked]
            if users:
                problems.append(Problem("port", f"port {req.port} is already used by instance {users[0]!r}"))
    if req.kind is Kind.RESTORED:
        problems += restore_problems(req, by_name.get(str(req.source)) if req.source else None)
    return problems


def restore_problems(req: Preflight, src: InstanceInfo | None) -> list[Problem]:
    problems: list[Problem] = []
    target = None
    if req.restore_time not in (None, "latest"):
        try:
            target = parse_rfc3339(str(req.restore_time))
        except ValueError as exc:
            return [Problem("restore_time", str(exc))]
        if target > utcnow():
            problems.append(Problem("restore_time", f"restore_time {req.restore_time} is in the future "
                                    f"(now is {to_rfc3339(utcnow())})"))
    if src is None:
        return problems  # created in the same update: checked when the restore runs
    if src.is_linked:
        return problems + [Problem("source", f"{src.name!r} is a linked instance: point-in-time restore needs an "
                                   "instance whose backups DBOS Cloud keeps")]
    if target is None or problems:
        return problems
    why = window_problem(src, target, str(req.restore_time))
    return [Problem("restore_time", why)] if why else []


def window_problem(src: InstanceInfo, target: datetime, given: str) -> str | None:
    """Why ``target`` is outside ``src``'s restorable window, when the server reports the window (serve)."""
    if src.earliest_restorable_time is None or src.latest_restorable_time is None:
        return None  # DBOS Cloud does not report it: the restore itself will say
    try:
        earliest = parse_rfc3339(src.earliest_restorable_time)
        latest = parse_rfc3339(src.latest_restorable_time)
    except ValueError:
        return None
    if src.status == "available":
        latest = max(latest, utcnow())  # a running source's window reaches now
    if not earliest <= target <= latest:
        return (f"restore_time {given} is outside {src.name!r}'s restorable window "
                f"[{to_rfc3339(earliest)}, {to_rfc3339(latest)}]")
    return None


def not_supported(what: str, field: str) -> DbosError:
    """An operation DBOS Cloud's API does not offer (only pulumi-dbos serve's extensions do)."""
    return DbosError(f"DBOS Cloud's API cannot {what}",
                     hint=f"leave `{field}` as it is, or use pulumi-dbos serve or the local engine")
