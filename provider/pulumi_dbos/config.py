"""The pydantic schema: resource inputs and the stack config (DESIGN §2, §3).

Every rule lives here once and is used by the providers' ``check()`` (so bad
values fail at ``pulumi preview``) and by the stack program (which reports all
problems of a stack config at once, each with its config path).

Values that are still *unknown* during a preview (Pulumi's sentinel string) are
skipped, never rejected.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
)
from pydantic.alias_generators import to_camel

from .timeutil import parse_rfc3339

# Pulumi's marker for a value not known until apply (pulumi.runtime.rpc.UNKNOWN).
UNKNOWN = "04da6b54-80e4-46f7-96ec-b56ff0331ba9"

RESERVED_USERNAMES = frozenset({"dbosadmin", "dbos", "postgres", "admin"})
_NAME = re.compile(r"^[a-z0-9_]{3,16}$")
_FORBIDDEN_PW = set("@/\\\"'")
MAX_RETENTION_HOURS = 720


def _is_unknown(v: Any) -> bool:
    return isinstance(v, str) and v == UNKNOWN


def check_name(v: str, what: str = "name") -> str:
    if _is_unknown(v):
        return v
    if not isinstance(v, str) or not _NAME.match(v):
        raise ValueError(f"{what} must be 3-16 characters of lowercase letters, digits and underscores "
                         f"([a-z0-9_]{{3,16}}), got {v!r}")
    return v


def check_instance_name(v: str) -> str:
    return check_name(v, "instance_name")


def check_app_name(v: str) -> str:
    return check_name(v, "app_name")


def check_username(v: str) -> str:
    if _is_unknown(v):
        return v
    check_name(v, "username")
    if not v[0].isalpha():
        raise ValueError(f"username must start with a letter, got {v!r}")
    if v in RESERVED_USERNAMES:
        raise ValueError(f"username {v!r} is reserved (reserved: {', '.join(sorted(RESERVED_USERNAMES))})")
    return v


def check_password(v: str) -> str:
    """8-128 characters; none of @ / \\ \" ' and no whitespace. Never echoes the value."""
    if _is_unknown(v):
        return v
    if not isinstance(v, str):
        raise ValueError("password must be a string")
    if not 8 <= len(v) <= 128:
        raise ValueError(f"password must be 8-128 characters long (got {len(v)})")
    bad = sorted({c for c in v if c in _FORBIDDEN_PW})
    if bad:
        raise ValueError(f"password must not contain {' '.join(bad)} (forbidden: @ / \\ \" ')")
    if any(c.isspace() for c in v):
        raise ValueError("password must not contain whitespace")
    if any(ord(c) < 32 or ord(c) == 127 for c in v):
        raise ValueError("password must not contain control characters")
    return v


def check_restore_time(v: str) -> str:
    if _is_unknown(v) or v == "latest":
        return v
    try:
        parse_rfc3339(v)
    except ValueError as exc:
        raise ValueError(f"restore_time: {exc}") from None
    return v


def check_port(v: int | None) -> int | None:
    if v is None or _is_unknown(v):
        return v
    if not isinstance(v, int) or isinstance(v, bool) or not 1024 <= v <= 65535:
        raise ValueError(f"port must be an integer in 1024-65535, got {v!r}")
    return v


def check_retention(v: int) -> int:
    if _is_unknown(v):
        return v
    if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= MAX_RETENTION_HOURS:
        raise ValueError(f"retention_hours must be an integer in 1-{MAX_RETENTION_HOURS}, got {v!r}")
    return v


def check_hostname(v: str) -> str:
    if _is_unknown(v):
        return v
    if not isinstance(v, str) or not re.match(r"^[A-Za-z0-9.\-:\[\]]{1,253}$", v):
        raise ValueError(f"hostname must be a DNS name or IP address, got {v!r}")
    return v


def check_db_name(v: str | None) -> str | None:
    if v is None or _is_unknown(v):
        return v
    if not isinstance(v, str) or not re.match(r"^[a-z_][a-z0-9_]{0,62}$", v):
        raise ValueError(f"app_db_name must be 1-63 characters of [a-z0-9_] starting with a letter or _, got {v!r}")
    return v


InstanceName = Annotated[str, AfterValidator(check_instance_name)]
Username = Annotated[str, AfterValidator(check_username)]
Password = Annotated[str, AfterValidator(check_password)]
Port = Annotated[int | None, AfterValidator(check_port)]
Retention = Annotated[int, AfterValidator(check_retention)]
RestoreTime = Annotated[str, AfterValidator(check_restore_time)]
Hostname = Annotated[str, AfterValidator(check_hostname)]
AppName = Annotated[str, AfterValidator(check_app_name)]
DbName = Annotated[str | None, AfterValidator(check_db_name)]


class _Args(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=False)

    engine: str = "local"
    data_dir: str | None = None
    run_as: str | None = None
    owner: str | None = None


class _InstanceFields(BaseModel):
    """Fields shared by the resource inputs and the stack config (each rule written once)."""

    username: Username
    password: Password
    retention_hours: Retention = 24
    deletion_protection: bool = False
    port: Port = None
    adopt: bool = False


class _RestoreFields(BaseModel):
    source: InstanceName
    restore_time: RestoreTime
    deletion_protection: bool = False
    port: Port = None


class _LinkedFields(BaseModel):
    hostname: Hostname
    port: Annotated[int, AfterValidator(check_port)] = 5432
    username: Annotated[str, AfterValidator(lambda v: check_name(v, "username"))]
    password: Password


class InstanceArgs(_Args, _InstanceFields):
    instance_name: InstanceName


class RestoreArgs(_Args, _RestoreFields):
    instance_name: InstanceName
    retention_hours: Retention | None = None


class LinkedArgs(_Args, _LinkedFields):
    instance_name: InstanceName


def validate(model: type[BaseModel], values: dict[str, Any]) -> list[tuple[str, str]]:
    """Validate ``values`` against ``model``; return ``(field, rule)`` problems (unknowns skipped)."""
    unknown = {k for k, v in values.items() if _is_unknown(v)}
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


# ---------------------------------------------------------------------------- stack config (DESIGN §3)
class _Cfg(BaseModel):
    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, populate_by_name=True)


class InstanceCfg(_Cfg, _InstanceFields):
    pass


class RestoreCfg(_Cfg, _RestoreFields):
    pass


class LinkedCfg(_Cfg, _LinkedFields):
    pass


class AppCfg(_Cfg):
    instance: InstanceName
    app_db_name: DbName = None
    migrate: list[str] | None = None
    rollback: list[str] | None = None
    working_dir: str | None = None
    dbos_config: str | None = None
    app_version: str | None = None
    drop_on_delete: bool = False


class StackConfig(BaseModel):
    """The whole ``dbos:*`` namespace of a stack."""

    model_config = ConfigDict(extra="forbid")

    engine: str = "local"
    dataDir: str | None = None  # noqa: N815 - config key
    runAs: str | None = None  # noqa: N815 - config key
    instances: dict[InstanceName, InstanceCfg] = Field(default_factory=dict)
    restores: dict[InstanceName, RestoreCfg] = Field(default_factory=dict)
    linked: dict[InstanceName, LinkedCfg] = Field(default_factory=dict)
    apps: dict[AppName, AppCfg] = Field(default_factory=dict)



def _reference_problems(raw: dict[str, Any]) -> list[str]:
    """Cross-references of the raw config (checked even when fields have errors, to report all at once)."""
    problems: list[str] = []
    engine = raw.get("engine", "local")
    if engine != "local":
        problems.append(f"dbos:engine: {engine!r} is not available (use 'local')")
    seen: dict[str, str] = {}
    def entries_of(key: str) -> dict[str, Any]:
        v = raw.get(key)
        return v if isinstance(v, dict) else {}

    sections = {k: entries_of(k) for k in ("instances", "restores", "linked")}
    for section, entries in sections.items():
        for name in entries:
            if name in seen:
                problems.append(f"dbos:{section}.{name}: duplicate instance name (also in dbos:{seen[name]})")
            seen.setdefault(name, section)
    for name, r in sections["restores"].items():
        src = r.get("source") if isinstance(r, dict) else None
        if not isinstance(src, str):
            continue
        if src not in seen:
            problems.append(f"dbos:restores.{name}.source: instance {src!r} is not defined")
        elif seen[src] == "linked":
            problems.append(f"dbos:restores.{name}.source: {src!r} is a linked instance; "
                            "point-in-time restore needs a local instance")
    for name, a in entries_of("apps").items():
        inst = a.get("instance") if isinstance(a, dict) else None
        if isinstance(inst, str) and inst not in seen:
            problems.append(f"dbos:apps.{name}.instance: instance {inst!r} is not defined")
    return problems


def validate_stack_config(raw: dict[str, Any]) -> tuple[StackConfig | None, list[str]]:
    """Validate the ``dbos:*`` config; return (config, problems) with paths like ``dbos:instances.x.password``."""
    out: list[str] = []
    cfg: StackConfig | None = None
    try:
        cfg = StackConfig.model_validate(raw)
    except ValidationError as exc:
        for err in exc.errors(include_input=False):
            loc = [str(p) for p in err["loc"]]
            out.append(f"dbos:{'.'.join(loc)}: {_clean(err['msg'], err['type'])}")
    out += _reference_problems(raw)
    return (cfg if not out else None), out
