"""The Pulumi program: turns the stack config (``dbos:*``) into resources.

The whole config is validated first; every problem is reported at once, each with its config
path, and nothing is registered when there is any. The mapping from config entries to resource
arguments is derived from the resources' Specs (``pulumi_dbos.config``): an entry's key is the
resource's name field, its camelCase keys are the Spec's ``stack`` fields, ``ref`` fields name
another entry's resource, ``path`` fields are relative to the project root.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pulumi

import pulumi_dbos as dbos
from pulumi_dbos.config import (
    ENGINE_SETTINGS,
    ENTRY_MODELS,
    SPECS,
    Spec,
    meta_of,
    restore_order,
    validate_stack_config,
)
from pulumi_dbos.resources.stack_config import raw_config  # every dbos:* key, unknown ones included

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CLASSES: dict[type[Spec], Any] = {spec: getattr(dbos, spec.__name__.removesuffix("Spec")) for spec in SPECS}


def project_path(path: str) -> str:
    """Paths in the stack config are relative to the project root (where Pulumi.yaml is)."""
    p = Path(path).expanduser()
    return str(p if p.is_absolute() else PROJECT_ROOT / p)


def arguments(spec: type[Spec], name: str, entry: Any, registered: dict[str, Any]) -> dict[str, Any]:
    """A resource's keyword arguments from its validated stack config entry."""
    args: dict[str, Any] = {spec.name_field: name}
    for field, value in entry.model_dump().items():
        m = meta_of(spec.model_fields[field])
        if m.ref:
            value = registered[value]
        elif m.path and value:
            value = project_path(value)
        elif m.secret and value is not None:
            value = pulumi.Output.secret(value)
        args[field] = value
    return args


def main() -> None:
    cfg, problems = validate_stack_config(raw_config(), PROJECT_ROOT)
    if problems or cfg is None:
        raise pulumi.RunError(
            f"the stack config has {len(problems)} problem(s); nothing was changed:\n  " + "\n  ".join(problems))
    engine = {field: getattr(cfg, key) for key, field in ENGINE_SETTINGS.items()}
    instances: dict[str, Any] = {}
    apps: dict[str, Any] = {}
    for spec in SPECS:
        section = spec.stack_section
        entries: dict[str, Any] = {n: e for n, e in getattr(cfg, section).items()
                                   if isinstance(e, ENTRY_MODELS[spec])}
        order = restore_order({n: {"source": e.source} for n, e in entries.items()}) if section == "restores" \
            else list(entries)
        target = instances if spec.is_instance else apps
        for name in order:
            args = arguments(spec, name, entries[name], instances)
            if spec.is_instance:
                args.update(engine)
            target[name] = CLASSES[spec](name, **args)

    pulumi.export("instances", {
        name: {"status": r.status, "hostname": r.hostname, "port": r.port, "username": r.username}
        for name, r in instances.items()
    })
    pulumi.export("database_urls", pulumi.Output.secret({name: r.database_url for name, r in instances.items()}))
    pulumi.export("apps", {
        name: {"instance": a.instance_name, "database_url": pulumi.Output.secret(a.database_url),
               **({"app_url": a.app_url, "version": a.version, "status": a.status}
                  if isinstance(a, dbos.App) else {})}
        for name, a in apps.items()
    })


main()
