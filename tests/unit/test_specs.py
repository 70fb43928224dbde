"""Each resource is described once (its Spec); everything else is derived from it and checked here."""

from __future__ import annotations

import pytest

import pulumi_dbos as dbos
from pulumi_dbos.config import (
    ENGINE_SETTINGS,
    ENTRY_MODELS,
    SPECS,
    Spec,
    fields_of,
    meta_of,
    reference_markdown,
    stack_keys,
)
from pulumi_dbos.config.derive import fields_of_spec, render_fields_table
from pulumi_dbos.resources import app, app_database, instance, linked, restored
from tests.conftest import ROOT

PROVIDERS = {p.fields.spec: p for p in (instance.DatabaseInstanceProvider, restored.RestoredInstanceProvider,
                                  linked.LinkedInstanceProvider, app_database.AppDatabaseProvider,
                                  app.AppProvider)}


class _FakeResource:
    pass


def _class(spec: type[Spec]) -> type:
    return getattr(dbos, spec.__name__.removesuffix("Spec"))  # type: ignore[no-any-return]


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.__name__)
def test_every_input_is_reachable_from_the_stack_config(spec: type[Spec]) -> None:
    reachable = {spec.name_field, *ENGINE_SETTINGS.values(), "owner"}
    reachable |= {n for n in ENTRY_MODELS[spec].model_fields}
    derived = set(spec.fields(computed=True))
    missing = [n for n in spec.inputs() if n not in reachable and n not in derived]
    assert not missing, f"{spec.__name__} inputs the stack config cannot set: {missing}"


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.__name__)
def test_the_resource_class_takes_the_specs_arguments_and_nothing_else(spec: type[Spec]) -> None:
    cls = _class(spec)
    assert cls.fields.model() is spec
    args = set(spec.arguments())
    assert {spec.name_field, *ENTRY_MODELS[spec].model_fields} <= args
    if spec.is_instance:
        assert set(ENGINE_SETTINGS.values()) <= args
    else:  # apps take their engine from the instance they are bound to
        assert not set(ENGINE_SETTINGS.values()) & args
    with pytest.raises(TypeError, match="unexpected argument"):
        cls("x", colour="blue", instance=_FakeResource()) if not spec.is_instance else cls("x", colour="blue")


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.__name__)
def test_provider_lists_come_from_the_spec(spec: type[Spec]) -> None:
    provider = PROVIDERS[spec.__name__]
    assert provider.fields.model() is spec
    assert provider.fields == fields_of_spec(spec) == fields_of(spec.__name__.removesuffix("Spec"))
    assert set(provider.fields.inputs) == set(spec.inputs())
    assert set(spec.replace_keys()) <= set(spec.diff_keys())
    for secret in spec.secrets():
        assert meta_of(spec.model_fields[secret]).secret


def test_the_generated_field_lists_are_the_specs() -> None:
    """config/fields_table.py (read by programs and providers without pydantic) is what the Specs give."""
    table = ROOT / "provider" / "pulumi_dbos" / "config" / "fields_table.py"
    assert table.read_text() == render_fields_table(), (
        "config/fields_table.py is stale: run `python -m pulumi_dbos.config.fields`")


def test_a_program_of_resources_loads_no_pydantic() -> None:
    """The resource classes and providers start on the generated lists: pydantic loads only to validate."""
    import sys

    from pulumi_dbos.engine import proc

    code = ("import sys, pulumi_dbos as d; d.DatabaseInstance, d.RestoredInstance, d.LinkedInstance, d.AppDatabase, "
            "d.App; print(sorted(m for m in ('pydantic', 'psycopg', 'httpx') if m in sys.modules))")
    out = proc.run([sys.executable, "-c", code], timeout=60)
    assert out.stdout.strip() == "[]"


def test_stack_config_keys_are_camel_case_spec_fields() -> None:
    assert "retentionHours" in stack_keys("instances")
    assert "ownerRole" in stack_keys("apps")  # documented in the README; once rejected as unknown
    assert "retentionHours" in stack_keys("restores")  # a RestoredInstance input; once missing
    assert "password" in stack_keys("restores")


def test_usage_holds_the_generated_change_table_covering_every_input() -> None:
    """docs/usage.md's change table is generated from the Specs (issue 32: App.env, App.port and drop_on_delete
    had no row), and it has a row for every input of every resource."""
    from pulumi_dbos.config import changes_markdown

    usage = (ROOT / "docs" / "usage.md").read_text()
    assert changes_markdown() in usage, (
        "docs/usage.md's change table is stale: run scripts/update-readme-reference")
    covered = {(line.split("|")[1].strip().strip("`"), name.strip().strip("`"))
               for line in changes_markdown().splitlines()[2:] for name in line.split("|")[2].split(",")}
    for spec in SPECS:
        kind = spec.__name__.removesuffix("Spec")
        for field in spec.fields(output=False):
            if meta_of(spec.model_fields[field]).stack or field == spec.name_field:
                assert (kind, field) in covered, f"{kind}.{field} has no row in the change table"
    assert {("App", "env"), ("App", "port"), ("App", "drop_on_delete"), ("AppDatabase", "drop_on_delete")} <= covered


def test_docs_hold_the_generated_reference() -> None:
    readme = (ROOT / "docs" / "reference.md").read_text()
    assert reference_markdown() in readme, (
        "docs/reference.md's input reference is stale: run scripts/update-readme-reference, or paste the output of "
        "`python -c 'from pulumi_dbos.config import reference_markdown; print(reference_markdown())'`")
