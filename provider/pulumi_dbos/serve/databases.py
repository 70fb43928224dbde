"""Database routes (E1-E8 of DBOS Cloud's API, and serve's extensions: patch, backup, start, stop, preflight)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from fastapi import APIRouter
from fastapi.responses import Response

from ..cloudapi import paths
from ..cloudapi.models import (
    BackupOutput,
    CredentialsRequest,
    DatabasePatch,
    DrillOutput,
    DrillRequest,
    DrillSummary,
    LinkRequest,
    PreflightProblem,
    PreflightRequest,
    ProvisionRequest,
    RestoreRequest,
    UserDBInstance,
)
from ..config import rules
from ..engine.contract import DrillResult, InstanceInfo, Kind, Preflight
from ..engine.local.drills import DrillBusyError, is_scratch
from ..errors import AlreadyExistsError, DbosError, NotFoundError
from . import exact
from .deps import Ctx, Org, ServeContext
from .http import ApiError, check, from_dbos, ok, valid_name
from .limits import link_allowed
from .state import Credentials

T = TypeVar("T")

log = logging.getLogger("pulumi_dbos.serve")

#: seconds a drill asked for waits for another drill on the host before the answer is 409
DRILL_WAIT = 120.0
DEFAULT_LINKED_USER = "dbosadmin"  # DBOS Cloud's fixed user of a linked server
#: the one answer to every failed link: whether the port is closed, is not PostgreSQL or refused the password
#: stays in serve's own log (a link is no port scanner of the networks serve reaches)
LINK_FAILED = ("cannot connect to a PostgreSQL server with these settings: check HostName, Port, Username and "
               "Password, and that the server accepts TCP connections from this server")


def printable(text: str, limit: int = 500) -> str:
    """A remote server's text, safe for a log line (no control characters), bounded."""
    return "".join(c if c.isprintable() else "?" for c in text)[:limit]


def not_found(name: str) -> ApiError:
    return ApiError(404, f"database {name} not found")  # the CLI matches this text


def to_wire(info: InstanceInfo, creds: Credentials | None) -> UserDBInstance:
    return UserDBInstance(
        PostgresInstanceName=info.name, Status=str(info.status), HostName=info.hostname, Port=info.port,
        DatabaseUsername=info.username, IsLinked=info.is_linked,
        SupabaseReference=creds.supabase if creds and info.is_linked else None,
        Kind=str(info.kind), RetentionHours=info.retention_hours, CreatedAt=info.created_at,
        EarliestRestorableTime=info.earliest_restorable_time, LatestRestorableTime=info.latest_restorable_time,
        SourceInstance=info.source_instance, RestoredTo=info.restored_to, Owner=info.owner,
        LastDrill=DrillSummary(At=info.last_drill["at"], Ok=info.last_drill["ok"],
                               RtoSeconds=info.last_drill["rto_seconds"], RpoSeconds=info.last_drill["rpo_seconds"])
        if info.last_drill else None)


def drill_wire(r: DrillResult) -> DrillOutput:
    return DrillOutput(PostgresInstanceName=r.instance, At=r.at, Ok=r.ok, RtoSeconds=r.rto_seconds,
                       RpoSeconds=r.rpo_seconds, RestoredTo=r.restored_to, Tables=r.tables,
                       CountsCompared=r.counts_compared, SqlChecked=r.sql_checked, Reason=r.reason)


def check_owner(owner: str | None) -> None:
    """The restore drills' scratch instances are the server's own: no request makes one (it would be hidden
    from lists and quotas, and removed by the next drill)."""
    if is_scratch(owner):
        raise ApiError(400, f"Owner {owner!r} is reserved for the server's restore drills")


#: DBOS Cloud's routes, and serve's extensions (not served by --cloud-exact: 404 there)
r = APIRouter()
ext = APIRouter()


@contextlib.contextmanager
def instance_quota(ctx: ServeContext, org: str, name: str) -> Iterator[None]:
    """Hold a place for instance ``name`` of ``org`` while it is made: 400 when the organization has
    ``--max-instances`` instances already (provisioned, restored and linked alike, those being made
    included)."""
    with ctx.state.locked("instance-quota", org):
        existing = {i.name for i in ctx.state.engine(org).list()  # a drill's scratch: the server's
                    if not is_scratch(i.owner)} if ctx.state.has_catalog(org) else set()
        names = existing | ctx.creating.get(org, set())
        if name not in names and len(names) >= ctx.limits.max_instances:
            raise ApiError(400, f"organization {org} has {len(names)} database instances, the most this server "
                           f"allows (--max-instances {ctx.limits.max_instances}; restored and linked ones count too): "
                           "destroy or unlink one first")
        ctx.creating.setdefault(org, set()).add(name)
    try:
        yield
    finally:
        with ctx.state.locked("instance-quota", org):
            ctx.creating.get(org, set()).discard(name)


def _kept(ctx: ServeContext, eng: Any, name: str) -> bool:
    try:
        eng.restore_window(name)
    except DbosError:
        return False
    return True


def info_or_404(ctx: ServeContext, org: str, name: str) -> InstanceInfo:
    if not ctx.state.has_catalog(org) or not valid_name(name):
        raise not_found(name)
    info = ctx.state.engine(org).info(name)
    if info is None:
        raise not_found(name)
    return info


def record_exists(ctx: ServeContext, org: str, name: str) -> bool:
    return valid_name(name) and ctx.state.has_catalog(org) and ctx.state.engine(org).info(name) is not None


def view(ctx: ServeContext, org: str, info: InstanceInfo) -> UserDBInstance:
    wire = to_wire(info, ctx.state.credentials(org, info.name))
    if ctx.cloud_exact:
        wire.Status = exact.db_status(wire.Status, linked=info.is_linked)
    return wire


def taken(ctx: ServeContext, org: str, name: str) -> None:
    if record_exists(ctx, org, name):
        raise ApiError(409, f"database {name} already exists")


# ------------------------------------------------------------------ E1-E3
@r.get(paths.DATABASES)
def list_databases(org: Org, ctx: Ctx) -> Response:
    if not ctx.state.has_catalog(org):
        return ctx.respond([])
    return ctx.respond([view(ctx, org, i) for i in ctx.state.engine(org).list()])


@r.post(paths.PROVISION)
def provision(org: Org, body: ProvisionRequest, ctx: Ctx) -> Response:
    if ctx.cloud_exact:
        body = exact.ignore_extensions(body, "provision")
    check_owner(body.Owner)
    check(rules.check_instance_name, body.Name)
    check(rules.check_username, body.AdminName)
    check(rules.check_password, body.AdminPassword)
    check(rules.check_port, body.Port)
    check(rules.check_retention, body.RetentionHours)
    with ctx.state.locked("db", org, body.Name), instance_quota(ctx, org, body.Name):
        taken(ctx, org, body.Name)
        # stored first: a crash mid-create leaves the password of an instance the next start removes
        ctx.state.set_credentials(org, body.Name, Credentials(body.AdminName, body.AdminPassword))
        try:
            info = ctx.state.engine(org).provision(body.Name, body.AdminName, body.AdminPassword, port=body.Port,
                                               retention_hours=body.RetentionHours or 24, owner=body.Owner)
        except BaseException:
            ctx.state.forget_credentials(org, body.Name)
            raise
    log.info("org %s: provisioned %s (port %s)", org, info.name, info.port)
    return ctx.respond(view(ctx, org, info), 201)


@r.get(paths.DB_INFO)
def db_info(org: Org, name: str, ctx: Ctx) -> Response:
    return ctx.respond(view(ctx, org, info_or_404(ctx, org, name)))


# ------------------------------------------------------------------ E4 credentials
@r.post(paths.DB_CREDENTIALS)
def reset_password(org: Org, name: str, body: CredentialsRequest, ctx: Ctx) -> Response:
    info = info_or_404(ctx, org, name)
    if info.is_linked:
        raise ApiError(400, f"cannot reset the password of a linked database ({name}): change it on its server, "
                       "then link it again")
    check(rules.check_password, body.Password)
    with ctx.state.locked("db", org, name):
        ctx.state.engine(org).reset_credentials(name, info.username, body.Password)
        ctx.state.set_credentials(org, name, Credentials(info.username, body.Password))
    log.info("org %s: reset the password of %s", org, name)
    return ctx.respond(view(ctx, org, info_or_404(ctx, org, name)))


# ------------------------------------------------------------------ E5 restore
@r.post(paths.DB_RESTORE)
def restore(org: Org, name: str, body: RestoreRequest, ctx: Ctx) -> Response:
    src: InstanceInfo | None = None
    try:
        src = info_or_404(ctx, org, name)
    except ApiError:
        # destroyed (its backups kept for the deleted retention) or lost: restorable from the organization's
        # own backup repository, by name, with a password given
        if not (valid_name(name) and ctx.state.has_catalog(org) and body.Password is not None
                and _kept(ctx, ctx.state.engine(org), name)):
            raise
    if ctx.cloud_exact:
        body = exact.ignore_extensions(body, "restore")
        if body.RestoreTimestamp.strip() == "latest":
            raise ApiError(400, "RestoreTimestamp must be an RFC3339 timestamp, got 'latest'")
    check_owner(body.Owner)
    check(rules.check_instance_name, body.RestoreName)
    check(rules.check_restore_time, body.RestoreTimestamp)
    check(rules.check_port, body.Port)
    check(rules.check_retention, body.RetentionHours)
    password = body.Password
    if password is None:
        held = ctx.state.credentials(org, name)
        if held is None:
            raise ApiError(400, f"this server holds no password for {name}: pass Password for the restored "
                           "instance's user")
        password = held.password
    else:
        check(rules.check_password, password)
    with ctx.state.locked("db", org, body.RestoreName), instance_quota(ctx, org, body.RestoreName):
        taken(ctx, org, body.RestoreName)
        if src is not None:
            ctx.state.set_credentials(org, body.RestoreName, Credentials(src.username, password))
        try:
            info = ctx.state.engine(org).restore_to_new(
                name, body.RestoreName, body.RestoreTimestamp, password=password, port=body.Port,
                retention_hours=body.RetentionHours, owner=body.Owner)
        except BaseException:
            ctx.state.forget_credentials(org, body.RestoreName)
            raise
        ctx.state.set_credentials(org, body.RestoreName, Credentials(info.username, password))
    log.info("org %s: restored %s as of %s into %s", org, name, info.restored_to, info.name)
    return ctx.respond(view(ctx, org, info), 201)


# ------------------------------------------------------------------ E6 destroy
@r.delete(paths.DB)
def destroy(org: Org, name: str, ctx: Ctx) -> Response:
    return remove(ctx, org, name, linked=False)


# ------------------------------------------------------------------ E7-E8 linked servers
@r.post(paths.LINK)
def link(org: Org, body: LinkRequest, ctx: Ctx) -> Response:
    if ctx.cloud_exact:
        body = exact.ignore_extensions(body, "link")
    check_owner(body.Owner)
    check(rules.check_instance_name, body.Name)
    check(rules.check_hostname, body.HostName)
    if body.Port is None or not 1 <= body.Port <= 65535:
        raise ApiError(400, f"Port must be a TCP port number, got {body.Port!r}")
    check(rules.check_password, body.Password)
    username = body.Username or DEFAULT_LINKED_USER
    check(lambda v: rules.check_name(v, "Username"), username)
    target = f"{body.HostName}:{body.Port}"
    if not link_allowed(body.HostName, body.Port, ctx.limits.link_allow):
        log.warning("org %s: link of %s to %s refused: not inside the networks of --link-allow", org, body.Name,
                    printable(target))
        raise ApiError(400, f"HostName {body.HostName} is not a server this one may link to: it must resolve only "
                       "to addresses inside the networks its administrator allows (--link-allow)")
    with ctx.state.locked("db", org, body.Name), instance_quota(ctx, org, body.Name):
        try:
            info = ctx.state.engine(org).link(body.Name, body.HostName, body.Port, username, body.Password,
                                          owner=body.Owner)
        except (AlreadyExistsError, NotFoundError):
            raise
        except Exception as exc:  # noqa: BLE001 - whatever the target does, one answer
            # the engine's message (the password masked) tells refused from not-PostgreSQL from a wrong
            # password, with the remote server's text: for serve's log only
            why = exc.message if isinstance(exc, DbosError) else f"{type(exc).__name__}: {exc}"
            log.warning("org %s: link of %s to %s failed: %s", org, body.Name, printable(target),
                        printable(why.replace(body.Password, "[secret]")))
            raise ApiError(400, LINK_FAILED) from None
        ctx.state.set_credentials(org, body.Name, Credentials(username, body.Password, body.supabaseReference))
    log.info("org %s: linked %s (%s:%s)", org, body.Name, body.HostName, body.Port)
    return ctx.respond(view(ctx, org, info), 201)


@r.delete(paths.UNLINK)
def unlink(org: Org, name: str, ctx: Ctx) -> Response:
    return remove(ctx, org, name, linked=True)


def remove(ctx: ServeContext, org: str, name: str, *, linked: bool) -> Response:
    """Destroy an instance (E6) or unlink a linked one (E8), and forget its credentials."""
    if not record_exists(ctx, org, name):
        raise not_found(name)
    with ctx.state.locked("db", org, name):
        eng = ctx.state.engine(org)
        (eng.unlink if linked else eng.destroy)(name)
        ctx.state.forget_credentials(org, name)
    log.info("org %s: %s %s", org, "unlinked" if linked else "destroyed", name)
    return Response(status_code=204)


# ------------------------------------------------------------------ extensions
@ext.patch(paths.DB)
def patch(org: Org, name: str, body: DatabasePatch, ctx: Ctx) -> Response:
    info_or_404(ctx, org, name)
    check(rules.check_retention, body.RetentionHours)
    check(rules.check_port, body.Port)
    check_owner(body.Owner)
    eng = ctx.state.engine(org)
    with ctx.state.locked("db", org, name):
        if body.Owner is not None:
            eng.set_owner(name, body.Owner)
        if body.RetentionHours is not None:
            eng.set_retention(name, body.RetentionHours)
        if body.Port is not None:
            eng.set_port(name, body.Port)
    return ok(view(ctx, org, info_or_404(ctx, org, name)))


def on_instance(ctx: ServeContext, org: str, name: str, op: Callable[[Any, str], T]) -> tuple[str, T]:
    """``op(engine, name)`` on an existing instance of the caller's organization, under its lock."""
    info_or_404(ctx, org, name)
    with ctx.state.locked("db", org, name):
        return org, op(ctx.state.engine(org), name)


@ext.post(paths.DB_BACKUP)
def backup(org: Org, name: str, ctx: Ctx) -> Response:
    _, b = on_instance(ctx, org, name, lambda eng, n: eng.backup(n))
    return ok(BackupOutput(PostgresInstanceName=b.instance, BackupID=b.backup_id, StartedAt=b.started_at,
                           FinishedAt=b.finished_at), 201)


@ext.post(paths.DB_START)
def start(org: Org, name: str, ctx: Ctx) -> Response:
    org, info = on_instance(ctx, org, name, lambda eng, n: eng.ensure_running(n))
    return ok(view(ctx, org, info))


@ext.post(paths.DB_STOP)
def stop(org: Org, name: str, ctx: Ctx) -> Response:
    org, info = on_instance(ctx, org, name, lambda eng, n: eng.stop(n))
    return ok(view(ctx, org, info))


@ext.get(paths.DB_DRILLS)
def drills(org: Org, name: str, ctx: Ctx) -> Response:
    info_or_404(ctx, org, name)
    return ok([drill_wire(d) for d in ctx.state.engine(org).drills(name) or []])


@ext.post(paths.DB_DRILLS)
def drill(org: Org, name: str, body: DrillRequest, ctx: Ctx) -> Response:
    """Run a drill now (one at a time per host: 409 when another runs longer than DRILL_WAIT); a failed
    drill is a 201 answer too, its ``Ok`` false (the drill ran; what it found is the answer)."""
    if body.CheckDatabase is not None:
        check(rules.check_db_name, body.CheckDatabase)
    try:
        org, result = on_instance(ctx, org, name, lambda eng, n: eng.drill(
            n, check_sql=body.CheckSql, check_database=body.CheckDatabase, wait=DRILL_WAIT))
    except DrillBusyError as exc:
        raise ApiError(409, exc.message) from None
    if not result.ok:
        log.error("org %s: RESTORE DRILL FAILED for %s: %s", org, name, result.reason)
    return ok(drill_wire(result), 201)


@ext.post(paths.DB_PREFLIGHT)
def preflight(org: Org, body: PreflightRequest, ctx: Ctx) -> Response:
    try:
        kind = Kind(body.Kind)
    except ValueError:
        raise ApiError(400, f"Kind must be one of {', '.join(k.value for k in Kind)}, got {body.Kind!r}") from None
    if body.RestoreTime is not None:
        check(rules.check_restore_time, body.RestoreTime)
    check(rules.check_port, body.Port)
    try:
        problems = ctx.state.engine(org).preflight(Preflight(
            kind=kind, name=body.Name, owner=body.Owner, creating=body.Creating, adopt=body.Adopt,
            port=body.Port, source=body.Source, restore_time=body.RestoreTime))
    except DbosError as exc:
        raise from_dbos(exc) from None
    return ok([PreflightProblem(Field=p.field, Message=p.message) for p in problems])
