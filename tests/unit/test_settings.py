"""The top-level ``dbos:*`` keys every program's resources check (issue 20, reproduction 1)."""

from __future__ import annotations

from typing import Any

import pytest

from pulumi_dbos.config import SECTIONS, validate_stack_config
from pulumi_dbos.config.settings import SECTION_NAMES, settings_problems


def test_section_names_are_the_specs_sections() -> None:
    assert SECTION_NAMES == SECTIONS


@pytest.mark.parametrize(("raw", "expected"), [
    ({"engin": "dbos-cloud"}, "dbos:engin: unknown key; did you mean 'engine'?"),
    ({"engine": "dbos-cloud", "cloudDomian": "x:8443"}, "dbos:cloudDomian: unknown key; did you mean 'cloudDomain'?"),
    ({"datadir": "/tmp/d"}, "dbos:datadir: unknown key; did you mean 'dataDir'?"),
    ({"zzz": "1"}, "dbos:zzz: unknown key (known keys: engine, dataDir"),
    ({"instances.prod_db.password": "x"}, "nested keys need `pulumi config set --path"),
    ({"engine": "docker"}, "dbos:engine: 'docker' is not available"),
    ({"replaceOnEngineChange": "yes"}, "dbos:replaceOnEngineChange: must be true or false"),
    ({"dataDir": {"a": 1}}, "dbos:dataDir: must be a non-empty string, not dict"),
    ({"instances": ["a"]}, "dbos:instances: must be a map of entries by name"),
    ({"cloudDomain": "localhost:8443"}, "dbos:cloudDomain: only used with `dbos:engine: dbos-cloud`"),
    ({"cloudToken": "t"}, "dbos:cloudToken: only used with `dbos:engine: dbos-cloud`"),
    ({"engine": "dbos-cloud", "dataDir": "/x"}, "dbos:dataDir: not used by the dbos-cloud engine"),
])
def test_problems_name_the_key(raw: dict[str, Any], expected: str) -> None:
    assert any(expected in p for p in settings_problems(raw)), settings_problems(raw)


def test_the_reproduction_reports_both_typos_and_nothing_else() -> None:
    problems = settings_problems({"engin": "dbos-cloud", "cloudDomian": "localhost:8443", "dataDir": "/x"})
    assert [p.split(":")[1] for p in problems] == ["engin", "cloudDomian"]


def test_good_settings_pass() -> None:
    assert settings_problems({"engine": "local", "dataDir": "/x", "runAs": "postgres",
                              "replaceOnEngineChange": "true", "instances": {}}) == []
    assert settings_problems({"engine": "dbos-cloud", "cloudDomain": "h:1", "cloudToken": "t",
                              "cloudCaCert": "c.pem"}) == []


def test_an_explicit_engine_argument_wins_over_the_config() -> None:
    assert settings_problems({"cloudToken": "t"}, engine="dbos-cloud") == []


def test_the_example_program_reports_the_same_messages() -> None:
    _cfg, problems = validate_stack_config({"engin": "dbos-cloud"})
    assert "dbos:engin: unknown key; did you mean 'engine'?" in problems
