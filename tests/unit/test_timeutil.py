from __future__ import annotations

from datetime import datetime, timezone

import pytest

from pulumi_dbos.timeutil import parse_rfc3339, to_pg, to_rfc3339


def test_offsets_normalise_to_utc() -> None:
    assert parse_rfc3339("2026-11-25T15:30:00+05:30") == datetime(2026, 11, 25, 10, 0, tzinfo=timezone.utc)
    assert parse_rfc3339("2026-11-25T10:00:00.000001Z").microsecond == 1


def test_pg_form_has_no_z() -> None:
    dt = parse_rfc3339("2026-11-25T19:11:02Z")
    assert to_pg(dt) == "2026-11-25 19:11:02.000000+00"
    assert to_rfc3339(dt) == "2026-11-25T19:11:02.000000Z"


def test_no_offset_rejected() -> None:
    with pytest.raises(ValueError, match="no UTC offset"):
        parse_rfc3339("2026-11-25T19:11:02")
