"""One model per resource: fields with :class:`Meta` (replace, secret, default, stack key, output).

Everything about a resource is derived from its Spec (``config/derive.py``: the validation models, the
pydantic-free field lists, the docs' change rows): the providers' input/replace/diff/secret lists
(``resources/_base.py``), the resource classes' props, the stack config entry model (``config/stack.py``),
the stack program's mapping and the README's reference table.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar

from pydantic import AfterValidator, BaseModel, ConfigDict
from pydantic.fields import FieldInfo

from .fields import Fields
from .rules import (
    AppEnv,
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

# ---------------------------------------------------------------------------- what a change does (docs/usage.md)
ENGINE_MOVE_PREVIEW = ("refused at preview for an instance (a new, empty instance would replace it: data loss), "
                       "unless `replace_on_engine_change=True`: then replace")
ENGINE_MOVE_UP = "with `replace_on_engine_change=True`: a new, empty instance on the new engine; the old one deleted"
INSTANCE_REPLACE_PREVIEW = ("replace, that field marked as the reason; bound apps update (their instance's values "
                            "known after apply); refused while `deletion_protection=True`")
INSTANCE_REPLACE_UP = "a new instance; the old one is destroyed (its backups kept for `deletedRetentionHours`)"
RESTORE_REPLACE_UP = "a new restore; the old one is destroyed"
RESTORE_SOURCE_PREVIEW = ("replace, that field marked as the reason; refused while `deletion_protection=True`, and "
                          "(a time in the past) when the source does not exist yet, e.g. renamed: a brand-new "
                          "instance holds nothing as of a past time")
PASSWORD_PREVIEW = "update `~ password: [secret]`; each app bound to it `~ instance_password`"
PASSWORD_UP = ("resets it in place (the old one stops working; sessions of the user are ended except the bound "
               "apps', whose password file gets the new one in the same step: no restart)")
FIELD_ONLY_PREVIEW = "update of that field only (bound apps unchanged)"
SETTING_UP = "in place (retention prunes old backups and WAL)"
PORT_PREVIEW = "update `~ port`; each app bound to it `~ instance_port`"
PORT_UP = ("restarts the server on the new port (back on the old one if it cannot start); while a bound app still "
           "uses the old port it is forwarded to the new one (connections held during the restart), then each bound app is redeployed onto the new port "
           "and the forwarder ends")
LINK_UP = "links it again with the new values (verified by connecting; the server itself untouched)"
DROPPING_REPLACE_PREVIEW = ("replace, that field marked as the reason; with `drop_on_delete=True` a warning says "
                            "which databases the delete of the old one drops (also in `preview-report`)")
APPDB_REPLACE_UP = ("a new binding (its database made if missing, `migrate` run) and the old binding deleted (its "
                    "database dropped only with `drop_on_delete=True`)")
APP_REPLACE_UP = ("the app deployed anew and the old one deleted (first, when the name stays: the app is down "
                  "meanwhile); with `drop_on_delete=True` the old one's databases are dropped")
RECORDED_UP = "records it"
BINDING_PREVIEW = ("update `~ instance_name` (+ the bound instance's host, port, user, password that differ; nothing "
                   "deleted)")


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
    - ``computed``: an input the resource class or ``check()`` fills in (from ``instance``, the source);
    - ``preview``, ``up``: what `pulumi preview` shows and what `pulumi up` does on a change (docs/usage.md's
      change table; empty: said by ``replace``/``diffed``, see :func:`change_rows`).
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
    preview: str = ""
    up: str = ""


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
    engine: Annotated[str, Meta("engine (`dbos:engine`)", replace=True, stack=False, preview=ENGINE_MOVE_PREVIEW,
                                up=ENGINE_MOVE_UP)] = "local"
    data_dir: Annotated[str | None, Meta("engine data dir (`dbos:dataDir`)", replace=True, stack=False,
                                         preview=ENGINE_MOVE_PREVIEW, up=ENGINE_MOVE_UP)] = None
    run_as: Annotated[str | None, Meta("OS user running the clusters as root (`dbos:runAs`)", replace=True,
                                       stack=False, preview=ENGINE_MOVE_PREVIEW, up=ENGINE_MOVE_UP)] = None
    cloud_domain: Annotated[str | None, Meta("DBOS Cloud's API host[:port] for `engine: dbos-cloud` "
                                             "(`dbos:cloudDomain`, default `cloud.dbos.dev`)", replace=True,
                                             stack=False, preview=ENGINE_MOVE_PREVIEW, up=ENGINE_MOVE_UP)] = None
    replace_on_engine_change: Annotated[bool, Meta(
        "allow a change of engine, data_dir, run_as or cloud_domain to replace an instance (its data is deleted); "
        "stack config `dbos:replaceOnEngineChange`", stack=False, diffed=False,
        up="allows the engine move above (read at that preview)")] = False
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


# ---------------------------------------------------------------------------- high availability (provisioned, restored)
def _ha_meta(what: str) -> Meta:
    """``high_availability``'s metadata; ``what`` becomes the leader ("the instance's server", the restored one)."""
    return Meta(
        "3 members under Patroni over etcd (a primary, a synchronous standby, an asynchronous one) on the engine's "
        "hosts, one stable endpoint at `hostname:port`; turning it on or off adds or removes the standbys in "
        "place (local engine)", preview="update `~ high_availability` (checked at preview: root, etcd, `ip`/`nsenter`)",
        up=f"on: {what} becomes the leader of 3 members under Patroni (standbys cloned from it), its port "
        "the endpoint that follows the primary; off: the standbys go, a single server on the same port with the "
        "leader's data; same URL and data either way ([High availability](design/high-availability.md))")


HaMembers = Annotated[list[dict[str, Any]] | None, Meta(
    "with high_availability: each member's `{name, host, role, state, timeline, lag}` (read on refresh)",
    output=True, stack=False)]
HaLeader = Annotated[str | None, Meta("with high_availability: the member that is the primary", output=True,
                                      stack=False)]
HaSyncStandby = Annotated[str | None, Meta("with high_availability: the synchronous standby", output=True,
                                           stack=False)]
HaTimeline = Annotated[int | None, Meta("with high_availability: the primary's timeline (one more per failover or "
                                        "switchover)", output=True, stack=False)]


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
                                                stack=False, preview=INSTANCE_REPLACE_PREVIEW,
                                                up=INSTANCE_REPLACE_UP)]
    username: Annotated[Username, Meta("its user (like RDS's master user)", replace=True,
                                       preview=INSTANCE_REPLACE_PREVIEW, up=INSTANCE_REPLACE_UP)]
    password: Annotated[Password, Meta("the user's password; a change resets it in place", secret=True,
                                       preview=PASSWORD_PREVIEW, up=PASSWORD_UP)]
    retention_hours: Annotated[Retention, Meta("hours of PITR window kept", preview=FIELD_ONLY_PREVIEW,
                                               up=SETTING_UP)] = 24
    deletion_protection: Annotated[bool, Meta("refuse deletion (also sets Pulumi's `protect`)",
                                              preview=FIELD_ONLY_PREVIEW, up=SETTING_UP)] = False
    port: Annotated[Port, Meta("TCP port (default: allocated)", preview=PORT_PREVIEW, up=PORT_UP)] = None
    adopt: Annotated[bool, Meta("take over an existing instance of that name", diffed=False,
                                up="read at a create only: with `adopt=True` the preview says `pulumi-dbos: "
                                "instance '…' exists and will be adopted … resets its user's password` (another "
                                "`username` fails at preview), and `up` takes it over")] = False
    high_availability: Annotated[bool, _ha_meta("the instance's server")] = False
    members: HaMembers = None
    leader: HaLeader = None
    sync_standby: HaSyncStandby = None
    timeline: HaTimeline = None
    last_drill: Annotated[dict[str, Any] | None, Meta(
        "the newest restore drill, `{at, ok, rto_seconds, rpo_seconds}` (read on refresh; None: none yet, or on "
        "DBOS Cloud, which has no drills)", output=True, stack=False)] = None



class RestoredInstanceSpec(_ServerOutputs):
    """A new instance holding `source`'s data as of `restore_time` (`dbos-cloud db restore`)."""

    stack_section: ClassVar[str] = "restores"

    instance_name: Annotated[InstanceName, Meta("the new instance's name (the stack config entry's key)",
                                                replace=True, stack=False, preview=INSTANCE_REPLACE_PREVIEW,
                                                up=RESTORE_REPLACE_UP)]
    source: Annotated[InstanceName, Meta("the instance restored from", replace=True, ref="instance",
                                         preview=RESTORE_SOURCE_PREVIEW, up=RESTORE_REPLACE_UP)]
    restore_time: Annotated[RestoreTime, Meta("RFC3339 with an offset, or `latest`", replace=True,
                                              preview=RESTORE_SOURCE_PREVIEW, up=RESTORE_REPLACE_UP)]
    password: Annotated[OptionalPassword, Meta("the user's password (default: the source's); a change resets it",
                                               secret=True, preview=PASSWORD_PREVIEW, up=PASSWORD_UP)] = None
    retention_hours: Annotated[OptionalRetention, Meta("hours of PITR window kept (default: the source's)",
                                                       preview=FIELD_ONLY_PREVIEW, up=SETTING_UP)] = None
    deletion_protection: Annotated[bool, Meta("refuse deletion (also sets Pulumi's `protect`)",
                                              preview=FIELD_ONLY_PREVIEW, up=SETTING_UP)] = False
    port: Annotated[Port, Meta("TCP port (default: allocated)", preview=PORT_PREVIEW, up=PORT_UP)] = None
    high_availability: Annotated[bool, _ha_meta("the restored server (restored first, whether the source is HA or "
                                                "not)")] = False

    username: Annotated[str | None, Meta("the source's user", output=True, stack=False)] = None
    source_instance: Annotated[str | None, Meta("the source's name", output=True, stack=False)] = None
    restored_to: Annotated[str | None, Meta("the time restored to (`latest` resolved)", output=True,
                                            stack=False)] = None
    members: HaMembers = None
    leader: HaLeader = None
    sync_standby: HaSyncStandby = None
    timeline: HaTimeline = None


class LinkedInstanceSpec(Spec):
    """An existing Postgres server, registered (`dbos-cloud db link`); destroy only unlinks."""

    stack_section: ClassVar[str] = "linked"

    instance_name: Annotated[InstanceName, Meta("the name it is known by (the stack config entry's key)",
                                                replace=True, stack=False,
                                                up="links it under the new name, then unlinks the old one (the "
                                                "server itself untouched)")]
    hostname: Annotated[Hostname, Meta("the server's host", up=LINK_UP)]
    port: Annotated[Annotated[int, AfterValidator(check_port)], Meta("the server's port", up=LINK_UP)] = 5432
    username: Annotated[LinkedUsername, Meta("a user on it", up=LINK_UP)]
    password: Annotated[Password, Meta("that user's password (verified, not stored by the engine)", secret=True,
                                       preview="update `~ password: [secret]`; each app bound to it "
                                       "`~ instance_password`", up=LINK_UP)]

    status: Annotated[str | None, Meta("`available` or `unreachable`", output=True, stack=False)] = None
    database_url: Annotated[str | None, Meta("postgresql:// URL with the password", output=True, stack=False,
                                             secret=True)] = None
    is_linked: Annotated[bool | None, Meta("True", output=True, stack=False)] = None


class _BoundToInstance(Spec):
    """What an app takes from the instance it is bound to (known at preview for an existing instance)."""

    is_instance: ClassVar[bool] = False

    instance: Annotated[InstanceName, Meta("the instance it is bound to; a change = change-database-instance",
                                           ref="instance", provider=False, preview=BINDING_PREVIEW)]
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

    app_name: Annotated[AppName, Meta("the app's name (the stack config entry's key)", replace=True, stack=False,
                                      preview=DROPPING_REPLACE_PREVIEW, up=APPDB_REPLACE_UP)]
    app_db_name: Annotated[DbName, Meta("its database (default: from dbos_config, else app_name)", replace=True,
                                        preview=DROPPING_REPLACE_PREVIEW, up=APPDB_REPLACE_UP)] = None
    instance: Annotated[InstanceName, Meta("the instance it is bound to; a change = change-database-instance",
                                           ref="instance", provider=False, preview=BINDING_PREVIEW,
                                           up="ensures the database on the new instance, runs `migrate`, moves "
                                           "`database_url` (the old instance and its data untouched)")]
    migrate: Annotated[Commands, Meta("commands run on create, instance change and list change",
                                      up="runs the new commands")] = None
    rollback: Annotated[Commands, Meta("commands `pulumi-dbos app rollback` runs", up=RECORDED_UP)] = None
    working_dir: Annotated[str | None, Meta("where the commands run (default: dbos_config's directory)",
                                            path=True, up=RECORDED_UP)] = None
    dbos_config: Annotated[str | None, Meta("a dbos-config.yaml to read app_db_name/migrate/rollback from",
                                            path=True, preview="update `~ dbos_config` (+ the `migrate`, `rollback` "
                                            "read from it that differ; another `app_db_name` is a replace)",
                                            up="as for those fields")] = None
    app_version: Annotated[str | None, Meta("informative version label", up=RECORDED_UP)] = None
    drop_on_delete: Annotated[bool, Meta("drop the database when the binding is deleted",
                                         up="records it: a later delete (or replace) drops the database when "
                                         "true")] = False
    owner_role: Annotated[bool, Meta("a role `<app>_owner` owning only this database",
                                     up="true: makes the role the database's owner (`owner_database_url`); false: "
                                     "gives the database back to the instance's user and drops the role")] = False

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
                                      stack=False, preview=DROPPING_REPLACE_PREVIEW, up=APP_REPLACE_UP)]
    instance: Annotated[InstanceName, Meta("the instance it is bound to; a change = change-database-instance",
                                           ref="instance", provider=False, preview=BINDING_PREVIEW,
                                           up="change-database-instance: deploys the version (or `previous_version`) "
                                           "on the new instance; the old one keeps serving until the new one "
                                           "answers; the old instance's data stays there (nothing is copied)")]
    source: Annotated[str, Meta("the app directory (holds dbos-config.yaml)", path=True,
                                preview="a content change: update `~ version: OLD => NEW` (and nothing else); the "
                                "same content elsewhere: `~ source` only",
                                up="deploys the version (a new one: the old one stays stored and listed, serving "
                                "until the new one answers)")]
    app_db_name: Annotated[DbName, Meta("its database (default: the config's, else app_name)", replace=True,
                                        preview=DROPPING_REPLACE_PREVIEW, up=APP_REPLACE_UP)] = None
    previous_version: Annotated[str | None, Meta(
        "redeploy this stored version's code (`--previous-version`)",
        preview="update `~ previous_version`, `~ version` (one that is not stored fails at preview, listing the "
        "stored ones)", up="deploys that stored version (with an `instance` change in the same `up`: DBOS's "
        "recovery step)")] = None
    env: Annotated[AppEnv, Meta("extra environment for the app (names: letters, digits, _; not LD_*, PYTHON*, "
                                "DBOS_*...)", secret=True,
                                up="redeploys the current version with the new environment")] = {}
    port: Annotated[Port, Meta("the app's port (default: allocated); a change moves the app there in place (its "
                               "version redeployed, its databases untouched)",
                               up="redeploys the same version and moves the app's stable port there once it "
                               "answers (the old port is then released); its databases and stored versions are "
                               "untouched")] = None
    drop_on_delete: Annotated[bool, Meta("drop its databases when the app is deleted (`--dropdb`)",
                                         up="records it (no redeploy): a later delete (or replace) drops the app's "
                                         "two databases when true")] = False
    adopt: Annotated[bool, Meta("take over an existing app of that name that this stack does not manage",
                                diffed=False, up="read at a create only: with `adopt=True` the preview says whose "
                                "app it takes over, which version `up` deploys over which and, bound to another "
                                "instance, that it moves there onto an empty database; `up` deploys over it and "
                                "manages it from then on")] = False
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


@functools.cache
def _fields(cls: type[Spec], want: tuple[tuple[str, Any], ...]) -> tuple[str, ...]:
    return tuple(n for n, f in cls.model_fields.items() if all(getattr(meta_of(f), k) == v for k, v in want))


@functools.cache
def _inputs(cls: type[Spec]) -> tuple[str, ...]:
    return tuple(n for n in cls.fields(output=False) if meta_of(cls.model_fields[n]).provider)


@functools.cache
def _diff_keys(cls: type[Spec]) -> tuple[str, ...]:
    return tuple(n for n in _inputs(cls) if meta_of(cls.model_fields[n]).diffed)
