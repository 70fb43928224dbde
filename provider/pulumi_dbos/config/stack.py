"""The stack config (``dbos:*``, DESIGN §3), derived from the Specs, and the README's reference table.

All problems of a stack config are reported at once, each with its config path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Union

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError, create_model
from pydantic.alias_generators import to_camel

from .derive import _clean, change_rows, stack_model
from .paths import resolve_project_path
from .rules import AppName, InstanceName
from .settings import ENGINE_SETTINGS, PROVIDER_SETTINGS, engine_problems, suggest, unknown_key_message
from .spec import SPECS, DatabaseInstanceSpec, Spec, meta_of

# ---------------------------------------------------------------------------- stack config (DESIGN §3)
ENTRY_MODELS: dict[type[Spec], type[BaseModel]] = {s: stack_model(s) for s in SPECS}
SECTIONS = tuple(dict.fromkeys(s.stack_section for s in SPECS))
#: the Specs of each section (``dbos:apps`` holds AppDatabase entries and, with ``source``, App entries)
SECTION_SPECS: dict[str, list[type[Spec]]] = {sec: [s for s in SPECS if s.stack_section == sec] for sec in SECTIONS}



def spec_of_entry(section: str, entry: Any) -> type[Spec]:
    """Which Spec a stack config entry of ``section`` is (by its discriminator key)."""
    specs = SECTION_SPECS[section]
    for spec in specs:
        if spec.discriminator and isinstance(entry, dict) and spec.discriminator in entry:
            return spec
    return next(s for s in specs if not s.discriminator)


def _entry_type(section: str) -> Any:
    specs = SECTION_SPECS[section]
    if len(specs) == 1:
        return ENTRY_MODELS[specs[0]]
    tagged = tuple(Annotated[ENTRY_MODELS[s], Tag(s.__name__)] for s in specs)
    return Annotated[Union[tagged], Discriminator(lambda v: spec_of_entry(section, v).__name__)]  # noqa: UP007


def _stack_config_model() -> type[BaseModel]:
    fields: dict[str, Any] = {
        "engine": (str, "local"), "dataDir": (str | None, None), "runAs": (str | None, None),
        "cloudDomain": (str | None, None), "cloudToken": (str | None, None), "cloudCaCert": (str | None, None),
        "replaceOnEngineChange": (bool, False)}
    for section, specs in SECTION_SPECS.items():
        key_type = AppName if specs[0].name_field == "app_name" else InstanceName
        fields[section] = (dict[key_type, _entry_type(section)], Field(default_factory=dict))  # type: ignore[valid-type, misc]
    return create_model("StackConfig", __config__=ConfigDict(extra="forbid"), **fields)  # type: ignore[call-overload, no-any-return]


StackConfig = _stack_config_model()
_TAGS = {s.__name__ for s in SPECS}


def stack_keys(section: str, spec: type[Spec] | None = None) -> list[str]:
    specs = [spec] if spec else SECTION_SPECS[section]
    return list(dict.fromkeys(to_camel(n) for s in specs for n in ENTRY_MODELS[s].model_fields))


def _unknown_key_message(loc: list[str], tag_spec: type[Spec] | None = None) -> str:
    if len(loc) == 1:
        return unknown_key_message(loc[0])
    if len(loc) == 3 and loc[0] in SECTIONS:
        return "unknown key" + suggest(loc[2], stack_keys(loc[0], tag_spec))
    return "unknown key (not one of the documented inputs)"


def _reference_problems(raw: dict[str, Any]) -> list[str]:
    """Cross-references of the raw config (checked even when fields have errors, to report all at once)."""
    problems = engine_problems(raw)

    def entries_of(key: str) -> dict[str, Any]:
        v = raw.get(key)
        return v if isinstance(v, dict) else {}

    seen: dict[str, str] = {}
    for section in (s.stack_section for s in SPECS if s.is_instance):
        for name in entries_of(section):
            if name in seen:
                problems.append(f"dbos:{section}.{name}: duplicate instance name (also in dbos:{seen[name]})")
            seen.setdefault(name, section)
    restores = entries_of("restores")
    for name, r in restores.items():
        src = r.get("source") if isinstance(r, dict) else None
        if not isinstance(src, str):
            continue
        if src not in seen:
            problems.append(f"dbos:restores.{name}.source: instance {src!r} is not defined")
        elif seen[src] == "linked":
            problems.append(f"dbos:restores.{name}.source: {src!r} is a linked instance; "
                            "point-in-time restore needs a local instance")
    problems += [f"dbos:restores.{c[0]}.source: restores form a cycle: {' -> '.join(c)}"
                 for c in restore_cycles(restores)]
    for name, a in entries_of("apps").items():
        inst = a.get("instance") if isinstance(a, dict) else None
        if isinstance(inst, str) and inst not in seen:
            problems.append(f"dbos:apps.{name}.instance: instance {inst!r} is not defined")
    return problems


def _sources(restores: dict[str, Any]) -> dict[str, str]:
    return {n: r["source"] for n, r in restores.items() if isinstance(r, dict) and isinstance(r.get("source"), str)}


def restore_cycles(restores: dict[str, Any]) -> list[list[str]]:
    """Each cycle of restores (a restore of itself, a -> b -> a), as the path that closes it."""
    src = _sources(restores)
    cycles: list[list[str]] = []
    done: set[str] = set()
    for start in sorted(src):
        path: list[str] = []
        node: str | None = start
        while node in src and node not in done and node not in path:
            path.append(node)
            node = src[node]
        if node in path:
            cycle = path[path.index(node):] + [node]
            if not any(set(cycle) == set(c) for c in cycles):
                cycles.append(cycle)
        done.update(path)
    return cycles


def restore_order(restores: dict[str, Any]) -> list[str]:
    """Restore names ordered so that a restore of a restore comes after its source (cycle-free input)."""
    src, ordered, placed = _sources(restores), [], set()

    def place(n: str, depth: int = 0) -> None:
        if n in placed or depth > len(src):
            return
        if src.get(n) in restores:
            place(src[n], depth + 1)
        placed.add(n)
        ordered.append(n)

    for n in restores:
        place(n)
    return ordered


def validate_stack_config(raw: dict[str, Any], root: Path | None = None) -> tuple[Any, list[str]]:
    """Validate the ``dbos:*`` config; return (config, problems) with paths like ``dbos:instances.x.password``.
    With ``root`` (the project directory), the files apps name are checked too."""
    out: list[str] = []
    cfg: Any = None
    try:
        cfg = StackConfig.model_validate(raw)
    except ValidationError as exc:
        for err in exc.errors(include_input=False):
            loc = [str(p) for p in err["loc"]]
            tag = next((p for p in loc if p in _TAGS), None)  # a discriminated entry: its Spec, not a key
            loc = [p for p in loc if p not in _TAGS]
            spec = next((s for s in SPECS if s.__name__ == tag), None)
            msg = _unknown_key_message(loc, spec) if err["type"] == "extra_forbidden" else \
                _clean(err["msg"], err["type"])
            out.append(f"dbos:{'.'.join(loc)}: {msg}")
    out += _reference_problems(raw)
    if root is not None:
        out += file_problems(raw, root)
    return (cfg if not out else None), out


def file_problems(raw: dict[str, Any], root: Path) -> list[str]:
    """Problems of the files the apps' entries name (paths relative to ``root``), with their config paths,
    so they are reported together with every other problem of the stack config."""
    from ..dbos_config import read_app, read_binding
    from ..errors import ValidationError as Invalid

    out: list[str] = []
    ca = raw.get("cloudCaCert")
    if isinstance(ca, str) and not resolve_project_path(ca, root).is_file():
        out.append(f"dbos:cloudCaCert: {ca} is not a file (a PEM certificate; relative paths are to the project root)")
    apps = raw.get("apps") if isinstance(raw.get("apps"), dict) else {}
    for name, entry in (apps or {}).items():
        if not isinstance(entry, dict):
            continue
        for key in ("source", "dbosConfig", "workingDir"):
            value = entry.get(key)
            if not isinstance(value, str) or not value:
                continue
            path = Path(value).expanduser()
            path = path if path.is_absolute() else root / path
            try:
                if key == "source":
                    read_app(path, name)
                elif key == "dbosConfig":
                    read_binding(path)
                elif not path.is_dir():
                    out.append(f"dbos:apps.{name}.{key}: {path} does not exist or is not a directory")
            except Invalid as exc:
                out += [f"dbos:apps.{name}.{key}: {msg}" for _field, msg in exc.problems]
    return out


def changes_markdown() -> str:
    """docs/usage.md's change table: what `pulumi preview` shows and what `pulumi up` does for a change of each
    input of each resource, generated from the Specs (``Meta.preview``/``Meta.up``; a unit test keeps it in step)."""
    lines = ["| resource | change of | what `pulumi preview` shows | what `pulumi up` does |", "|---|---|---|---|"]

    def row(resource: str, names: list[str], preview: str, up: str) -> None:
        cells = [resource, ", ".join(f"`{n}`" for n in names), *(s.replace("|", "\\|") for s in (preview, up))]
        lines.append("| " + " | ".join(cells) + " |")

    for spec in SPECS:
        names = [n for n in spec.fields(output=False)
                 if meta_of(spec.model_fields[n]).stack or n == spec.name_field]
        for fields, preview, up in change_rows(spec, names):
            row(f"`{spec.__name__.removesuffix('Spec')}`", fields, preview, up)
    engine = [n for n in Spec.model_fields if n != "owner"]
    for fields, preview, up in change_rows(DatabaseInstanceSpec, engine):
        row("every instance (stack-wide `dbos:*`)", fields, preview, up)
    return "\n".join(lines) + "\n"


def reference_markdown() -> str:
    """The README's input reference, generated from the models (a unit test keeps the README in step)."""
    lines: list[str] = []
    for spec in SPECS:
        name = spec.__name__.removesuffix("Spec")
        lines += [f"**`{name}`** (`dbos:{spec.stack_section}.<{spec.name_field}>`): {spec.__doc__}", "",
                  "| input | stack config key | default | on change | what it is |", "|---|---|---|---|---|"]
        for field in spec.fields(output=False):
            info, m = spec.model_fields[field], meta_of(spec.model_fields[field])
            if not m.stack and field != spec.name_field:
                continue
            key = f"`{to_camel(field)}`" if m.stack else "entry key"
            default = "required" if info.is_required() else f"`{info.default!r}`"
            change = "replace" if m.replace else ("update" if m.diffed else "—")
            lines.append(f"| `{field}`{' (secret)' if m.secret else ''} | {key} | {default} | {change} | {m.doc} |")
        outs = ", ".join(f"`{o}`{' (secret)' if meta_of(spec.model_fields[o]).secret else ''}"
                         for o in spec.outputs())
        lines += ["", f"Outputs: {outs}.", ""]
    lines += ["Engine settings (top-level keys, every resource): "
              + ", ".join(f"`dbos:{k}` (`{v}`)" for k, v in ENGINE_SETTINGS.items()) + "; read by the provider "
              "process only (not inputs): " + ", ".join(f"`dbos:{k}`" for k in PROVIDER_SETTINGS) + "."]
    return "\n".join(lines) + "\n"
