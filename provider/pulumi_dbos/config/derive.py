"""What is derived from the Specs (``config/spec.py``): the pydantic models that validate a resource's inputs
and its stack config entry, the pydantic-free field lists (``config/fields_table.py``, generated), and the
rows of docs/usage.md's change table.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, ValidationError, create_model
from pydantic.alias_generators import to_camel

from .fields import Fields, is_unknown
from .spec import SPECS, Spec, meta_of


def validate(model: type[BaseModel], values: dict[str, Any]) -> list[tuple[str, str]]:
    """Validate ``values`` against ``model``; return ``(field, rule)`` problems (unknowns skipped)."""
    unknown = {k for k, v in values.items() if is_unknown(v)}
    try:
        model.model_validate(values)
    except ValidationError as exc:
        return [(".".join(str(p) for p in err["loc"]) or "(input)", _clean(err["msg"], err["type"]))
                for err in exc.errors(include_input=False)
                if not (err["loc"] and str(err["loc"][0]) in unknown)]
    return []


def _clean(msg: str, kind: str) -> str:
    msg = msg.removeprefix("Value error, ")
    if kind == "extra_forbidden":
        return "unknown key (not one of the documented inputs)"
    if kind == "missing":
        return "is required"
    return msg


def _derived(spec: type[Spec], names: list[str], model_name: str, camel: bool) -> type[BaseModel]:
    fields: dict[str, Any] = {}
    for name in names:
        info = spec.model_fields[name]
        fields[name] = (Annotated[(info.annotation, *info.metadata)] if info.metadata else info.annotation,
                        info.default if not info.is_required() else ...)
    config = ConfigDict(extra="forbid", alias_generator=to_camel, populate_by_name=True) if camel else \
        ConfigDict(extra="forbid")
    return create_model(model_name, __config__=config, **fields)  # type: ignore[call-overload, no-any-return]


@functools.cache
def stack_model(spec: type[Spec]) -> type[BaseModel]:
    """The stack config entry model of ``spec``: its ``stack`` fields, camelCase keys, same rules."""
    return _derived(spec, spec.fields(stack=True, output=False), f"{spec.__name__.removesuffix('Spec')}Cfg", True)


@functools.cache
def input_model(spec: type[Spec]) -> type[BaseModel]:
    """What the provider's ``check()`` validates: the provider inputs of ``spec``, same rules."""
    return _derived(spec, spec.inputs(), f"{spec.__name__.removesuffix('Spec')}Inputs", False)


# ---------------------------------------------------------------------------- the pydantic-free field lists
def fields_of_spec(spec: type[Spec]) -> Fields:
    """What ``config/fields_table.py`` holds for ``spec`` (see ``config/fields.py``)."""
    inputs = spec.inputs()
    return Fields(
        spec=spec.__name__, name_field=spec.name_field, is_instance=spec.is_instance, inputs=tuple(inputs),
        defaults=tuple((n, spec.model_fields[n].default) for n in inputs
                       if not spec.model_fields[n].is_required() and spec.model_fields[n].default is not None),
        outputs=tuple(spec.outputs()), secrets=tuple(spec.secrets()), replace_keys=tuple(spec.replace_keys()),
        diff_keys=tuple(spec.diff_keys()), arguments=tuple(spec.arguments()), paths=tuple(spec.fields(path=True)))


def change_rows(spec: type[Spec], names: list[str]) -> list[tuple[list[str], str, str]]:
    """(fields, what `pulumi preview` shows, what `pulumi up` does) for a change of each of ``names`` of
    ``spec``, fields with the same two texts in one row: from each field's :class:`Meta` (``preview``/``up``,
    else what ``replace``/``diffed``/``secret`` say)."""
    rows: list[tuple[list[str], str, str]] = []
    for name in names:
        m = meta_of(spec.model_fields[name])
        shown = f"`~ {name}: [secret]`" if m.secret else f"`~ {name}`"
        preview = m.preview or (f"replace, `{name}` marked as the reason" if m.replace else
                                f"update {shown}" if m.diffed else "no change")
        up = m.up or ("a new one; the old one deleted" if m.replace else "in place" if m.diffed else "nothing")
        same = next((r for r in rows if r[1:] == (preview, up)), None)
        if same is not None:
            same[0].append(name)
        else:
            rows.append(([name], preview, up))
    return rows


def render_fields_table() -> str:
    """The text of ``config/fields_table.py``: every Spec's field lists as literals."""
    lines = ['"""Generated from the Specs (config/spec.py) by `python -m pulumi_dbos.config.fields`: do not edit.',
             "",
             "tests/unit/test_specs.py fails when this is not what the Specs give.",
             '"""', "", "from __future__ import annotations", "", "from .fields import Fields", "",
             "TABLE: dict[str, Fields] = {"]
    for spec in SPECS:
        f = fields_of_spec(spec)
        lines.append(f"    {spec.__name__.removesuffix('Spec')!r}: Fields(")
        for field in dataclasses.fields(Fields):
            name, value = field.name, getattr(f, field.name)
            if eval(repr(value)) != value:  # noqa: S307 - literals we wrote ourselves, checked to round-trip
                raise ValueError(f"{spec.__name__}.{name}: {value!r} has no literal form")
            lines.append(f"        {name}={value!r},")
        lines.append("    ),")
    lines.append("}")
    return "\n".join(lines) + "\n"


def write_fields_table() -> Path:
    path = Path(__file__).with_name("fields_table.py")
    path.write_text(render_fields_table())
    return path
