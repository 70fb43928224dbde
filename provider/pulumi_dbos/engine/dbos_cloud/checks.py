"""Preflight of the dbos-cloud engine: what ``check()`` reports at preview, from one cached list. Creates nothing.

Everything that can be decided from the organization's instance list is decided here (no call per
resource); ``pulumi-dbos serve`` is asked in addition (its preflight extension) for new instances,
because it also knows what the list does not say (ports taken by other processes of its machine).
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from ...cloudapi import paths
from ...cloudapi.models import PreflightProblem, PreflightRequest, dump
from ...errors import DbosError, ValidationError
from ...timeutil import parse_rfc3339, to_rfc3339, utcnow
from ..contract import InstanceInfo, Kind, Preflight, Problem, adopt_problem
from .answers import parse_list
from .convert import DEFAULT_RETENTION_HOURS

if TYPE_CHECKING:
    from .session import CloudSession

CLOUD_PORT = ("DBOS Cloud chooses an instance's port (the API has no field for it): remove `port`, "
              "or use pulumi-dbos serve or the local engine")
CLOUD_LINKED_USER = "dbosadmin"  # the user DBOS Cloud links every server as
CLOUD_RETENTION = ("DBOS Cloud chooses how long backups are kept (the API has no field for it): remove "
                   "`retention_hours`, or use pulumi-dbos serve or the local engine")


def preflight(session: CloudSession, req: Preflight) -> list[Problem]:
    """From the cached list; for a create on ``pulumi-dbos serve`` also its preflight extension, whose
    problems are added for inputs ours do not already speak of (one problem per input)."""
    serve = session.serve
    problems = from_list(req, session.list(), serve=serve, where=session.describe())
    if req.high_availability:
        problems.append(Problem("high_availability", "DBOS Cloud's API offers no high-availability instances: set "
                                "it to false, or use the local engine"))
    if req.creating and serve:
        body = PreflightRequest(Kind=str(req.kind), Name=req.name, Owner=req.owner, Creating=req.creating,
                                Adopt=req.adopt, Port=req.port, Source=req.source, RestoreTime=req.restore_time)
        data = session.call("POST", paths.DB_PREFLIGHT, what=f"checking instance {req.name!r}", body=dump(body))
        seen = {p.field for p in problems}
        for p in parse_list(PreflightProblem, data or [], "the preflight"):
            if p.Field not in seen:
                seen.add(p.Field)
                problems.append(Problem(p.Field, p.Message))
    return problems


def from_list(req: Preflight, instances: list[InstanceInfo], *, serve: bool, where: str) -> list[Problem]:
    by_name = {i.name: i for i in instances}
    existing = by_name.get(req.name)
    problems: list[Problem] = []
    if req.creating and existing is not None and not req.adopt and (req.owner is None or existing.owner != req.owner):
        whose = f" (managed by {existing.owner.split('#')[0]})" if existing.owner else ""
        problems.append(Problem("instance_name", f"an instance named {req.name!r} already exists in {where}{whose}; "
                                "choose another instance_name, or set adopt=True to take it over"))
    adopting = adopt_problem(req, existing.username if existing else None)
    if adopting is not None:
        problems.append(adopting)
    port = req.port if req.kind is not Kind.LINKED else None
    if not serve:
        problems += cloud_limits(port, req.retention_hours)
        if req.kind is Kind.LINKED and req.username not in (None, CLOUD_LINKED_USER):
            problems.append(Problem("username", f"DBOS Cloud links a server as the user {CLOUD_LINKED_USER!r} only: "
                                    f"create that role on your server and use it, not {req.username!r}"))
    elif port is not None and (req.creating or existing is None or existing.port != port):
        users = [i.name for i in instances if i.port == port and i.name != req.name and not i.is_linked]
        if users:
            problems.append(Problem("port", f"port {port} is already used by instance {users[0]!r}"))
    if req.kind is Kind.RESTORED:
        problems += restore_problems(req, by_name.get(str(req.source)) if req.source else None)
    return problems


def cloud_limits(port: int | None, retention_hours: int | None) -> list[Problem]:
    """What DBOS Cloud itself (no extensions) cannot honour: a chosen port, a retention other than its own."""
    problems = []
    if port is not None:
        problems.append(Problem("port", CLOUD_PORT))
    if retention_hours is not None and retention_hours != DEFAULT_RETENTION_HOURS:
        problems.append(Problem("retention_hours", CLOUD_RETENTION))
    return problems


def refuse_cloud_limits(serve: bool, port: int | None, retention_hours: int | None) -> None:
    """Before a create on DBOS Cloud: a ValidationError naming each field :func:`cloud_limits` speaks of."""
    problems = [] if serve else cloud_limits(port, retention_hours)
    if problems:
        raise ValidationError([(p.field, p.message) for p in problems])


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
        return (f"restore_time {given} is outside the restorable window of {src.name!r} "
                f"[{to_rfc3339(earliest)}, {to_rfc3339(latest)}]")
    return None


def not_supported(what: str, field: str) -> DbosError:
    """An operation DBOS Cloud's API does not offer (only pulumi-dbos serve's extensions do)."""
    return DbosError(f"DBOS Cloud's API cannot {what}",
                     hint=f"leave `{field}` as it is, or use pulumi-dbos serve or the local engine")
