"""Bad inputs are rejected with the field and the rule named; good ones pass."""

from __future__ import annotations

from typing import Any

import pytest

from pulumi_dbos.config import (
    UNKNOWN,
    DatabaseInstanceSpec,
    LinkedInstanceSpec,
    RestoredInstanceSpec,
    input_model,
    validate,
)
from pulumi_dbos.resources.instance import DatabaseInstanceProvider

InstanceArgs = input_model(DatabaseInstanceSpec)
RestoreArgs = input_model(RestoredInstanceSpec)
LinkedArgs = input_model(LinkedInstanceSpec)

GOOD: dict[str, Any] = {"instance_name": "prod_db", "username": "dbos_user", "password": "Sup3r-secret"}

BAD_INSTANCE = [
    ("instance_name", "ab", "3-16"),
    ("instance_name", "a" * 17, "3-16"),
    ("instance_name", "Prod", "[a-z0-9_]"),
    ("instance_name", "prod-db", "[a-z0-9_]"),
    ("instance_name", "prod db", "[a-z0-9_]"),
    ("instance_name", "x;drop", "[a-z0-9_]"),
    ("instance_name", "db\"q", "[a-z0-9_]"),
    ("instance_name", "datenbank_ü", "[a-z0-9_]"),
    ("username", "postgres", "reserved"),
    ("username", "dbosadmin", "reserved"),
    ("username", "dbos", "reserved"),
    ("username", "admin", "reserved"),
    ("username", "pg_tenant", "PostgreSQL reserves"),  # issue 31: a 500 (ReservedName) at provision before
    ("username", "1user", "start with a letter"),
    ("username", "_user", "start with a letter"),
    ("username", "us", "3-16"),
    ("username", "User", "[a-z0-9_]"),
    ("password", "short", "8-128"),
    ("password", "x" * 129, "8-128"),
    ("password", "has@sign1", "must not contain @"),
    ("password", "has/slash1", "must not contain /"),
    ("password", "has\\back1", "must not contain \\"),
    ("password", 'has"quote1', 'must not contain "'),
    ("password", "has'quote1", "must not contain '"),
    ("password", "has space1", "whitespace"),
    ("password", "has\ttab12", "whitespace"),
    ("retention_hours", 0, "1-720"),
    ("retention_hours", 100000, "1-720"),
    ("port", 80, "1024-65535"),
    ("port", 70000, "1024-65535"),
    ("deletion_protection", "maybe", "bool"),
    ("bogus_key", 1, "unknown key"),
]


@pytest.mark.parametrize(("field", "value", "rule"), BAD_INSTANCE)
def test_bad_instance_input_names_field_and_rule(field: str, value: Any, rule: str) -> None:
    problems = validate(InstanceArgs, {**GOOD, field: value})
    assert problems, f"{field}={value!r} was accepted"
    fields = [f for f, _ in problems]
    assert field in fields
    msg = dict(problems)[field]
    assert rule.lower() in msg.lower(), msg
    if field == "password":  # the message never echoes a password
        assert str(value) not in msg


def test_good_instance_input_passes() -> None:
    assert validate(InstanceArgs, GOOD) == []
    assert validate(InstanceArgs, {**GOOD, "password": "a" * 128, "port": 1024, "retention_hours": 720}) == []


def test_unknown_values_are_skipped() -> None:
    assert validate(InstanceArgs, {**GOOD, "password": UNKNOWN, "username": UNKNOWN}) == []


@pytest.mark.parametrize(("value", "rule"), [
    ("2026-11-25T10:00:00", "no UTC offset"),
    ("2026-11-25", "RFC3339"),
    ("yesterday", "RFC3339"),
    ("2026-13-25T10:00:00Z", "valid"),
    ("2026-11-25T10:00:00+2:00", "RFC3339"),
])
def test_bad_restore_time(value: str, rule: str) -> None:
    problems = dict(validate(RestoreArgs, {"instance_name": "r1_db", "source": "prod_db", "restore_time": value}))
    assert rule in problems["restore_time"]


@pytest.mark.parametrize("value", ["2026-11-25T10:00:00Z", "2026-11-25T10:00:00.123456+05:30",
                                   "2026-11-25T10:00:00.5-02:00", "latest"])
def test_good_restore_time(value: str) -> None:
    assert validate(RestoreArgs, {"instance_name": "r1_db", "source": "prod_db", "restore_time": value}) == []


def test_linked_rules() -> None:
    base = {"instance_name": "legacy", "hostname": "127.0.0.1", "username": "dbosadmin", "password": "Passw0rd!"}
    assert validate(LinkedArgs, base) == []  # a linked server's own admin name is allowed
    assert "hostname" in dict(validate(LinkedArgs, {**base, "hostname": "evil host;"}))
    assert "port" in dict(validate(LinkedArgs, {**base, "port": 0}))


def test_check_reports_failures_without_a_property_or_the_value() -> None:
    res = DatabaseInstanceProvider().check({}, {**GOOD, "password": "bad pw", "username": "postgres"})
    # reported without a property (the engine would print the value): the reason names the field
    assert res.failures and all(f.property == "" for f in res.failures)
    fields = {f.reason.split()[0].rstrip(":") for f in res.failures}
    assert {"password", "username"} <= fields
    assert "bad pw" not in " ".join(f.reason for f in res.failures)


def test_relative_data_dir_fails_at_check_and_creates_nothing(tmp_path: Any, monkeypatch: Any) -> None:
    monkeypatch.chdir(tmp_path)
    res = DatabaseInstanceProvider().check({}, {**GOOD, "data_dir": "relative/dir", "run_as": None})
    reasons = [f.reason for f in res.failures]
    assert any(r.startswith("data_dir") and "absolute path" in r for r in reasons), reasons
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- diff decisions
STATE = {**GOOD, "retention_hours": 24, "deletion_protection": False, "port": 54321, "engine": "local",
         "data_dir": "/tmp/x", "run_as": "postgres", "status": "available", "adopt": False}


@pytest.mark.parametrize(("change", "replace"), [
    ({"password": "An0ther-secret"}, False),
    ({"retention_hours": 48}, False),
    ({"deletion_protection": True}, False),
    ({"port": 54400}, False),
    ({"instance_name": "other_db"}, True),
    ({"username": "other_user"}, True),
])
def test_diff_decisions(change: dict[str, Any], replace: bool) -> None:
    news = {**STATE, **change}
    news.pop("status")
    d = DatabaseInstanceProvider().diff("prod_db", STATE, news)
    assert d.changes is True
    assert list(d.replaces or []) == (list(change) if replace else [])
    assert d.delete_before_replace is (replace and "instance_name" not in change)


def test_engine_move_is_refused_at_check_unless_opted_in() -> None:
    news = {**{k: v for k, v in STATE.items() if k != "status"}, "data_dir": "/tmp/y", "run_as": None}
    olds = {**STATE, "run_as": None}
    reasons = [f.reason for f in DatabaseInstanceProvider().check(olds, news).failures]
    assert any(r.startswith("data_dir") and "data loss" in r and "replace_on_engine_change" in r
               for r in reasons), reasons
    opted = DatabaseInstanceProvider().check(olds, {**news, "replace_on_engine_change": True})
    assert not [f for f in opted.failures if "data loss" in f.reason]
    d = DatabaseInstanceProvider().diff("prod_db", olds, {**news, "replace_on_engine_change": True})
    # another data dir: the new instance is made before the old one is deleted
    assert d.replaces == ["data_dir"] and d.delete_before_replace is False


def test_diff_no_change_and_unset_port() -> None:
    news = {k: v for k, v in STATE.items() if k != "status"}
    news["port"] = None  # auto port: the allocated one in state is not a change
    assert DatabaseInstanceProvider().diff("prod_db", STATE, news).changes is False


def test_diff_stopped_instance_gets_an_update() -> None:
    news = {k: v for k, v in STATE.items() if k != "status"}
    d = DatabaseInstanceProvider().diff("prod_db", {**STATE, "status": "stopped"}, news)
    assert d.changes is True and not d.replaces


def test_rename_under_protection_fails_at_check() -> None:
    olds = {**GOOD, "deletion_protection": True}
    res = DatabaseInstanceProvider().check(olds, {**olds, "instance_name": "renamed_db", "data_dir": None})
    msgs = [f.reason for f in res.failures]
    assert any("deletion_protection=True" in m for m in msgs), msgs
