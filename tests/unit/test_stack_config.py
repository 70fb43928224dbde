"""Stack config validation: every problem at once, each with its config path and rule."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from pulumi_dbos.config import validate_stack_config

GOOD: dict[str, Any] = {
    "instances": {"prod_db": {"username": "dbos_admin", "password": "Sup3r-secret", "retentionHours": 24}},
    "restores": {"prod_r1": {"source": "prod_db", "restoreTime": "2026-11-25T10:00:00Z"}},
    "linked": {"legacy_db": {"hostname": "127.0.0.1", "port": 5432, "username": "dbosadmin",
                             "password": "Legacy-pw1"}},
    "apps": {"shop": {"instance": "prod_db", "appDbName": "shop", "migrate": ["alembic upgrade head"]}},
}


def with_(path: str, value: Any) -> dict[str, Any]:
    cfg = copy.deepcopy(GOOD)
    keys = path.split(".")
    node = cfg
    for k in keys[:-1]:
        node = node.setdefault(k, {})
    node[keys[-1]] = value
    return cfg


BAD = [
    ("instances.prod_db.password", "short", "dbos:instances.prod_db.password", "8-128"),
    ("instances.prod_db.password", "has space 1", "dbos:instances.prod_db.password", "whitespace"),
    ("instances.prod_db.password", "semi;colon@1", "dbos:instances.prod_db.password", "must not contain @"),
    ("instances.prod_db.password", "quote'quote1", "dbos:instances.prod_db.password", "must not contain '"),
    ("instances.prod_db.password", 'dq"dq"dq"1', "dbos:instances.prod_db.password", 'must not contain "'),
    ("instances.prod_db.password", "slash/slash1", "dbos:instances.prod_db.password", "must not contain /"),
    ("instances.prod_db.password", "back\\slash1", "dbos:instances.prod_db.password", "must not contain \\"),
    ("instances.prod_db.password", "p" * 129, "dbos:instances.prod_db.password", "8-128"),
    ("instances.prod_db.username", "postgres", "dbos:instances.prod_db.username", "reserved"),
    ("instances.prod_db.username", "admin", "dbos:instances.prod_db.username", "reserved"),
    ("instances.prod_db.username", "9lives", "dbos:instances.prod_db.username", "start with a letter"),
    ("instances.prod_db.username", "a;drop", "dbos:instances.prod_db.username", "[a-z0-9_]"),
    ("instances.prod_db.username", 'x"y"z', "dbos:instances.prod_db.username", "[a-z0-9_]"),
    ("instances.prod_db.retentionHours", 0, "dbos:instances.prod_db.retentionHours", "1-720"),
    ("instances.prod_db.retentionHours", "lots", "dbos:instances.prod_db.retentionHours", "integer"),
    ("instances.prod_db.port", 22, "dbos:instances.prod_db.port", "1024-65535"),
    ("instances.prod_db.port", 99999, "dbos:instances.prod_db.port", "1024-65535"),
    ("instances.prod_db.deletionProtection", "sometimes", "dbos:instances.prod_db.deletionProtection", "bool"),
    ("instances.prod_db.colour", "blue", "dbos:instances.prod_db.colour", "unknown key"),
    ("instances.Prod-DB", {"username": "abc", "password": "Passw0rd1"}, "dbos:instances.Prod-DB", "[a-z0-9_]"),
    ("instances.x", {"username": "abc", "password": "Passw0rd1"}, "dbos:instances.x", "3-16"),
    ("instances.abcdefghijklmnopq", {"username": "abc", "password": "Passw0rd1"}, "dbos:instances.abcdefghijklmnopq",
     "3-16"),
    ("instances.new_db", {"username": "abc"}, "dbos:instances.new_db.password", "required"),
    ("restores.prod_r1.restoreTime", "2026-11-25T10:00:00", "dbos:restores.prod_r1.restoreTime", "no UTC offset"),
    ("restores.prod_r1.restoreTime", "tuesday", "dbos:restores.prod_r1.restoreTime", "RFC3339"),
    ("restores.prod_r1.source", "nope_db", "dbos:restores.prod_r1.source", "not defined"),
    ("restores.prod_r1.source", "legacy_db", "dbos:restores.prod_r1.source", "linked instance"),
    ("restores.prod_db", {"source": "prod_db", "restoreTime": "latest"}, "dbos:restores.prod_db", "duplicate"),
    ("linked.legacy_db.hostname", "evil host; rm", "dbos:linked.legacy_db.hostname", "DNS name"),
    ("linked.legacy_db.port", 0, "dbos:linked.legacy_db.port", "1024-65535"),
    ("linked.legacy_db.password", "x y z 1 2 3", "dbos:linked.legacy_db.password", "whitespace"),
    ("apps.shop.instance", "missing_db", "dbos:apps.shop.instance", "not defined"),
    ("apps.shop.appDbName", "Shop-DB", "dbos:apps.shop.appDbName", "app_db_name"),
    ("apps.shop.migrate", "alembic upgrade head", "dbos:apps.shop.migrate", "list"),
    ("apps.shop.dropOnDelete", "maybe", "dbos:apps.shop.dropOnDelete", "bool"),
    ("apps.sh", {"instance": "prod_db"}, "dbos:apps.sh", "3-16"),
    ("engine", "docker", "dbos:engine", "not available"),
    ("bogus", 1, "dbos:bogus", "unknown key"),
]


@pytest.mark.parametrize(("path", "value", "where", "rule"), BAD)
def test_bad_config_reports_path_and_rule(path: str, value: Any, where: str, rule: str) -> None:
    cfg, problems = validate_stack_config(with_(path, value))
    assert cfg is None
    hits = [p for p in problems if p.startswith(where)]
    assert hits, problems
    assert any(rule.lower() in p.lower() for p in hits), hits
    if "password" in path and isinstance(value, str):
        assert not any(value in p for p in problems)


def test_good_config_passes() -> None:
    cfg, problems = validate_stack_config(GOOD)
    assert problems == [] and cfg is not None
    assert cfg.instances["prod_db"].retention_hours == 24
    assert cfg.apps["shop"].app_db_name == "shop"


def test_all_problems_reported_at_once() -> None:
    cfg = with_("instances.prod_db.password", "bad pw")
    cfg["instances"]["prod_db"]["colour"] = "blue"
    cfg["apps"]["shop"]["instance"] = "missing_db"
    cfg["restores"]["prod_r1"]["source"] = "legacy_db"
    _, problems = validate_stack_config(cfg)
    paths = {p.split(":", 2)[1].split(" ")[0] for p in problems}
    assert {"instances.prod_db.password", "instances.prod_db.colour", "apps.shop.instance",
            "restores.prod_r1.source"} <= {p.rstrip(":") for p in paths}


# ---------------------------------------------------------------------------- engine settings
def test_dbos_cloud_engine_with_its_settings_is_accepted(tmp_path: Any) -> None:
    ca = tmp_path / "cert.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    raw = {**copy.deepcopy(GOOD), "engine": "dbos-cloud", "cloudDomain": "127.0.0.1:8443",
           "cloudToken": "eyJ.x.y", "cloudCaCert": str(ca)}
    raw.pop("apps")
    cfg, problems = validate_stack_config(raw, tmp_path)
    assert problems == [] and cfg is not None and cfg.cloudDomain == "127.0.0.1:8443"


@pytest.mark.parametrize(("extra", "expected"), [
    ({"engine": "docker"}, "dbos:engine: 'docker' is not available (use one of: local, dbos-cloud)"),
    ({"cloudToken": "t0ken"}, "dbos:cloudToken: only used with `dbos:engine: dbos-cloud`"),
    ({"engine": "dbos-cloud", "dataDir": "/srv/x"}, "dbos:dataDir: not used by the dbos-cloud engine"),
    ({"engine": "dbos-cloud", "cloudCaCert": "nope.pem"}, "dbos:cloudCaCert: nope.pem is not a file"),
    ({"cloudTokn": "x"}, "did you mean 'cloudToken'"),
])
def test_engine_setting_mistakes_are_named(extra: dict[str, Any], expected: str, tmp_path: Any) -> None:
    raw = {**copy.deepcopy(GOOD), **extra}
    raw.pop("apps")
    _cfg, problems = validate_stack_config(raw, tmp_path)
    assert any(expected in p for p in problems), problems
    assert not any("t0ken" in p for p in problems)  # a token never shows in a message
