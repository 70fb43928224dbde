"""The engine contract: the only door from resources and the CLI to wherever instances live.

Shaped like DBOS Cloud's database operations (provision, info, list, reset credentials,
restore-to-new, link, unlink, destroy) so that an engine speaking DBOS Cloud's REST API
implements the same :class:`Engine` protocol as the embedded ``local`` engine, and both pass
``tests/contract/``. Nothing here imports pulumi.

Errors: every method raises :class:`~pulumi_dbos.errors.DbosError` subclasses only —
:class:`~pulumi_dbos.errors.NotFoundError` for a missing instance,
:class:`~pulumi_dbos.errors.AlreadyExistsError` for a taken name.
"""

from __future__ import annotations

import builtins
import enum
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any, Protocol, runtime_checkable


class Status(str, enum.Enum):
    """What ``info().status`` reports (DBOS Cloud reports the same states in upper case)."""

    AVAILABLE = "available"
    STOPPED = "stopped"
    CREATING = "creating"
    RESTORING = "restoring"
    UNREACHABLE = "unreachable"  # a linked server that does not answer; an HA instance without a leader
    #: an HA instance with a leader (it answers) while one of its members is down or not streaming
    DEGRADED = "degraded"
    #: its cluster, its directory, its catalog row or the whole data dir gone (a lost disk, an operator's
    #: mistake): its backups are in the repository, the restorable window stays; never recreated silently
    LOST = "lost"

    def __str__(self) -> str:
        return self.value


class Kind(str, enum.Enum):
    """How an instance came to be (the catalog's ``kind`` column keeps these values)."""

    PROVISIONED = "local"
    RESTORED = "restored"
    LINKED = "linked"

    def __str__(self) -> str:
        return self.value


#: Shown for an instance whose stored password no longer authenticates (set by the resources'
#: refresh, not by the engine: the engine keeps no passwords).
STATUS_CREDENTIALS_INVALID = "credentials_invalid"


@dataclass
class InstanceInfo:
    name: str
    status: str
    hostname: str
    port: int
    username: str
    kind: Kind = Kind.PROVISIONED
    retention_hours: int = 24
    created_at: str | None = None
    earliest_restorable_time: str | None = None
    latest_restorable_time: str | None = None
    source_instance: str | None = None
    restored_to: str | None = None
    owner: str | None = None
    #: the newest restore drill's ``DrillResult.summary()`` (None: none yet, or an engine without drills)
    last_drill: dict[str, Any] | None = None
    #: how long its backups stay restorable by name after a destroy (None: the engine does not keep them)
    kept_after_destroy_hours: int | None = None
    #: several members under Patroni (``set_high_availability``); the next four fields describe them
    high_availability: bool = False
    #: each member: ``{name, host, role, state, timeline, lag}`` (lag in bytes behind the leader)
    members: list[dict[str, Any]] | None = None
    leader: str | None = None
    sync_standby: str | None = None
    timeline: int | None = None

    @property
    def is_linked(self) -> bool:
        return self.kind is Kind.LINKED

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["kind"] = str(self.kind)
        d["status"] = str(self.status)
        d["is_linked"] = self.is_linked
        return d


@dataclass(frozen=True)
class BackupInfo:
    instance: str
    backup_id: str
    started_at: str
    finished_at: str


@dataclass(frozen=True)
class DrillResult:
    """One restore drill of ``instance``: its newest restorable point restored into a scratch instance,
    checked, removed. ``ok`` is False when the restore or a check failed (``reason`` says which); ``rto_seconds``:
    from asking for the restore until the scratch instance answered; ``rpo_seconds``: how old the newest
    point the archive held was when the drill started. ``counts_compared`` is False when the source was
    written while the drill ran (its row counts as of the restore point are then unknown: the tables are
    checked for presence and readability only); ``reason`` then says so while ``ok`` stays True."""

    instance: str
    at: str  #: when it started (RFC3339)
    ok: bool
    rto_seconds: float | None = None
    rpo_seconds: float | None = None
    restored_to: str | None = None
    tables: int = 0  #: user tables counted on both sides
    counts_compared: bool = False
    sql_checked: bool = False
    reason: str | None = None

    def summary(self) -> dict[str, Any]:
        """What ``DatabaseInstance.last_drill`` shows."""
        return {"at": self.at, "ok": self.ok, "rto_seconds": self.rto_seconds, "rpo_seconds": self.rpo_seconds}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Preflight:
    """What a resource is about to ask for, checked at ``pulumi preview`` (nothing is created).

    ``owner`` identifies the managing stack (project, stack, backend, resource); ``creating`` is
    False when the resource already manages this instance (an update), so its own name and port
    are no conflict. ``port`` and ``retention_hours`` are what the resource asks for on a create or
    a change (None = unchanged, or the engine's choice).
    """

    kind: Kind
    name: str
    owner: str | None = None
    creating: bool = True
    adopt: bool = False
    port: int | None = None
    source: str | None = None
    restore_time: str | None = None  # RFC3339 or "latest"
    retention_hours: int | None = None
    username: str | None = None  #: the user asked for (an adopted instance keeps its own: they must match)
    #: high availability asked for where the instance does not have it yet (a create, or turning it on)
    high_availability: bool = False


def adopt_problem(req: Preflight, existing_username: str | None) -> Problem | None:
    """An adopted instance keeps its user (its password is reset): asking for another one fails at preview."""
    if not (req.creating and req.adopt and req.username and existing_username) or req.username == existing_username \
            or req.kind is Kind.LINKED:  # a link logs in as whoever it says: nothing of the old one is kept
        return None
    return Problem("username", f"instance {req.name!r} already exists with user {existing_username!r}: adopt=True "
                   f"takes it over with that user and resets its password; set username={existing_username!r}")


@dataclass(frozen=True)
class Problem:
    """One reason a :class:`Preflight` would fail: the input it is about and a sentence saying why."""

    field: str
    message: str


def whose_app(existing_owner: str | None) -> str:
    """Who manages an existing app, in words (its owner is a stack's resource URN, or none)."""
    return f"managed by {existing_owner.split('#')[0]}" if existing_owner else "deployed without this stack"


def taken_app(name: str, where: str, existing_owner: str | None, owner: str | None, adopt: bool) -> Problem | None:
    """On a create: an app of that name that ``owner`` does not manage is not taken over without ``adopt``."""
    if adopt or (owner is not None and existing_owner == owner):
        return None
    return Problem("app_name", f"an app named {name!r} already exists in {where} ({whose_app(existing_owner)}); choose another "
                   "app_name, or set adopt=True to take it over (this stack then manages it: its next deploy "
                   "replaces the running version and `pulumi destroy` deletes it)")


class AppStatus(str, enum.Enum):
    """An app's status (DBOS Cloud's names: the CLI waits for ``AVAILABLE``)."""

    AVAILABLE = "AVAILABLE"
    DEPLOYING = "DEPLOYING"
    UNHEALTHY = "UNHEALTHY"  # its process died or does not answer; the next `pulumi up` restarts it
    STOPPED = "STOPPED"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class AppVersion:
    version: str
    created_at: str


@dataclass
class AppInfo:
    name: str
    status: str
    version: str | None
    instance_name: str
    app_db_name: str
    app_url: str
    port: int
    versions: list[AppVersion]
    owner: str | None = None


@dataclass(frozen=True)
class AppDatabaseAccess:
    """Where an app's databases live and the credentials to reach them (the engine stores no password
    except in the running app's 0600 password file)."""

    instance_name: str
    hostname: str
    port: int
    username: str
    password: str


@dataclass(frozen=True)
class AppDeploy:
    """A deploy: ``archive`` (DBOS Cloud's zip of the app directory) stored as ``version``, or, with
    ``archive=None``, a stored version redeployed (``--previous-version``)."""

    app_name: str
    version: str
    archive: bytes | None
    database: AppDatabaseAccess
    app_db_name: str
    env: dict[str, str]
    port: int | None = None
    owner: str | None = None
    #: the app's memory limit (DBOS Cloud's ``ExecutorsMemoryMib``); None: the engine's default
    memory_mib: int | None = None


@runtime_checkable
class AppEngine(Protocol):
    """An engine's apps (DBOS Cloud's `app ...`): ``engine.apps``. Implementations are thread-safe."""

    def preflight(self, app_name: str, *, port: int | None, version: str | None, owner: str | None,
                  creating: bool, adopt: bool = False) -> builtins.list[Problem]:
        """Problems a deploy would meet: a port in use, an unknown stored ``version`` (the message
        lists the known ones), on a create an app of that name this ``owner`` does not manage (deployed
        by another stack or without pulumi-dbos) unless ``adopt``. Creates nothing."""
        ...

    def deploy(self, req: AppDeploy) -> AppInfo:
        """Store the version, build its environment, run `dbos migrate` semantics against its databases,
        start it, wait until healthy, then retire the previous process. A ``port`` other than the app's
        moves its stable port there in the same step (the old one is released once the new one serves).
        On failure the previous version keeps serving where it was (its port too), and the error carries
        the app's last log lines."""
        ...

    def info(self, app_name: str) -> AppInfo | None: ...

    def all(self) -> builtins.list[AppInfo]: ...

    def versions(self, app_name: str) -> builtins.list[AppVersion]:
        """Stored versions, oldest first."""
        ...

    def logs(self, app_name: str, lines: int = 100) -> str: ...

    def delete(self, app_name: str) -> None:
        """Stop the app and remove what the engine keeps of it (its databases are the caller's)."""
        ...


@runtime_checkable
class Engine(Protocol):
    """What resources and the CLI may ask of an engine. Implementations are thread-safe."""

    #: "local", "dbos-cloud", ...
    kind: str

    @property
    def apps(self) -> AppEngine:
        """The engine's apps."""
        ...

    def describe(self) -> str:
        """Where instances live, for messages (e.g. ``local engine at /var/lib/pulumi-dbos``)."""
        ...

    def preflight(self, req: Preflight) -> list[Problem]:
        """Problems the request would meet (empty = go). Creates nothing; never raises for the request."""
        ...

    # ---------------------------------------------------------------- instances
    def provision(self, name: str, username: str, password: str, *, port: int | None = None,
                  retention_hours: int = 24, owner: str | None = None) -> InstanceInfo:
        """A new instance; a failure leaves nothing behind. AlreadyExistsError if the name is taken."""
        ...

    def takeover(self, name: str, owner: str | None, *, adopt: bool = False) -> InstanceInfo | None:
        """Before a create: an instance this ``owner`` finished earlier (an interrupted run), or any
        instance of that name when ``adopt``, is started and returned (and now belongs to ``owner``);
        a half-made one of this owner is removed. None = nothing to take over: create it."""
        ...

    def info(self, name: str) -> InstanceInfo | None:
        """The instance, or None when it does not exist (or its data is gone)."""
        ...

    def list(self) -> builtins.list[InstanceInfo]: ...

    def ensure_running(self, name: str) -> InstanceInfo:
        """Start a stopped instance (a no-op for running and linked ones)."""
        ...

    def stop(self, name: str) -> InstanceInfo: ...

    def reset_credentials(self, name: str, username: str, password: str) -> InstanceInfo:
        """Set ``username``'s password; the old one stops working and its sessions end."""
        ...

    def check_credentials(self, name: str, username: str, password: str) -> bool:
        """Whether ``username``/``password`` authenticate on the instance now."""
        ...

    def set_retention(self, name: str, retention_hours: int) -> InstanceInfo: ...

    def set_owner(self, name: str, owner: str | None) -> InstanceInfo:
        """Record ``owner`` (a stack's id, see ``takeover``) as the instance's."""
        ...

    def set_port(self, name: str, port: int) -> InstanceInfo:
        """Move the instance to ``port``; on failure it keeps working on the old one."""
        ...

    def destroy(self, name: str) -> None:
        """Delete the instance and its data (a linked one is only unlinked). Missing = no-op."""
        ...

    def recover_interrupted(self) -> builtins.list[str]:
        """After a crash of whatever ran the engine, with nothing else in flight: remove what it left
        half-made (creates, restores, a drill's scratch instance, an app whose first deploy was cut short);
        the names removed."""
        ...

    # ---------------------------------------------------------------- high availability
    def set_high_availability(self, name: str, enabled: bool, *, members: int = 3) -> InstanceInfo:
        """Turn high availability on (standbys added: ``members`` in all, one synchronous) or off (standbys
        removed, the leader's data kept), in place: same name, port, URL and data. A no-op when it already is
        so. Raises where the engine has none (DBOS Cloud)."""
        ...

    def switchover(self, name: str, candidate: str | None = None) -> InstanceInfo:
        """A planned switchover of an HA instance to ``candidate`` (default its synchronous standby)."""
        ...

    # ---------------------------------------------------------------- backups and restores
    def backup(self, name: str) -> BackupInfo: ...

    def restore_window(self, name: str) -> tuple[datetime, datetime]:
        """``[earliest, latest]`` restorable times of ``name``."""
        ...

    def restore_to_new(self, source: str, name: str, restore_time: str, *, password: str,
                       port: int | None = None, retention_hours: int | None = None,
                       owner: str | None = None) -> InstanceInfo:
        """A new instance holding ``source``'s data as of ``restore_time`` (RFC3339 or ``latest``),
        whose user (the source's) has ``password``; a failure leaves nothing behind."""
        ...

    # ---------------------------------------------------------------- restore drills
    def drill(self, name: str, *, check_sql: str | None = None, check_database: str | None = None) -> DrillResult:
        """Restore ``name``'s newest restorable point into a scratch instance, check it (row counts of every user
        table against the source's; ``check_sql``, kept for the instance's later drills (an empty one removes
        it), must succeed and, if its last statement returns a row, return true), remove the scratch instance, keep the result. A failed drill
        is a result with ``ok=False``, not an exception; the source is never changed. Raises when the instance
        cannot be drilled (missing, linked, stopped) or the engine has no drills (DBOS Cloud)."""
        ...

    def drills(self, name: str) -> builtins.list[DrillResult] | None:
        """The instance's kept drill results, newest first; None when the engine keeps none (DBOS Cloud)."""
        ...

    # ---------------------------------------------------------------- linked servers
    def link(self, name: str, hostname: str, port: int, username: str, password: str, *,
             owner: str | None = None) -> InstanceInfo:
        """Register an existing server (verified with the credentials, which are not stored)."""
        ...

    def unlink(self, name: str) -> None: ...
