"""One model per resource: fields with :class:`Meta` (replace, secret, default, stack key, output).

Everything about a resource is derived from its Spec: the providers' input/replace/diff/secret
lists (``resources/_base.py``), the resource classes' props, the stack config entry model
(``config/stack.py``), the stack program's mapping and the README's reference table.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar

from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError, create_model
from pydantic.alias_generators import to_camel
from pydantic.fields import FieldInfo

from .fields import Fields, is_unknown
from .rules import (
    AppName,
    Commands,
    DbName,
    Hostname,
    InstanceName,
    LinkedUsername,
    OptionalPassword,
    OptionalRetention,
    Password,
    Port,
    RestoreTime,
    Retention,
    Username,
    check_port,
)


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
    - ``provider``: False for a user-facing argument the resource class turns into other props;
    - ``computed``: an input the resource class or ``check()`` fills in (from ``instance``, the source).
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
    computed: bool = False


def meta_of(info: FieldInfo) -> Meta:
    for m in info.metadata:
        if isinstance(m, Meta):
            return m
    return Meta()


class Spec(BaseModel):
    """A resource's inputs and outputs. Subclasses set ``stack_section`` and ``name_field``."""

    # a Spec is never validated itself (its fields' metadata is read; ``input_model``/``stack_model`` validate):
    # deferring its pydantic schema spares every program and provider process building one per Spec (~0.1 s)
    model_config = ConfigDict(extra="forbid", strict=False, defer_build=True)

    stack_section: ClassVar[str] = ""
    name_field: ClassVar[str] = "instance_name"
    #: "instance" for the kinds an app can bind to
    is_instance: ClassVar[bool] = True
    #: a stack config key that selects this Spec among others of the same section
    discriminator: ClassVar[str | None] = None

    # engine selection, common to all resources; from the top-level stack config keys
    engine: Annotated[str, Meta("engine (`dbos:engine`)", replace=True, stack=False)] = "local"
    data_dir: Annotated[str | None, Meta("engine data dir (`dbos:dataDir`)", replace=True, stack=False)] = None
    run_as: Annotated[str | None, Meta("OS user running the clusters as root (`dbos:runAs`)", replace=True,
                                       stack=False)] = None
    cloud_domain: Annotated[str | None, Meta("DBOS Cloud's API host[:port] for `engine: dbos-cloud` "
                                             "(`dbos:cloudDomain`, default `cloud.dbos.dev`)", replace=True,
                                             stack=False)] = None
    replace_on_engine_change: Annotated[bool, Meta(
        "allow a change of engine, data_dir, run_as or cloud_domain to replace an instance (its data is deleted); "
        "stack config `dbos:replaceOnEngineChange`", stack=False, diffed=False)] = False
    owner: Annotated[str | None, Meta("the managing stack and resource (set by the resource class)",
                                      stack=False, diffed=False)] = None

    @classmethod
    def fields(cls, **want: Any) -> list[str]:
        """Names of the fields whose Meta matches ``want`` (e.g. ``replace=True``)."""
        return list(_fields(cls, tuple(sorted(want.items()))))

    @classmethod
    def inputs(cls) -> list[str]:
        return list(_inputs(cls))

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
        return list(_diff_keys(cls))

    @classmethod
    def engine_keys(cls) -> list[str]:
        return list(Fields.engine_keys)

    @classmethod
    def arguments(cls) -> list[str]:
        """What the resource class takes: the stack fields, the name, and (instances) the engine settings."""
        engine = [*cls.engine_keys(), "replace_on_engine_change"] if cls.is_instance else []
        return [n for n in cls.fields(output=False)
                if meta_of(cls.model_fields[n]).stack or n == cls.name_field or n in engine]


class _ServerOutputs(Spec):
    """Outputs of the instances the engine runs (provisioned and restored)."""

    status: Annotated[str | None, Meta("`available`, `stopped`, `credentials_invalid`, ...", output=True,
                                       stack=False)] = None
    hostname: Annotated[str | None, Meta("where it listens", output=True, stack=False)] = None
    database_url: Annotated[str | None, Meta("postgresql:// URL with the password", output=True, stack=False,
                                             secret=True)] = None
    is_linked: Annotated[bool | None, Meta("False", output=True, stack=False)] = None
    earliest_restorable_time: Annotated[str | None, Meta("start of the PITR window", output=True,
                                                         stack=False)] = None
    latest_restorable_time: Annotated[str | None, Meta("end of the PITR window", output=True, stack=False)] = None
    kept_after_destroy_hours: Annotated[int | None, Meta(
        "hours its backups stay restorable by name after a destroy (local engine's backup repository; None on "
        "DBOS Cloud)", output=True, stack=False)] = None


class DatabaseInstanceSpec(_ServerOutputs):
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
    last_drill: Annotated[dict[str, Any] | None, Meta(
        "the newest restore drill, `{at, ok, rto_seconds, rpo_seconds}` (read on refresh; None: none yet, or on "
        "DBOS Cloud, which has no drills)", output=True, stack=False)] = None



class RestoredInstanceSpec(_ServerOutputs):
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

    username: Annotated[str | None, Meta("the source's user", output=True, stack=False)] = None
    source_instance: Annotated[str | None, Meta("the source's name", output=True, stack=False)] = None
    restored_to: Annotated[str | None, Meta("the time restored to (`latest` resolved)", output=True,
                                            stack=False)] = None


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


class _BoundToInstance(Spec):
    """What an app takes from the instance it is bound to (known at preview for an existing instance)."""

    is_instance: ClassVar[bool] = False

    instance: Annotated[InstanceName, Meta("the instance it is bound to; a change = change-database-instance",
                                           ref="instance", provider=False)]
    instance_name: Annotated[str | None, Meta("the bound instance's name", stack=False, computed=True)] = None
    instance_host: Annotated[str | None, Meta("the bound instance's host", stack=False, computed=True)] = None
    instance_port: Annotated[int | None, Meta("the bound instance's port", stack=False, computed=True)] = None
    instance_user: Annotated[str | None, Meta("the bound instance's user", stack=False, computed=True)] = None
    instance_password: Annotated[str | None, Meta("the bound instance's password", stack=False, secret=True,
                                                                  computed=True)] = None


class AppDatabaseSpec(_BoundToInstance):
    """An app's database on an instance, its migrations, and change-database-instance."""

    stack_section: ClassVar[str] = "apps"
    name_field: ClassVar[str] = "app_name"

    app_name: Annotated[AppName, Meta("the app's name (the stack config entry's key)", replace=True, stack=False)]
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


class AppSpec(_BoundToInstance):
    """A DBOS app deployed and running on an instance (`dbos-cloud app deploy`); a `dbos:apps` entry with `source`."""

    stack_section: ClassVar[str] = "apps"
    name_field: ClassVar[str] = "app_name"
    #: the stack config key that makes a `dbos:apps` entry an App rather than an AppDatabase
    discriminator: ClassVar[str] = "source"

    app_name: Annotated[AppName, Meta("the app's name; must equal `name` in its dbos-config.yaml", replace=True,
                                      stack=False)]
    source: Annotated[str, Meta("the app directory (holds dbos-config.yaml)", path=True)]
    app_db_name: Annotated[DbName, Meta("its database (default: the config's, else app_name)", replace=True)] = None
    previous_version: Annotated[str | None, Meta("redeploy this stored version's code (`--previous-version`)")] = None
    env: Annotated[dict[str, str], Meta("extra environment for the app", secret=True)] = {}
    port: Annotated[Port, Meta("the app's port (default: allocated); a change moves the app there in place (its "
                               "version redeployed, its databases untouched)")] = None
    drop_on_delete: Annotated[bool, Meta("drop its databases when the app is deleted (`--dropdb`)")] = False
    adopt: Annotated[bool, Meta("take over an existing app of that name that this stack does not manage",
                                diffed=False)] = False
    version: Annotated[str | None, Meta("content-derived id of the code deployed (computed at preview)",
                                        stack=False, computed=True)] = None

    versions: Annotated[list[dict[str, str]] | None, Meta("stored versions (id, created_at), oldest first",
                                                          output=True, stack=False)] = None
    status: Annotated[str | None, Meta("`AVAILABLE`, `UNHEALTHY`, ...", output=True, stack=False)] = None
    app_url: Annotated[str | None, Meta("where it serves", output=True, stack=False)] = None
    database_url: Annotated[str | None, Meta("URL of its database", output=True, stack=False, secret=True)] = None
    system_database_url: Annotated[str | None, Meta("URL of its DBOS system database", output=True, stack=False,
                                                    secret=True)] = None


SPECS: tuple[type[Spec], ...] = (DatabaseInstanceSpec, RestoredInstanceSpec, LinkedInstanceSpec, AppDatabaseSpec,
                                 AppSpec)


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


@functools.cache
def _fields(cls: type[Spec], want: tuple[tuple[str, Any], ...]) -> tuple[str, ...]:
    return tuple(n for n, f in cls.model_fields.items() if all(getattr(meta_of(f), k) == v for k, v in want))


@functools.cache
def _inputs(cls: type[Spec]) -> tuple[str, ...]:
    return tuple(n for n in cls.fields(output=False) if meta_of(cls.model_fields[n]).provider)


@functools.cache
def _diff_keys(cls: type[Spec]) -> tuple[str, ...]:
    return tuple(n for n in _inputs(cls) if meta_of(cls.model_fields[n]).diffed)


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
