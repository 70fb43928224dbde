"""What the commands share: the engine a command names (options, else its stack, else defaults), and
values read from a stack (`pulumi config`, `pulumi stack export`)."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from ..engine import default_data_dir, get_engine
from ..errors import DbosError

PULUMI_HINT = "run it in the Pulumi project directory, with PULUMI_CONFIG_PASSPHRASE and the backend set"

#: stack config key -> CLI option (``args`` attribute) for the engine settings
STACK_ENGINE_KEYS = {"dbos:engine": "engine", "dbos:dataDir": "data_dir", "dbos:runAs": "run_as",
                     "dbos:cloudDomain": "cloud_domain", "dbos:cloudCaCert": "cloud_ca_cert"}



def engine_from_args(args: argparse.Namespace) -> Any:
    """The engine of an existing data dir: read commands never create one.

    Options given on the command line win; with ``--stack`` (``db url``), the stack's ``dbos:engine``,
    ``dbos:dataDir`` and ``dbos:runAs`` come next; then ``$PULUMI_DBOS_*`` and the defaults.
    """
    if getattr(args, "stack", None):
        for attr, value in stack_engine_settings(args.stack).items():
            if getattr(args, attr, None) is None:
                setattr(args, attr, value)
    engine = args.engine or os.environ.get("PULUMI_DBOS_ENGINE") or "local"
    if engine == "dbos-cloud":
        return _cloud_engine(args)
    data_dir = Path(args.data_dir).expanduser() if args.data_dir else default_data_dir()
    try:
        has_catalog = (data_dir / "catalog.db").is_file()
    except PermissionError:
        raise DbosError(f"data dir {data_dir} is not readable by this user",
                        hint="run it as root or as the OS user that runs the clusters (dbos:runAs)") from None
    if not has_catalog:
        what = "does not exist" if not data_dir.exists() else "has no catalog.db (no instance was created there)"
        raise DbosError(
            f"data dir {data_dir} {what}",
            hint="pass the data dir the stack uses: --data-dir DIR (its `dbos:dataDir`), or `db url NAME --stack S`; "
            "without either, $PULUMI_DBOS_DATA_DIR or the default is used")
    return get_engine(engine, str(data_dir), args.run_as)


def _cloud_engine(args: argparse.Namespace) -> Any:
    """The dbos-cloud engine: the domain and CA certificate from the options or the stack; the token from
    ``$DBOS_CLOUD_TOKEN``, else the stack's ``dbos:cloudToken`` secret (with ``--stack``), else the DBOS CLI's
    ``.dbos/credentials`` in the current directory (the engine's own fallback)."""
    token = os.environ.get("DBOS_CLOUD_TOKEN")
    stack = getattr(args, "stack", None)
    if not token and stack:
        from ..engine import proc

        cp = proc.run(["pulumi", "config", "get", "dbos:cloudToken", "--stack", stack], env=dict(os.environ),
                      timeout=120, check=False)
        token = (cp.stdout or "").strip() or None
    ca = getattr(args, "cloud_ca_cert", None)
    if ca and not Path(ca).is_absolute() and stack:
        from ..resources_util import resolve_project_path

        ca = str(resolve_project_path(ca, Path.cwd()))
    return get_engine("dbos-cloud", domain=getattr(args, "cloud_domain", None), token=token, ca_cert=ca)


def stack_engine_settings(stack: str, cwd: str | None = None) -> dict[str, str]:
    """``dbos:engine``/``dataDir``/``runAs`` of a stack (``pulumi config --json``), as CLI option names."""
    from ..engine import proc

    cp = proc.run(["pulumi", "config", "--json", "--stack", stack], env=dict(os.environ), cwd=cwd, timeout=120,
                  hint=PULUMI_HINT)
    try:
        config = json.loads(cp.stdout or "{}")
    except json.JSONDecodeError:
        raise DbosError(f"`pulumi config --json --stack {stack}` did not print JSON", hint=PULUMI_HINT) from None
    out: dict[str, str] = {}
    for key, attr in STACK_ENGINE_KEYS.items():
        entry = config.get(key) if isinstance(config, dict) else None
        value = entry.get("value") if isinstance(entry, dict) and not entry.get("secret") else None
        if isinstance(value, str) and value:
            out[attr] = value
    return out


def password_from_stack(name: str, stack: str | None) -> str:
    """The engine keeps no passwords (only Postgres's SCRAM verifier): take it from the stack's state."""
    try:
        outs = stack_resource("Instance", "instance_name", name, stack)
    except DbosError as exc:
        raise DbosError(
            f"no password for {name!r}: {exc.message}",
            hint="run it in the Pulumi project directory with the stack's backend and passphrase set"
            + ("" if stack else ", or set PGPASSWORD")) from None
    if not outs.get("password"):
        raise DbosError(f"the stack does not know the password of {name!r}",
                        hint="run `pulumi up` so that its state has it" if stack
                        else "set PGPASSWORD")
    return str(outs["password"])


def unwrap(v: Any) -> Any:
    """A value of `pulumi stack export --show-secrets`: secrets are {sig, plaintext: json}."""
    if isinstance(v, dict) and "plaintext" in v and len(v) == 2:
        return json.loads(v["plaintext"])
    return v


def app_state(app: str, stack: str | None, cwd: str | None = None) -> dict[str, Any]:
    """The outputs of ``app`` (an AppDatabase, else an App) in a stack (needs the stack's backend and
    passphrase env). An App's are shaped like an AppDatabase's (host, port, user, its config file)."""
    try:
        return stack_resource("dbos:AppDatabase", "app_name", app, stack, cwd)
    except DbosError:
        outs = stack_resource("dbos:App", "app_name", app, stack, cwd)
    outs.update(hostname=outs.get("instance_host"), port=outs.get("instance_port"), username=outs.get("instance_user"),
                dbos_config=os.path.join(outs.get("source") or ".", "dbos-config.yaml"))
    return outs


def stack_resource(type_suffix: str, key: str, value: str, stack: str | None,
                   cwd: str | None = None) -> dict[str, Any]:
    """Outputs of the resource whose type ends with ``type_suffix`` and whose ``key`` output is ``value``."""
    from ..engine import proc

    argv = ["pulumi", "stack", "export", "--show-secrets"] + (["--stack", stack] if stack else [])
    cp = proc.run(argv, env=dict(os.environ), cwd=cwd, timeout=120, hint=PULUMI_HINT)
    try:
        deployment = json.loads(cp.stdout).get("deployment") or {}
    except (json.JSONDecodeError, AttributeError):
        raise DbosError("`pulumi stack export` did not print a deployment", hint=PULUMI_HINT) from None
    for r in deployment.get("resources") or []:
        if r.get("type", "").endswith(type_suffix):
            outs = {k: unwrap(v) for k, v in (r.get("outputs") or {}).items()}
            if outs.get(key) == value:
                return outs
    raise DbosError(f"no {type_suffix.split(':')[-1]} with {key} {value!r} in the stack",
                    hint="is it in the program / stack config, and was `pulumi up` run?")


def config_file(path: str) -> str:
    if not os.path.isfile(path):
        raise DbosError(f"{path}: no such file", hint="pass the app's dbos-config.yaml with --config PATH")
    return path

