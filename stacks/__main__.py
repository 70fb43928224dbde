"""The Pulumi program: turns the stack config (``dbos:*``) into resources.

The whole config is validated first; every problem is reported at once, each
with its config path, and nothing is registered when there is any.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pulumi

import pulumi_dbos as dbos
from pulumi_dbos.config import validate_stack_config

SECTIONS = ("engine", "dataDir", "runAs", "instances", "restores", "linked", "apps")


def raw_config() -> dict[str, Any]:
    raw: dict[str, Any] = {}
    for key in SECTIONS:
        value = pulumi.runtime.get_config(f"dbos:{key}")  # plain read: nested secrets included
        if value is None:
            continue
        try:
            raw[key] = json.loads(value) if key in ("instances", "restores", "linked", "apps") else value
        except json.JSONDecodeError:
            raw[key] = value
    # unknown dbos:* keys are errors too
    env = pulumi.runtime.get_config_env()
    for full in env:
        ns, _, key = full.partition(":")
        if ns == "dbos" and key not in SECTIONS:
            raw[key] = env[full]
    return raw


PROJECT_ROOT = Path(__file__).resolve().parent.parent


def project_path(path: str | None) -> str | None:
    """Paths in the stack config are relative to the project root (where Pulumi.yaml is)."""
    if not path:
        return None
    p = Path(path).expanduser()
    return str(p if p.is_absolute() else PROJECT_ROOT / p)


def main() -> None:
    cfg, problems = validate_stack_config(raw_config())
    if problems or cfg is None:
        raise pulumi.RunError(
            f"the stack config has {len(problems)} problem(s); nothing was changed:\n  " + "\n  ".join(problems))
    engine = dict(engine=cfg.engine, data_dir=cfg.dataDir, run_as=cfg.runAs)
    instances: dict[str, Any] = {}
    for name, i in cfg.instances.items():
        instances[name] = dbos.DatabaseInstance(
            name, instance_name=name, username=i.username, password=pulumi.Output.secret(i.password),
            retention_hours=i.retention_hours, deletion_protection=i.deletion_protection, port=i.port,
            adopt=i.adopt, **engine)
    for name, r in cfg.restores.items():
        instances[name] = dbos.RestoredInstance(
            name, instance_name=name, source=instances[r.source], restore_time=r.restore_time,
            deletion_protection=r.deletion_protection, port=r.port, **engine)
    for name, link in cfg.linked.items():
        instances[name] = dbos.LinkedInstance(
            name, instance_name=name, hostname=link.hostname, port=link.port, username=link.username,
            password=pulumi.Output.secret(link.password), **engine)
    apps: dict[str, Any] = {}
    for name, a in cfg.apps.items():
        apps[name] = dbos.AppDatabase(
            name, app_name=name, instance=instances[a.instance], app_db_name=a.app_db_name,
            migrate=a.migrate,
            rollback=a.rollback, working_dir=project_path(a.working_dir),
            dbos_config=project_path(a.dbos_config),
            app_version=a.app_version, drop_on_delete=a.drop_on_delete)

    pulumi.export("instances", {
        name: {"status": r.status, "hostname": r.hostname, "port": r.port, "username": r.username}
        for name, r in instances.items()
    })
    pulumi.export("database_urls", pulumi.Output.secret({name: r.database_url for name, r in instances.items()}))
    pulumi.export("apps", {
        name: {"instance": a.instance_name, "database_url": pulumi.Output.secret(a.database_url)}
        for name, a in apps.items()
    })


main()
