"""Restore drills through ``pulumi-dbos serve``'s extension route; DBOS Cloud has none (``drills`` is None there,
``drill`` refuses with a message naming the extension)."""

from __future__ import annotations

from ...cloudapi import paths
from ...cloudapi.models import DrillOutput, DrillRequest, dump
from ...errors import DbosError
from ..contract import DrillResult
from .answers import parse, parse_list
from .client import LONG_TIMEOUT
from .session import CloudSession

UNAVAILABLE = "restore drills are a pulumi-dbos serve extension: DBOS Cloud's API has none"


def to_result(out: DrillOutput) -> DrillResult:
    return DrillResult(instance=out.PostgresInstanceName, at=out.At, ok=out.Ok, rto_seconds=out.RtoSeconds,
                       rpo_seconds=out.RpoSeconds, restored_to=out.RestoredTo, tables=out.Tables,
                       counts_compared=out.CountsCompared, sql_checked=out.SqlChecked, reason=out.Reason)


def drill(s: CloudSession, name: str, check_sql: str | None, check_database: str | None) -> DrillResult:
    if not s.serve:
        raise DbosError(f"cannot drill {name!r}: {UNAVAILABLE}",
                        hint="drill on the local engine or a pulumi-dbos serve (DBOS Cloud keeps its own backups)")
    s.require(name)
    data = s.call("POST", paths.DB_DRILLS, what=f"running a restore drill of {name!r}", name=name,
                  body=dump(DrillRequest(CheckSql=check_sql, CheckDatabase=check_database)), timeout=LONG_TIMEOUT)
    return to_result(parse(DrillOutput, data, f"the restore drill of {name!r}"))


def drills(s: CloudSession, name: str) -> list[DrillResult] | None:
    if not s.serve:
        return None
    data = s.call("GET", paths.DB_DRILLS, what=f"reading the restore drills of {name!r}", name=name)
    return [to_result(d) for d in parse_list(DrillOutput, data, f"the restore drills of {name!r}")]
