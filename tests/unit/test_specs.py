"""Each resource is described once (its Spec); everything else is derived from it and checked here."""

from __future__ import annotations

import pytest

import pulumi_dbos as dbos
from pulumi_dbos.config import (
    ENGINE_SETTINGS,
    ENTRY_MODELS,
    SPECS,
    Spec,
    meta_of,
    reference_markdown,
    stack_keys,
)
from pulumi_dbos.resources import app, app_database, instance, linked, restored
from tests.conftest import ROOT

PROVIDERS = {p.spec: p for p in (instance.DatabaseInstanceProvider, restored.RestoredInstanceProvider,
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
    assert cls.spec is spec
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
    assert PROVIDERS[spec].spec is spec
    assert set(spec.replace_keys()) <= set(spec.diff_keys())
    for secret in spec.secrets():
        assert meta_of(spec.model_fields[secret]).secret


def test_stack_config_keys_are_camel_case_spec_fields() -> None:
    assert "retentionHours" in stack_keys("instances")
    assert "ownerRole" in stack_keys("apps")  # documented in the README; once rejected as unknown
    assert "retentionHours" in stack_keys("restores")  # a RestoredInstance input; once missing
    assert "password" in stack_keys("restores")


def test_readme_holds_the_generated_reference() -> None:
    readme = (ROOT / "README.md").read_text()
    assert reference_markdown() in readme, (
        "README.md's input reference is stale: paste the output of "
        "`python -c 'from pulumi_dbos.config import reference_markdown; print(reference_markdown())'`")
