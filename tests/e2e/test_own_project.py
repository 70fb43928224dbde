"""A user's own project (issue 20): its dbos:* config is checked by the library itself, and a project made
from templates/dbos-python previews, deploys and is destroyed with the real pulumi CLI."""

from __future__ import annotations

import pytest
from pulumi import automation as auto

from tests.e2e.conftest import INSTANCES_PROGRAM

pytestmark = pytest.mark.e2e


def test_typoed_engine_settings_fail_the_preview_of_any_program(make_project) -> None:  # type: ignore[no-untyped-def]
    """Reproduction 1: `dbos:engin: dbos-cloud` and `dbos:cloudDomian` were silently ignored (the preview showed
    the local engine and the shared data dir); now the preview fails naming each key and what was meant."""
    proj = make_project(INSTANCES_PROGRAM)
    proj.set_spec({"instances": {"own_db": {"username": "own_user"}}}, {"own_db": "Own-pass-123"})
    proj.stack.set_config("dbos:engin", auto.ConfigValue("dbos-cloud"))
    proj.stack.set_config("dbos:cloudDomian", auto.ConfigValue("127.0.0.1:8443"))
    with pytest.raises(auto.CommandError) as err:
        proj.preview()
    text = str(err.value)
    assert "dbos:engin: unknown key; did you mean 'engine'?" in text
    assert "dbos:cloudDomian: unknown key; did you mean 'cloudDomain'?" in text
    assert "Traceback" not in text
    assert not (proj.data_dir / "catalog.db").exists()

    # cloud settings without the cloud engine are refused too
    proj.stack.remove_config("dbos:engin")
    proj.stack.remove_config("dbos:cloudDomian")
    proj.stack.set_config("dbos:cloudDomain", auto.ConfigValue("127.0.0.1:8443"))
    with pytest.raises(auto.CommandError) as err:
        proj.preview()
    assert "dbos:cloudDomain: only used with `dbos:engine: dbos-cloud`" in str(err.value)
