"""RFC3339 timestamps: parse strictly (an explicit offset is required), print in UTC."""

from __future__ import annotations

import re
from datetime import datetime, timezone

_RFC3339 = re.compile(
    r"^(?P<date>\d{4}-\d{2}-\d{2})[Tt ](?P<time>\d{2}:\d{2}:\d{2})(?P<frac>\.\d{1,9})?"
    r"(?P<tz>[Zz]|[+-]\d{2}:\d{2})$"
)


def parse_rfc3339(value: str) -> datetime:
    """Parse ``value``; raise ``ValueError`` with the rule when it is not RFC3339 with an offset."""
    m = _RFC3339.match(value.strip())
    if not m:
        if re.match(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?$", value.strip()):
            raise ValueError(f"{value!r} has no UTC offset; add 'Z' or '+hh:mm' (RFC3339)")
        raise ValueError(f"{value!r} is not an RFC3339 timestamp like 2026-11-25T10:00:00Z")
    frac = (m["frac"] or "")[1:7].ljust(6, "0") if m["frac"] else "000000"
    tz = "+00:00" if m["tz"] in ("Z", "z") else m["tz"]
    try:
        dt = datetime.fromisoformat(f"{m['date']}T{m['time']}.{frac}{tz}")
    except ValueError as exc:
        raise ValueError(f"{value!r} is not a valid date/time: {exc}") from None
    return dt.astimezone(timezone.utc)


def to_rfc3339(dt: datetime) -> str:
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def to_pg(dt: datetime) -> str:
    """The form ``recovery_target_time`` accepts (it rejects ``...Z``)."""
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f+00")


def utcnow() -> datetime:
    return datetime.now(timezone.utc)
