"""What the commands share: the engine a command names (options, else its stack, else defaults), and
values read from a stack (`pulumi config`, `pulumi stack export`).

Where the engine settings come from, first found wins: the command's options (``--engine``,
``--data-dir``, ``--run-as``, ``--cloud-domain``, ``--cloud-ca-cert``); the stack named by ``--stack S``;
``$PULUMI_DBOS_ENGINE``/``$PULUMI_DBOS_DATA_DIR``; the stack selected in the Pulumi project the command
runs in (said on stderr); ``$DBOS_DOMAIN``/``$PULUMI_DBOS_CLOUD_CA_CERT``; the defaults.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

from ..engine import default_data_dir, get_engine
from ..engine.settings import EngineSettings
from ..errors import DbosError

PULUMI_HINT = "run it in the Pulumi project directory, with PULUMI_CONFIG_PASSPHRASE and the backend set"

#: stack config key -> CLI option (``args`` attribute) for the engine settings
STACK_ENGINE_KEYS = {"dbos:engine": "engine", "dbos:dataDir": "data_dir", "dbos:runAs": "run_as",
                     "dbos:cloudDomain": "cloud_domain", "dbos:cloudCaCert": "cloud_ca_cert"}
#: the environment default of ``--cloud-ca-cert`` (the official CLI's ``$DBOS_DOMAIN`` is ``--cloud-domain``'s)
CA_CERT_ENV = "PULUMI_DBOS_CLOUD_CA_CERT"


def find_project(start: Path | None = None) -> Path | None:
    """The Pulumi project directory holding ``start`` (the current directory): where Pulumi.yaml is."""
    here = (start or Path.cwd()).resolve()
    for d in (here, *here.parents):
        if (d / "Pulumi.yaml").is_file() or (d / "Pulumi.yml").is_file():
            return d
    return None


def _backend_url(project: Path, doc: dict[str, Any]) -> str:
    url = os.environ.get("PULUMI_BACKEND_URL") or (doc.get("backend") or {}).get("url")
    if url:
        return str(url)
    home = Path(os.environ.get("PULUMI_HOME") or Path.home() / ".pulumi")
    with contextlib.suppress(OSError, ValueError, AttributeError):
        return str(json.loads((home / "credentials.json").read_text()).get("current") or "")
    return ""


def selected_stack(start: Path | None = None) -> tuple[str, Path] | None:
    """The stack selected (`pulumi stack select`) in the project holding the current directory, and that
    project's directory; read from Pulumi's workspace file, as `pulumi stack --show-name` does, without
    running pulumi or needing its backend. None outside a project or when none is selected."""
    project = find_project(start)
    if project is None:
        return None
    path = project / "Pulumi.yaml" if (project / "Pulumi.yaml").is_file() else project / "Pulumi.yml"
    try:
        from ruamel.yaml import YAML

        doc = YAML(typ="safe").load(path.read_text()) or {}
        name = str(doc["name"])
        home = Path(os.environ.get("PULUMI_HOME") or Path.home() / ".pulumi")
        digest = hashlib.sha1(str(path).encode()).hexdigest()  # noqa: S324 (Pulumi's file name, not security)
        ws = json.loads((home / "workspaces" / f"{name}-{digest}-workspace.json").read_text())
    except (OSError, ValueError, KeyError, TypeError, AttributeError, ImportError):
        return None
    except Exception:  # a YAML error: not a project the CLI can read; no default stack
        return None
    stacks = ws.get("stacks") if isinstance(ws, dict) else None
    ref = stacks.get(_backend_url(project, doc)) if isinstance(stacks, dict) else None
    ref = ref or (ws.get("stack") if isinstance(ws, dict) else None)
    if not isinstance(ref, str) or not ref:
        return None
    return ref.rsplit("/", 1)[-1], project


def resolve_stack(args: argparse.Namespace) -> tuple[str | None, Path | None]:
    """The stack whose settings a command uses, and the directory to run pulumi in: ``--stack S``, else (when
    neither the options nor ``$PULUMI_DBOS_ENGINE``/``$PULUMI_DBOS_DATA_DIR`` say where the engine is) the
    stack selected in the current project, which is said on stderr."""
    if getattr(args, "stack", None):
        project = find_project()
        return args.stack, project
    if any(getattr(args, a, None) for a in ("engine", "data_dir", "cloud_domain")) or \
            os.environ.get("PULUMI_DBOS_ENGINE") or EngineSettings.from_env().data_dir:
        return None, None
    found = selected_stack()
    if found is None:
        return None, None
    name, project = found
    print(f"pulumi-dbos: using stack {name!r}, selected in {project} (--stack S for another)", file=sys.stderr)
    return name, project



def engine_from_args(args: argparse.Namespace, *, new_ok: bool = False) -> Any:
    """The engine of an existing data dir: read commands never create one (see the module docstring for
    where its settings come from). ``new_ok``: an empty data dir is fine when the backup repository is
    given (``db recover`` on a new machine: the repository is all that is left)."""
    stack, project = resolve_stack(args)
    args.engine_stack, args.project_dir = stack, project
    repo = None
    if stack:
        for attr, value in stack_engine_settings(stack, cwd=str(project) if project else None).items():
            if getattr(args, attr, None) is None:
                setattr(args, attr, value)
        if new_ok:  # other commands use what the data dir's repository configuration says (no pulumi call)
            repo = stack_backup_repo(stack, project)
    engine = args.engine or os.environ.get("PULUMI_DBOS_ENGINE") or "local"
    if engine == "dbos-cloud":
        return _cloud_engine(args)
    data_dir = Path(args.data_dir).expanduser() if args.data_dir else default_data_dir()
    try:
        has_catalog = (data_dir / "catalog.db").is_file()
    except PermissionError:
        raise DbosError(f"data dir {data_dir} is not readable by this user",
                        hint="run it as root or as the OS user that runs the clusters (dbos:runAs)") from None
    if repo is None and EngineSettings.from_env().backup_repo:
        from ..engine.local.repo import RepoSettings

        repo = RepoSettings.from_env()
    given = {"repo": repo} if repo is not None else {}  # else the data dir's own repository configuration
    if not has_catalog and new_ok and (repo is not None or (data_dir / "pgbackrest").is_dir()):
        return get_engine(engine, str(data_dir), args.run_as, **given)
    if not has_catalog:
        what = "does not exist" if not data_dir.exists() else "has no catalog.db (no instance was created there)"
        raise DbosError(
            f"data dir {data_dir} {what}",
            hint="pass the data dir the stack uses: --data-dir DIR (its `dbos:dataDir`), or --stack S (the stack's "
            "settings); without either, $PULUMI_DBOS_DATA_DIR, the project's selected stack or the default is used")
    return get_engine(engine, str(data_dir), args.run_as, **given)


def stack_backup_repo(stack: str, project: Path | None) -> Any:
    """The stack's ``dbos:backupRepo`` (secrets decrypted by pulumi: needs the stack's passphrase), or None."""
    from ..config.backup_repo import parse
    from ..config.paths import resolve_project_path
    from ..engine import proc
    from ..engine.local.repo import RepoSettings

    cp = proc.run(["pulumi", "config", "get", "dbos:backupRepo", "--stack", stack], env=dict(os.environ),
                  cwd=str(project) if project else None, timeout=120, check=False)
    text = (cp.stdout or "").strip()
    if cp.returncode != 0 or not text:
        return None
    try:
        mapping = parse(text)
    except ValueError as exc:
        raise DbosError(str(exc), hint="fix the stack's dbos:backupRepo (`pulumi config --stack S`)") from None
    if mapping.get("s3", {}).get("caFile"):
        mapping["s3"]["caFile"] = str(resolve_project_path(mapping["s3"]["caFile"], project or Path.cwd()))
    return RepoSettings.from_mapping(mapping)


def _cloud_engine(args: argparse.Namespace) -> Any:
    """The dbos-cloud engine: the domain and CA certificate from the options, the stack, then
    ``$DBOS_DOMAIN``/``$PULUMI_DBOS_CLOUD_CA_CERT``; the token from ``$DBOS_CLOUD_TOKEN``, else the stack's
    ``dbos:cloudToken`` secret, else the DBOS CLI's ``.dbos/credentials`` in the current directory (the
    engine's own fallback)."""
    token = os.environ.get("DBOS_CLOUD_TOKEN")
    stack = getattr(args, "engine_stack", None)
    project = getattr(args, "project_dir", None)
    if not token and stack:
        from ..engine import proc

        cp = proc.run(["pulumi", "config", "get", "dbos:cloudToken", "--stack", stack], env=dict(os.environ),
                      cwd=str(project) if project else None, timeout=120, check=False)
        token = (cp.stdout or "").strip() or None
    ca = getattr(args, "cloud_ca_cert", None) or os.environ.get(CA_CERT_ENV) or None
    if ca and not Path(ca).is_absolute() and stack:
        from ..config.paths import resolve_project_path

        ca = str(resolve_project_path(ca, project or Path.cwd()))
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
    outs.update(kind="App", hostname=outs.get("instance_host"), port=outs.get("instance_port"),
                username=outs.get("instance_user"), dbos_config=os.path.join(outs.get("source") or ".", "dbos-config.yaml"))
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

