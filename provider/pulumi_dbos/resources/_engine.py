"""Where a resource's engine comes from: its engine inputs (explicit, else the stack config, else defaults),
the provider-only settings Pulumi hands the provider process (the dbos-cloud token and CA, the local engine's
backup repository), one engine object per location, the owner id an instance is tagged with, and notices
the user reads in `pulumi preview`/`up`."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

import pulumi

from ..config.paths import resolve_project_path
from ..engine import Engine, default_data_dir, default_run_as, get_engine
from ..engine.settings import EngineSettings

Props = dict[str, Any]


_engines: dict[tuple[str, str | None, str | None, str | None], Engine] = {}
#: ``dbos:cloudToken`` and ``dbos:cloudCaCert`` as the provider process received them (``configure``):
#: read by the provider, never resource inputs, so a rotated token is no change of every resource
_provider_settings: dict[str, str | None] = {}


def engine_for(props: Props) -> Engine:
    """The engine a resource names (one object per engine and location in this process: engines hold no
    connections, and reusing one spares re-checking its data dir, or re-reading DBOS Cloud's profile and
    instance list, on every call)."""
    key = (props.get("engine") or "local", props.get("data_dir"), props.get("run_as"), props.get("cloud_domain"))
    if key not in _engines:
        name, data_dir, run_as, domain = key
        if name == "local":
            # a stack's `highAvailability` decides for its instances, not the engine's default for new ones
            settings = EngineSettings.from_env().replace(ha_members=0)
            _engines[key] = get_engine(name, data_dir, run_as, repo=repo_settings(), settings=settings)
        else:
            _engines[key] = get_engine(name, domain=domain, token=_provider_settings.get("cloudToken"),
                                       ca_cert=_provider_settings.get("cloudCaCert"))
    return _engines[key]


def _project_root() -> Path:
    here = Path.cwd()
    for d in (here, *here.parents):
        if (d / "Pulumi.yaml").is_file():
            return d
    return here


def configure_provider(config: Any) -> None:
    """Take the provider-only settings from the stack config (Pulumi's ``configure`` of a dynamic provider)."""
    for key in ("cloudToken", "cloudCaCert", "backupRepo"):
        value = config.get(f"dbos:{key}")
        if value is not None and key == "cloudCaCert":
            value = str(resolve_project_path(str(value), _project_root()))
        if value is not None and key == "backupRepo" and not isinstance(value, str):
            value = json.dumps(value)
        if value is not None:
            _provider_settings[key] = str(value)


def repo_settings() -> Any:
    """The local engine's backup repository from ``dbos:backupRepo`` (None: unset; the data dir's own)."""
    raw = _provider_settings.get("backupRepo")
    if not raw:
        return None
    from ..config.backup_repo import parse
    from ..engine.local.repo import RepoSettings

    mapping = parse(raw)
    if mapping.get("s3", {}).get("caFile"):
        mapping["s3"]["caFile"] = str(resolve_project_path(mapping["s3"]["caFile"], _project_root()))
    return RepoSettings.from_mapping(mapping)


def _backend_url() -> str:
    """Which backend holds this stack's state (two clones of a project on separate backends are two stacks)."""
    env = os.environ.get("PULUMI_BACKEND_URL")
    if env:
        return env
    with contextlib.suppress(OSError, ValueError):
        from ruamel.yaml import YAML

        project = YAML(typ="safe").load(Path("Pulumi.yaml").read_text()) or {}
        url = (project.get("backend") or {}).get("url")
        if url:
            return str(url)
    home = Path(os.environ.get("PULUMI_HOME") or Path.home() / ".pulumi")
    with contextlib.suppress(OSError, ValueError):
        return str(json.loads((home / "credentials.json").read_text()).get("current") or "")
    return ""


def owner(resource_name: str) -> str:
    """Who manages an instance, recorded by the engine at create: ``project/stack/resource#<stack id>``,
    the id a digest of the backend, organization, project and stack. A create finding an instance of
    its own owner (an interrupted earlier run) takes it over; any other owner's is refused."""
    org = ""
    with contextlib.suppress(Exception):
        org = pulumi.get_organization()
    ident = "\n".join((_backend_url(), org, pulumi.get_project(), pulumi.get_stack()))
    digest = hashlib.sha256(ident.encode()).hexdigest()[:12]
    return f"{pulumi.get_project()}/{pulumi.get_stack()}/{resource_name}#{digest}"


def engine_defaults(engine: str | None, data_dir: str | None, run_as: str | None,
                    cloud_domain: str | None = None) -> Props:
    """Engine inputs for a resource: explicit arguments, else stack config ``dbos:*``, else defaults.
    The local engine has a data dir and an OS user; the dbos-cloud engine a domain (DBOS Cloud's host)."""
    cfg = pulumi.Config("dbos")
    name = engine or cfg.get("engine") or "local"
    cloud = name == "dbos-cloud"
    return {
        "engine": name,
        "data_dir": None if cloud else str(data_dir or cfg.get("dataDir") or default_data_dir()),
        "run_as": None if cloud else (run_as or cfg.get("runAs") or default_run_as()),
        "cloud_domain": (cloud_domain or cfg.get("cloudDomain") or "cloud.dbos.dev") if cloud else None,
        "replace_on_engine_change": bool(cfg.get_bool("replaceOnEngineChange")),
    }


_engine_log: list[Any] = []


def _engine() -> Any:
    """The Pulumi engine's log service, reached at the address the engine gives its provider plugins as their
    first argument (None outside a provider process, or when it cannot be reached)."""
    if not _engine_log:
        stub = None
        addr = sys.argv[1] if len(sys.argv) > 1 and ":" in sys.argv[1] else None
        if addr and sys.modules.get("__main__") is not None and "pulumi.dynamic" in str(
                getattr(sys.modules["__main__"], "__spec__", None) or ""):
            try:
                import grpc
                from pulumi.runtime.proto import engine_pb2_grpc

                stub = engine_pb2_grpc.EngineStub(grpc.insecure_channel(addr))
            except Exception:  # noqa: BLE001 - a notice is best effort
                stub = None
        _engine_log.append(stub)
    return _engine_log[0]


def notice(message: str, *, warning: bool = False) -> None:
    """A line the user reads in `pulumi preview`/`up` (an info diagnostic through the engine's log service,
    a warning with ``warning=True`` (data at stake), else the provider's stderr); never a secret."""
    stub = _engine()
    if stub is not None:
        try:
            from pulumi.runtime.proto import engine_pb2

            severity = engine_pb2.WARNING if warning else engine_pb2.INFO
            stub.Log(engine_pb2.LogRequest(severity=severity, message=f"pulumi-dbos: {message}"), timeout=5)
            return
        except Exception:  # noqa: BLE001 - fall back to stderr
            pass
    sys.stderr.write(f"pulumi-dbos: {message}\n")
    sys.stderr.flush()
