"""check() keeps inputs to what the program gave (issue 19): no outputs copied in, states that recorded them
migrated without asking the engine, a bound app's instance values kept while its instance is updated in place,
a restore's password kept once its source left the program. Every case here takes check()'s no-engine path
(the data dir does not exist: asking the engine would fail)."""

from __future__ import annotations

from typing import Any

import pytest

from pulumi_dbos.appsource import pack
from pulumi_dbos.config.fields import UNKNOWN
from pulumi_dbos.resources.app import AppProvider
from pulumi_dbos.resources.instance import DatabaseInstanceProvider
from pulumi_dbos.resources.restored import RestoredInstanceProvider
from tests.conftest import ROOT

pytestmark = pytest.mark.unit

PW = "Inputs-test-pw1"
ENGINE = {"engine": "local", "data_dir": "/nonexistent/pulumi-dbos", "run_as": "postgres", "cloud_domain": None,
          "replace_on_engine_change": False}


def instance(**kw: Any) -> dict[str, Any]:
    return {**ENGINE, "owner": "p/s/a#1", "instance_name": "inp_db", "username": "inp_user", "password": PW,
            "retention_hours": 24, "deletion_protection": False, "adopt": False, **kw}


def test_a_state_that_recorded_the_allocated_host_and_port_as_inputs_is_unchanged_and_cleaned() -> None:
    recorded = instance(hostname="127.0.0.1", port=54320)  # what check() recorded before the fix
    result = DatabaseInstanceProvider().check(recorded, instance())
    assert not result.failures
    assert "hostname" not in result.inputs and result.inputs.get("port") is None


def test_an_input_added_since_the_state_was_recorded_is_unchanged_at_its_default() -> None:
    old = instance()
    del old["adopt"]
    assert not DatabaseInstanceProvider().check(old, instance()).failures


def restore(**kw: Any) -> dict[str, Any]:
    return {**ENGINE, "owner": "p/s/b#1", "instance_name": "inp_r", "source": "inp_db",
            "restore_time": "2026-01-01T00:00:00Z", "deletion_protection": False, **kw}


def test_a_restore_keeps_its_password_once_its_source_left_the_program() -> None:
    result = RestoredInstanceProvider().check(restore(password=PW), restore())
    assert not result.failures and result.inputs["password"] == PW


def test_a_new_restore_without_a_password_fails_at_preview() -> None:
    result = RestoredInstanceProvider().check({}, restore(engine="local"))
    assert any("no password for its user" in f.reason for f in result.failures), result.failures


def app(**kw: Any) -> dict[str, Any]:
    src = ROOT / "examples" / "greet"
    return {**ENGINE, "owner": "p/s/greet#1", "instance_name": "inp_db", "instance_host": "127.0.0.1",
            "instance_port": 54320, "instance_user": "inp_user", "instance_password": PW, "app_name": "greet",
            "source": str(src), "app_db_name": "greet", "previous_version": None, "env": {}, "port": None,
            "drop_on_delete": False, "adopt": False, "version": pack(src)[0], **kw}


def test_a_bound_app_keeps_its_instance_values_while_the_instance_is_updated_in_place() -> None:
    # an instance updated in place previews its inputs as outputs: host and user unknown, allocated port None
    news = app(instance_host=UNKNOWN, instance_port=None, instance_user=UNKNOWN, version=None)
    result = AppProvider().check(app(), news)
    assert not result.failures
    assert (result.inputs["instance_host"], result.inputs["instance_port"], result.inputs["instance_user"]) \
        == ("127.0.0.1", 54320, "inp_user")


def test_a_bound_app_on_an_instance_being_created_sees_its_port_as_unknown() -> None:
    provider = AppProvider()
    news = app(instance_name=UNKNOWN, instance_host=UNKNOWN, instance_port=None, version=None)
    inputs = dict(news)
    provider.carry(app(), inputs)
    assert inputs["instance_port"] == UNKNOWN and inputs["instance_host"] == UNKNOWN
