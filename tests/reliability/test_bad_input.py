"""A table of bad inputs across all resources: each fails at preview, naming the field and the
rule, with the state unchanged and nothing new on disk."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pulumi import automation as auto

from pulumi_dbos.engine import LocalEngine
from tests.conftest import _short_tmpdir, cleanup_data_dir
from tests.e2e.conftest import PROGRAM_HEADER, Project

PW = "Valid-passw0rd"
PROGRAM = PROGRAM_HEADER + """
src = dbos.DatabaseInstance("src", instance_name="rel_src", username="app_user", password=cfg.require_secret("pw"))
lnk = dbos.LinkedInstance("lnk", instance_name="rel_lnk", hostname="127.0.0.1", port=int(cfg.require("ext_port")),
                          username="ext_user", password=cfg.require_secret("pw"))
bad = spec.get("bad")
if bad:
    kind, args = bad["kind"], dict(bad["args"])
    if "password" in args:
        args["password"] = pulumi.Output.secret(args["password"])
    if kind == "instance":
        dbos.DatabaseInstance("bad", **{"instance_name": "rel_bad", "username": "app_user", "password": "Valid-pw-12",
                                        **args})
    elif kind == "restore":
        dbos.RestoredInstance("bad", **{"instance_name": "rel_bad", "source": "rel_src", **args})
    elif kind == "linked":
        dbos.LinkedInstance("bad", **{"instance_name": "rel_bad", "hostname": "127.0.0.1", "username": "ext_user",
                                      "password": "Valid-pw-12", **args})
    elif kind == "app":
        dbos.AppDatabase("bad", instance=src, **{"app_name": "rel_app", **args})
"""


@pytest.fixture(scope="module")
def world() -> Iterator[dict[str, Any]]:
    root = _short_tmpdir("pb")
    ext = LocalEngine(root / "ext")
    info = ext.provision("external", "ext_user", PW)
    p = Project(root, PROGRAM, name=root.name)
    p.stack.set_config("pw", auto.ConfigValue(PW, secret=True))
    p.stack.set_config("ext_port", auto.ConfigValue(str(info.port)))
    p.set_spec({})
    p.up()
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    bad_cfg = root / "bad-dbos-config.yaml"
    bad_cfg.write_text("database:\n  migrate: {not: a list}\n")
    try:
        yield {"project": p, "src_port": LocalEngine(p.data_dir).info("rel_src").port,  # type: ignore[union-attr]
               "busy_port": busy.getsockname()[1], "bad_cfg": str(bad_cfg), "root": root}
    finally:
        busy.close()
        cleanup_data_dir(root / "d")
        cleanup_data_dir(root / "ext")
        import shutil

        shutil.rmtree(root, ignore_errors=True)


CASES: list[tuple[str, dict[str, Any], str, str]] = [
    # DatabaseInstance: names
    ("instance", {"instance_name": "ab"}, "instance_name", "3-16"),
    ("instance", {"instance_name": "a" * 17}, "instance_name", "3-16"),
    ("instance", {"instance_name": "BadName"}, "instance_name", "[a-z0-9_]"),
    ("instance", {"instance_name": "bad-name"}, "instance_name", "[a-z0-9_]"),
    ("instance", {"instance_name": "bad;drop"}, "instance_name", "[a-z0-9_]"),
    ("instance", {"instance_name": "bad'quote"}, "instance_name", "[a-z0-9_]"),
    ("instance", {"instance_name": 'bad"dq'}, "instance_name", "[a-z0-9_]"),
    ("instance", {"instance_name": "ünïcode_db"}, "instance_name", "[a-z0-9_]"),
    ("instance", {"instance_name": "../../etc"}, "instance_name", "[a-z0-9_]"),
    ("instance", {"instance_name": "rel_src", "owner": None}, "instance_name", "already exists"),
    # usernames
    ("instance", {"username": "postgres"}, "username", "reserved"),
    ("instance", {"username": "dbos"}, "username", "reserved"),
    ("instance", {"username": "dbosadmin"}, "username", "reserved"),
    ("instance", {"username": "admin"}, "username", "reserved"),
    ("instance", {"username": "1user"}, "username", "start with a letter"),
    ("instance", {"username": "us"}, "username", "3-16"),
    ("instance", {"username": "user;drop"}, "username", "[a-z0-9_]"),
    ("instance", {"username": "us'er"}, "username", "[a-z0-9_]"),
    # passwords: length and each forbidden character
    ("instance", {"password": "short"}, "password", "8-128"),
    ("instance", {"password": "x" * 129}, "password", "8-128"),
    ("instance", {"password": "has@at-sign"}, "password", "must not contain @"),
    ("instance", {"password": "has/slash1"}, "password", "must not contain /"),
    ("instance", {"password": "has\\backslash"}, "password", "must not contain \\"),
    ("instance", {"password": 'has"dquote1'}, "password", 'must not contain "'),
    ("instance", {"password": "has'squote1"}, "password", "must not contain '"),
    ("instance", {"password": "has space 1"}, "password", "whitespace"),
    ("instance", {"password": "has\ttab123"}, "password", "whitespace"),
    ("instance", {"password": "has\nnewline"}, "password", "whitespace"),
    # numbers and places
    ("instance", {"retention_hours": 0}, "retention_hours", "1-720"),
    ("instance", {"retention_hours": 721}, "retention_hours", "1-720"),
    ("instance", {"port": 80}, "port", "1024-65535"),
    ("instance", {"port": 70000}, "port", "1024-65535"),
    ("instance", {"port": "SRC_PORT"}, "port", "already used by instance"),
    ("instance", {"port": "BUSY_PORT"}, "port", "in use by another process"),
    ("instance", {"data_dir": "relative/dir"}, "data_dir", "absolute"),
    ("instance", {"data_dir": "/tmp/with space"}, "data_dir", "may contain only"),
    # RestoredInstance
    ("restore", {"restore_time": "yesterday"}, "restore_time", "RFC3339"),
    ("restore", {"restore_time": "2026-11-25T10:00:00"}, "restore_time", "no UTC offset"),
    ("restore", {"restore_time": "2999-01-01T00:00:00Z"}, "restore_time", "in the future"),
    ("restore", {"restore_time": "2001-01-01T00:00:00+05:30"}, "restore_time", "outside"),
    ("restore", {"restore_time": "latest", "source": "rel_lnk"}, "source", "linked instance"),
    ("restore", {"restore_time": "latest", "instance_name": "rel_lnk"}, "instance_name", "already exists"),
    ("restore", {"restore_time": "latest", "instance_name": "R1"}, "instance_name", "3-16"),
    ("restore", {"restore_time": "latest", "password": "short"}, "password", "8-128"),
    ("restore", {"restore_time": "latest", "retention_hours": 0}, "retention_hours", "1-720"),
    ("restore", {"restore_time": "latest", "port": "BUSY_PORT"}, "port", "in use by another process"),
    # LinkedInstance
    ("linked", {"hostname": "bad host;rm"}, "hostname", "DNS name"),
    ("linked", {"port": 0}, "port", "1024-65535"),
    ("linked", {"password": "sp ace pw1"}, "password", "whitespace"),
    ("linked", {"username": "bad user"}, "username", "[a-z0-9_]"),
    ("linked", {"instance_name": "x'"}, "instance_name", "[a-z0-9_]"),
    # AppDatabase
    ("app", {"app_name": "App!"}, "app_name", "[a-z0-9_]"),
    ("app", {"app_db_name": "Bad-Name"}, "app_db_name", "app_db_name"),
    ("app", {"app_db_name": "x;drop database y"}, "app_db_name", "app_db_name"),
    ("app", {"dbos_config": "BAD_CFG"}, "dbos_config", "database.migrate"),
    ("app", {"working_dir": "/nonexistent/dir"}, "working_dir", "does not exist"),
    ("app", {"migrate": "alembic upgrade head"}, "migrate", "list of command strings"),
    ("app", {"rollback": [1, 2]}, "rollback", "list of command strings"),
]


@pytest.mark.parametrize(("kind", "args", "field", "rule"), CASES,
                         ids=[f"{k}-{f}-{i}" for i, (k, _, f, _r) in enumerate(CASES)])
def test_bad_input_fails_at_preview(world: dict[str, Any], kind: str, args: dict[str, Any], field: str,
                                    rule: str) -> None:
    p: Project = world["project"]
    args = {k: (world["src_port"] if v == "SRC_PORT" else world["busy_port"] if v == "BUSY_PORT"
                else world["bad_cfg"] if v == "BAD_CFG" else v) for k, v in args.items() if k != "owner"}
    before = json.dumps(p.resources(), sort_keys=True)
    on_disk = sorted(x.name for x in (p.data_dir / "instances").iterdir())
    p.set_spec({"bad": {"kind": kind, "args": args}})
    try:
        with pytest.raises(auto.CommandError) as err:
            p.preview()
    finally:
        p.set_spec({})
    text = str(err.value)
    assert field in text, text[-2000:]
    assert rule.lower() in text.lower(), text[-2000:]
    if field == "password":
        assert args["password"] not in text
    assert json.dumps(p.resources(), sort_keys=True) == before
    assert sorted(x.name for x in (p.data_dir / "instances").iterdir()) == on_disk
    assert not Path("/tmp/with space").exists()


def test_every_input_rule_has_a_case() -> None:
    """Each input that has a rule (every Spec input with a validator) is exercised by some case."""
    from pulumi_dbos.config import SPECS

    kinds = {"DatabaseInstanceSpec": "instance", "RestoredInstanceSpec": "restore",
             "LinkedInstanceSpec": "linked", "AppDatabaseSpec": "app", "AppSpec": "deployed"}
    covered = {(k, f) for k, _a, f, _r in CASES}
    missing = [(kinds[s.__name__], name) for s in SPECS if kinds[s.__name__] != "deployed"  # tests/e2e/test_app.py
               for name, info in s.model_fields.items()
               if info.metadata and any(callable(getattr(m, "func", None)) for m in info.metadata)
               and name in s.inputs() and (kinds[s.__name__], name) not in covered]
    assert not missing, f"input rules without a bad-input case: {missing}"
