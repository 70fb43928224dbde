"""The pydantic schema: one model per resource, and the stack config derived from them.

Each resource is described once, by a :class:`Spec` subclass whose fields carry :class:`Meta`
(replace-on-change, secret, default, stack-config key, output-only). Everything else is derived
from it: the providers' input/replace/diff/secret lists (``resources/_base.py``), the resource
classes' props, the stack config model (:func:`stack_model`), the mapping in
``stacks/__main__.py`` and the README's reference table (:func:`reference_markdown`).

Every rule lives here once and is used by the providers' ``check()`` (so bad values fail at
``pulumi preview``) and by the stack program (which reports all problems of a stack config at
once, each with its config path). Values still *unknown* during a preview are skipped.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, create_model
from pydantic.alias_generators import to_camel
from pydantic.fields import FieldInfo

from .timeutil import parse_rfc3339

# Pulumi's marker for a value not known until apply (pulumi.runtime.rpc.UNKNOWN).
UNKNOWN = "04da6b54-80e4-46f7-96ec-b56ff0331ba9"

RESERVED_USERNAMES = frozenset({"dbosadmin", "dbos", "postgres", "admin"})
_NAME = re.compile(r"^[a-z0-9_]{3,16}$")
_FORBIDDEN_PW = set("@/\\\"'")
MAX_RETENTION_HOURS = 720


def is_unknown(v: Any) -> bool:
    return isinstance(v, str) and v == UNKNOWN


# ---------------------------------------------------------------------------- field rules
def check_name(v: str, what: str = "name") -> str:
    if is_unknown(v):
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
    if is_unknown(v):
        return v
    check_name(v, "username")
    if not v[0].isalpha():
        raise ValueError(f"username must start with a letter, got {v!r}")
    if v in RESERVED_USERNAMES:
        raise ValueError(f"username {v!r} is reserved (reserved: {', '.join(sorted(RESERVED_USERNAMES))})")
    return v


def check_password(v: str | None) -> str | None:
    """8-128 characters; none of @ / \\ \" ' and no whitespace. Never echoes the value."""
    if v is None or is_unknown(v):
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
    if is_unknown(v) or v == "latest":
        return v
    try:
        parse_rfc3339(v)
    except ValueError as exc:
        raise ValueError(f"restore_time: {exc}") from None
    return v


def check_port(v: int | None) -> int | None:
    if v is None or is_unknown(v):
        return v
    if not isinstance(v, int) or isinstance(v, bool) or not 1024 <= v <= 65535:
        raise ValueError(f"port must be an integer in 1024-65535, got {v!r}")
    return v


def check_retention(v: int | None) -> int | None:
    if v is None or is_unknown(v):
        return v
    if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= MAX_RETENTION_HOURS:
        raise ValueError(f"retention_hours must be an integer in 1-{MAX_RETENTION_HOURS}, got {v!r}")
    return v


def check_hostname(v: str) -> str:
    if is_unknown(v):
        return v
    if not isinstance(v, str) or not re.match(r"^[A-Za-z0-9.\-:\[\]]{1,253}$", v):
        raise ValueError(f"hostname must be a DNS name or IP address, got {v!r}")
    return v


def check_db_name(v: str | None) -> str | None:
    if v is None or is_unknown(v):
        return v
    if not isinstance(v, str) or not re.match(r"^[a-z_][a-z0-9_]{0,62}$", v):
        raise ValueError(f"app_db_name must be 1-63 characters of [a-z0-9_] starting with a letter or _, got {v!r}")
    return v


def check_commands(v: list[str] | None) -> list[str] | None:
    if v is None or is_unknown(v):
        return v
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise ValueError("must be a list of command strings")
    return v


InstanceName = Annotated[str, AfterValidator(check_instance_name)]
Username = Annotated[str, AfterValidator(check_username)]
LinkedUsername = Annotated[str, AfterValidator(lambda v: check_name(v, "username"))]
Password = Annotated[str, AfterValidator(check_password)]
OptionalPassword = Annotated[str | None, AfterValidator(check_password)]
Port = Annotated[int | None, AfterValidator(check_port)]
Retention = Annotated[int, AfterValidator(check_retention)]
OptionalRetention = Annotated[int | None, AfterValidator(check_retention)]
RestoreTime = Annotated[str, AfterValidator(check_restore_time)]
Hostname = Annotated[str, AfterValidator(check_hostname)]
AppName = Annotated[str, AfterValidator(check_app_name)]
DbName = Annotated[str | None, AfterValidator(check_db_name)]
Commands = Annotated[list[str] | None, AfterValidator(check_commands)]


# ---------------------------------------------------------------------------- field metadata
@dataclass(frozen=True)
class Meta:
    """How a resource field behaves; read by the provider base, the stack program and the docs.

    - ``replace``: a change replaces the resource (preview says so);
    - ``secret``: kept secret in the state (inputs are wrapped, outputs listed as secret outputs);
    - ``stack``: settable per entry in the stack config (key = camelCase name); the entry's own
      key gives ``name_field``, engine fields come from top-level ``dbos:*`` keys;
    - ``output``: set by the provider, not an input;
    - ``diffed``: compared by ``diff()`` (False for informative inputs such as ``adopt``);
    - ``ref``: the value names another resource of the stack config (``instance``);
    - ``path``: a path, relative to the project root in the stack config;
    - ``provider``: False for a user-facing argument the resource class turns into other props.
    """

    doc: str = ""
    replace: bool = False
    secret: bool = False
    stack: bool = True
    output: bool = False
    diffed: bool = True
    ref: str | None = None
    path: bool = False
    provider: bool = True


def meta_of(info: FieldInfo) -> Meta:
    for m in info.metadata:
        if isinstance(m, Meta):
            return m
    return Meta()


class Spec(BaseModel):
    """A resource's inputs and outputs. Subclasses set ``stack_section`` and ``name_field``."""

    model_config = ConfigDict(extra="forbid", strict=False)

    stack_section: ClassVar[str] = ""
    name_field: ClassVar[str] = "instance_name"
    #: "instance" for the kinds an app can bind to
    is_instance: ClassVar[bool] = True

    # engine selection, common to all resources; from the top-level stack config keys
    engine: Annotated[str, Meta("engine (`dbos:engine`)", replace=True, stack=False)] = "local"
    data_dir: Annotated[str | None, Meta("engine data dir (`dbos:dataDir`)", replace=True, stack=False)] = None
    run_as: Annotated[str | None, Meta("OS user running the clusters as root (`dbos:runAs`)", replace=True,
                                       stack=False)] = None
    replace_on_engine_change: Annotated[bool, Meta(
        "allow a change of engine, data_dir or run_as to replace an instance (its data is deleted); "
        "stack config `dbos:replaceOnEngineChange`", stack=False, diffed=False)] = False
    owner: Annotated[str | None, Meta("the managing stack and resource (set by the resource class)",
                                      stack=False, diffed=False)] = None

    @classmethod
    def fields(cls, **want: Any) -> list[str]:
        """Names of the fields whose Meta matches ``want`` (e.g. ``replace=True``)."""
        return [n for n, f in cls.model_fields.items()
                if all(getattr(meta_of(f), k) == v for k, v in want.items())]

    @classmethod
    def inputs(cls) -> list[str]:
        return [n for n in cls.fields(output=False) if meta_of(cls.model_fields[n]).provider]

    @classmethod
    def outputs(cls) -> list[str]:
        return cls.fields(output=True)

    @classmethod
    def secrets(cls) -> list[str]:
        return cls.fields(secret=True)

    @classmethod
    def replace_keys(cls) -> list[str]:
        return cls.fields(replace=True, output=False)

    @classmethod
    def diff_keys(cls) -> list[str]:
        return [n for n in cls.inputs() if meta_of(cls.model_fields[n]).diffed]

    @classmethod
    def engine_keys(cls) -> list[str]:
        return ["engine", "data_dir", "run_as"]


class DatabaseInstanceSpec(Spec):
    """A real PostgreSQL instance (`dbos-cloud db provision`)."""

    stack_section: ClassVar[str] = "instances"

    instance_name: Annotated[InstanceName, Meta("the instance's name (the stack config entry's key)", replace=True,
                                                stack=False)]
    username: Annotated[Username, Meta("its user (like RDS's master user)", replace=True)]
    password: Annotated[Password, Meta("the user's password; a change resets it in place", secret=True)]
    retention_hours: Annotated[Retention, Meta("hours of PITR window kept")] = 24
    deletion_protection: Annotated[bool, Meta("refuse deletion (also sets Pulumi's `protect`)")] = False
    port: Annotated[Port, Meta("TCP port (default: allocated)")] = None
    adopt: Annotated[bool, Meta("take over an existing instance of that name", diffed=False)] = False

    status: Annotated[str | None, Meta("`available`, `stopped`, `credentials_invalid`, ...", output=True,
                                       stack=False)] = None
    hostname: Annotated[str | None, Meta("where it listens", output=True, stack=False)] = None
    database_url: Annotated[str | None, Meta("postgresql:// URL with the password", output=True, stack=False,
                                             secret=True)] = None
    is_linked: Annotated[bool | None, Meta("False", output=True, stack=False)] = None
    earliest_restorable_time: Annotated[str | None, Meta("start of the PITR window", output=True,
                                                         stack=False)] = None
    latest_restorable_time: Annotated[str | None, Meta("end of the PITR window", output=True, stack=False)] = None


class RestoredInstanceSpec(Spec):
    """A new instance holding `source`'s data as of `restore_time` (`dbos-cloud db restore`)."""

    stack_section: ClassVar[str] = "restores"

    instance_name: Annotated[InstanceName, Meta("the new instance's name (the stack config entry's key)",
                                                replace=True, stack=False)]
    source: Annotated[InstanceName, Meta("the instance restored from", replace=True, ref="instance")]
    restore_time: Annotated[RestoreTime, Meta("RFC3339 with an offset, or `latest`", replace=True)]
    password: Annotated[OptionalPassword, Meta("the user's password (default: the source's); a change resets it",
                                               secret=True)] = None
    retention_hours: Annotated[OptionalRetention, Meta("hours of PITR window kept (default: the source's)")] = None
    deletion_protection: Annotated[bool, Meta("refuse deletion (also sets Pulumi's `protect`)")] = False
    port: Annotated[Port, Meta("TCP port (default: allocated)")] = None

    status: Annotated[str | None, Meta("`available`, `stopped`, `credentials_invalid`, ...", output=True,
                                       stack=False)] = None
    hostname: Annotated[str | None, Meta("where it listens", output=True, stack=False)] = None
    username: Annotated[str | None, Meta("the source's user", output=True, stack=False)] = None
    database_url: Annotated[str | None, Meta("postgresql:// URL with the password", output=True, stack=False,
                                             secret=True)] = None
    is_linked: Annotated[bool | None, Meta("False", output=True, stack=False)] = None
    source_instance: Annotated[str | None, Meta("the source's name", output=True, stack=False)] = None
    restored_to: Annotated[str | None, Meta("the time restored to (`latest` resolved)", output=True,
                                            stack=False)] = None
    earliest_restorable_time: Annotated[str | None, Meta("start of the PITR window", output=True,
                                                         stack=False)] = None
    latest_restorable_time: Annotated[str | None, Meta("end of the PITR window", output=True, stack=False)] = None


class LinkedInstanceSpec(Spec):
    """An existing Postgres server, registered (`dbos-cloud db link`); destroy only unlinks."""

    stack_section: ClassVar[str] = "linked"

    instance_name: Annotated[InstanceName, Meta("the name it is known by (the stack config entry's key)",
                                                replace=True, stack=False)]
    hostname: Annotated[Hostname, Meta("the server's host")]
    port: Annotated[Annotated[int, AfterValidator(check_port)], Meta("the server's port")] = 5432
    username: Annotated[LinkedUsername, Meta("a user on it")]
    password: Annotated[Password, Meta("that user's password (verified, not stored by the engine)", secret=True)]

    status: Annotated[str | None, Meta("`available` or `unreachable`", output=True, stack=False)] = None
    database_url: Annotated[str | None, Meta("postgresql:// URL with the password", output=True, stack=False,
                                             secret=True)] = None
    is_linked: Annotated[bool | None, Meta("True", output=True, stack=False)] = None


class AppDatabaseSpec(Spec):
    """An app's database on an instance, its migrations, and change-database-instance."""

    stack_section: ClassVar[str] = "apps"
    name_field: ClassVar[str] = "app_name"
    is_instance: ClassVar[bool] = False

    app_name: Annotated[AppName, Meta("the app's name (the stack config entry's key)", replace=True, stack=False)]
    instance: Annotated[InstanceName, Meta("the instance it is bound to; a change = change-database-instance",
                                           ref="instance", provider=False)]
    # what the resource class takes from `instance` (known at preview for an existing instance)
    instance_name: Annotated[str | None, Meta("the bound instance's name", stack=False)] = None
    instance_host: Annotated[str | None, Meta("the bound instance's host", stack=False)] = None
    instance_port: Annotated[int | None, Meta("the bound instance's port", stack=False)] = None
    instance_user: Annotated[str | None, Meta("the bound instance's user", stack=False)] = None
    instance_password: Annotated[str | None, Meta("the bound instance's password", stack=False, secret=True)] = None
    app_db_name: Annotated[DbName, Meta("its database (default: from dbos_config, else app_name)", replace=True)] = None
    migrate: Annotated[Commands, Meta("commands run on create, instance change and list change")] = None
    rollback: Annotated[Commands, Meta("commands `pulumi-dbos app rollback` runs")] = None
    working_dir: Annotated[str | None, Meta("where the commands run (default: dbos_config's directory)",
                                            path=True)] = None
    dbos_config: Annotated[str | None, Meta("a dbos-config.yaml to read app_db_name/migrate/rollback from",
                                            path=True)] = None
    app_version: Annotated[str | None, Meta("informative version label")] = None
    drop_on_delete: Annotated[bool, Meta("drop the database when the binding is deleted")] = False
    owner_role: Annotated[bool, Meta("a role `<app>_owner` owning only this database")] = False

    hostname: Annotated[str | None, Meta("the instance's host", output=True, stack=False)] = None
    port: Annotated[int | None, Meta("the instance's port", output=True, stack=False)] = None
    username: Annotated[str | None, Meta("the instance's user", output=True, stack=False)] = None
    database_url: Annotated[str | None, Meta("URL of the app's database", output=True, stack=False,
                                             secret=True)] = None
    owner_database_url: Annotated[str | None, Meta("URL as the owner role", output=True, stack=False,
                                                   secret=True)] = None
    owner_password: Annotated[str | None, Meta("the owner role's password", output=True, stack=False,
                                               secret=True)] = None
    migrated_at: Annotated[str | None, Meta("when `migrate` last ran", output=True, stack=False)] = None


SPECS: tuple[type[Spec], ...] = (DatabaseInstanceSpec, RestoredInstanceSpec, LinkedInstanceSpec, AppDatabaseSpec)


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


# ---------------------------------------------------------------------------- stack config (DESIGN §3)
#: top-level ``dbos:*`` keys that are not sections: stack key -> resource field
ENGINE_SETTINGS = {"engine": "engine", "dataDir": "data_dir", "runAs": "run_as",
                   "replaceOnEngineChange": "replace_on_engine_change"}


def _derived(spec: type[Spec], names: list[str], model_name: str, camel: bool) -> type[BaseModel]:
    fields: dict[str, Any] = {}
    for name in names:
        info = spec.model_fields[name]
        fields[name] = (Annotated[(info.annotation, *info.metadata)] if info.metadata else info.annotation,
                        info.default if not info.is_required() else ...)
    config = ConfigDict(extra="forbid", alias_generator=to_camel, populate_by_name=True) if camel else \
        ConfigDict(extra="forbid")
    return create_model(model_name, __config__=config, **fields)  # type: ignore[call-overload, no-any-return]


def stack_model(spec: type[Spec]) -> type[BaseModel]:
    """The stack config entry model of ``spec``: its ``stack`` fields, camelCase keys, same rules."""
    return _derived(spec, spec.fields(stack=True, output=False), f"{spec.__name__.removesuffix('Spec')}Cfg", True)


def input_model(spec: type[Spec]) -> type[BaseModel]:
    """What the provider's ``check()`` validates: the provider inputs of ``spec``, same rules."""
    return _derived(spec, spec.inputs(), f"{spec.__name__.removesuffix('Spec')}Inputs", False)


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
