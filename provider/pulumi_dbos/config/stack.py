"""The stack config (``dbos:*``, DESIGN §3), derived from the Specs, and the README's reference table.

All problems of a stack config are reported at once, each with its config path.
"""

from __future__ import annotations

import difflib
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model
from pydantic.alias_generators import to_camel

from .rules import AppName, InstanceName
from .spec import SPECS, _clean, meta_of, stack_model

# ---------------------------------------------------------------------------- stack config (DESIGN §3)
#: top-level ``dbos:*`` keys that are not sections: stack key -> resource field
ENGINE_SETTINGS = {"engine": "engine", "dataDir": "data_dir", "runAs": "run_as",
                   "replaceOnEngineChange": "replace_on_engine_change"}



STACK_MODELS: dict[str, type[BaseModel]] = {s.stack_section: stack_model(s) for s in SPECS}
SECTIONS = tuple(STACK_MODELS)


def _stack_config_model() -> type[BaseModel]:
    fields: dict[str, Any] = {
        "engine": (str, "local"), "dataDir": (str | None, None), "runAs": (str | None, None),
        "replaceOnEngineChange": (bool, False)}
    for spec in SPECS:
        key_type = AppName if spec.name_field == "app_name" else InstanceName
        entry = STACK_MODELS[spec.stack_section]
        fields[spec.stack_section] = (dict[key_type, entry], Field(default_factory=dict))  # type: ignore[valid-type]
    return create_model("StackConfig", __config__=ConfigDict(extra="forbid"), **fields)  # type: ignore[call-overload, no-any-return]


StackConfig = _stack_config_model()


def stack_keys(section: str) -> list[str]:
    return [to_camel(n) for n in STACK_MODELS[section].model_fields]


def _suggest(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else f" (known keys: {', '.join(choices)})"


def _unknown_key_message(loc: list[str]) -> str:
    if len(loc) == 1:
        key = loc[0]
        section = key.split(".", 1)[0]
        if "." in key and section in SECTIONS:
            return (f"unknown key: `dbos:{key}` was set as one flat key; nested keys need "
                    f"`pulumi config set --path 'dbos:{key}' ...` (add --secret for a password)")
        return "unknown key" + _suggest(key, [*ENGINE_SETTINGS, *SECTIONS])
    if len(loc) == 3 and loc[0] in SECTIONS:
        return "unknown key" + _suggest(loc[2], stack_keys(loc[0]))
    return "unknown key (not one of the documented inputs)"


def _reference_problems(raw: dict[str, Any]) -> list[str]:
    """Cross-references of the raw config (checked even when fields have errors, to report all at once)."""
    problems: list[str] = []
    engine = raw.get("engine", "local")
    if engine != "local":
        problems.append(f"dbos:engine: {engine!r} is not available (use 'local')")

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


def validate_stack_config(raw: dict[str, Any]) -> tuple[Any, list[str]]:
    """Validate the ``dbos:*`` config; return (config, problems) with paths like ``dbos:instances.x.password``."""
    out: list[str] = []
    cfg: Any = None
    try:
        cfg = StackConfig.model_validate(raw)
    except ValidationError as exc:
        for err in exc.errors(include_input=False):
            loc = [str(p) for p in err["loc"]]
            msg = _unknown_key_message(loc) if err["type"] == "extra_forbidden" else _clean(err["msg"], err["type"])
            out.append(f"dbos:{'.'.join(loc)}: {msg}")
    out += _reference_problems(raw)
    return (cfg if not out else None), out


def reference_markdown() -> str:
    """The README's input reference, generated from the models (a unit test keeps the README in step)."""
    lines: list[str] = []
    for spec in SPECS:
        name = spec.__name__.removesuffix("Spec")
        lines += [f"**`{name}`** (`dbos:{spec.stack_section}.<{spec.name_field}>`): {spec.__doc__}", "",
                  "| input | stack config key | default | on change | |", "|---|---|---|---|---|"]
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
              + ", ".join(f"`dbos:{k}` (`{v}`)" for k, v in ENGINE_SETTINGS.items()) + "."]
    return "\n".join(lines) + "\n"
