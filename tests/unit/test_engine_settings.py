"""The engines' settings: one declaration per variable, checked as a whole, the docs' table generated from it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pulumi_dbos.engine.settings import EngineSettings, markdown_table
from pulumi_dbos.errors import DbosError

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.unit


def test_defaults_when_nothing_is_set() -> None:
    s = EngineSettings.from_env({})
    assert s == EngineSettings()
    assert s.start_timeout == 60.0 and s.pool_size == 2 and s.port_range is None


def test_values_are_parsed_by_their_type() -> None:
    s = EngineSettings.from_env({"PULUMI_DBOS_START_TIMEOUT": "5", "PULUMI_DBOS_POOL_SIZE": "0",
                                 "PULUMI_DBOS_PORT_RANGE": "16000-16010", "PULUMI_DBOS_LOCK_DIR": "/tmp/x",
                                 "PULUMI_DBOS_RUN_AS": "pg", "PULUMI_DBOS_WAL_BACKUP_MB": " "})
    assert s.start_timeout == 5.0 and s.pool_size == 0 and s.port_range == (16000, 16010)
    assert s.lock_dir == Path("/tmp/x") and s.run_as == "pg" and s.wal_backup_mb == 128


@pytest.mark.parametrize(("var", "value", "words"), [
    ("PULUMI_DBOS_START_TIMEOUT", "soon", "is not a number"),
    ("PULUMI_DBOS_POOL_SIZE", "2.5", "is not an integer"),
    ("PULUMI_DBOS_POOL_SIZE", "-1", "must be at least 0"),
    ("PULUMI_DBOS_WAL_CHECK_SECONDS", "0.01", "must be at least 0.2"),
    ("PULUMI_DBOS_PORT_RANGE", "16000", "is not LO-HI"),
    ("PULUMI_DBOS_APP_BACKEND_PORTS", "20010-20000", "LO <= HI"),
])
def test_a_bad_value_names_the_variable_and_its_rule(var: str, value: str, words: str) -> None:
    """Once: a bad PULUMI_DBOS_POOL_SIZE or WAL_BACKUP_MB fell back to the default without a word, a bad
    START_TIMEOUT was a ValueError at import."""
    with pytest.raises(DbosError) as exc:
        EngineSettings.from_env({var: value})
    assert var in exc.value.message and words in exc.value.message


def test_workers_get_only_the_settings_they_read_and_only_when_set() -> None:
    s = EngineSettings.from_env({"PULUMI_DBOS_WAL_BACKUP_MB": "8", "PULUMI_DBOS_APP_START_TIMEOUT": "5",
                                 "PULUMI_DBOS_LOCK_DIR": "/tmp/l"})
    assert s.worker_env() == {"PULUMI_DBOS_WAL_BACKUP_MB": "8", "PULUMI_DBOS_LOCK_DIR": "/tmp/l"}


def test_settings_are_frozen_and_replaced_not_patched() -> None:
    s = EngineSettings()
    with pytest.raises(AttributeError):
        s.start_timeout = 1.0  # type: ignore[misc]
    assert s.replace(start_timeout=1.0).start_timeout == 1.0 and s.start_timeout == 60.0


def test_no_engine_module_reads_the_environment_for_a_setting() -> None:
    """The variables are read in engine/settings.py alone (the issue found ~35 read in 17 files)."""
    offenders = []
    for path in (ROOT / "provider" / "pulumi_dbos").rglob("*.py"):
        if path.name == "settings.py":
            continue
        text = path.read_text()
        for var in (line.split("`")[1] for line in markdown_table().splitlines()[2:]):
            if re.search(rf'(environ\.get\(|environ\[|getenv\()"{var}"|"{var}" in os\.environ', text):
                offenders.append(f"{path.relative_to(ROOT)}: {var}")
    assert not offenders, offenders


def test_docs_hold_the_generated_settings_table() -> None:
    assert markdown_table() in (ROOT / "docs" / "settings.md").read_text(), (
        "docs/settings.md is stale: `python -m pulumi_dbos.engine.settings` prints its table")
