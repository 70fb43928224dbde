"""Application routes (A1-A8 of DBOS Cloud's API, secrets, logs) over the local engine's apps.

An app is *registered* first (serve keeps the registration: its database, language, memory) and
*deployed* later: a deploy runs the local engine's ``deploy_app`` synchronously, with the instance's
credentials serve holds and the app's secrets as its environment. Version ids are the archive's
digest, the same rule as :func:`pulumi_dbos.appsource.pack`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import uuid
import zipfile
from typing import Any

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse, Response

from ..appsource import ArchiveLimitError, check_archive
from ..cloudapi import paths
from ..cloudapi.models import (
    Application,
    ApplicationVersion,
    ChangeDatabaseRequest,
    DeleteAppRequest,
    DeployOutput,
    DeployRequest,
    LogsOutput,
    RegisterRequest,
    SecretRequest,
    UpdateAppRequest,
)
from ..config import rules
from ..dbos_config import CONFIG, from_archive
from ..engine.contract import AppDatabaseAccess, AppDeploy, AppInfo
from ..errors import DbosError, NotFoundError, ValidationError
from . import exact
from .databases import not_found as db_not_found
from .deps import Ctx, Org, ServeContext
from .http import ApiError, as_int, check, ok, status_of, valid_name, validation_message
from .limits import Limits
from .state import ServeState

log = logging.getLogger("pulumi_dbos.serve")

LANGUAGES = ("node", "python")
MAX_SECRET = 64 * 1024
#: the flag of each archive limit (:class:`pulumi_dbos.appsource.ArchiveLimitError`'s ``limit``)
ARCHIVE_FLAGS = {"total": "--max-archive-mib", "entries": "--max-archive-entries", "entry": "--max-archive-entry-mib"}
DEFAULT_MEMORY_MIB = 512


def app_not_found(app: str) -> ApiError:
    return ApiError(404, f"application {app} not found")  # the CLI matches this text


def archive_config(archive: bytes) -> dict[str, Any]:
    """The archive's root ``dbos-config.yaml`` as a mapping (``dbos_config.from_archive``; 400 naming the problem
    when it is not a zip holding one)."""
    try:
        return from_archive(archive)
    except ValidationError as exc:
        raise ApiError(400, "; ".join(msg for _key, msg in exc.problems)) from None


def checked_archive(archive: bytes, limits: Limits) -> bytes:
    """The archive once within this server's limits (uncompressed total, entry count, one entry's size: by its
    central directory and by decompressing it, nothing stored), without its directory entries (``sub/``: the
    official CLI's JSZip archives carry them; the local engine's versions hold files only). 400 naming the
    limit otherwise."""
    try:
        return check_archive(archive, max_total=limits.max_archive, max_entries=limits.max_archive_entries,
                             max_entry=limits.max_archive_entry, drop_directories=True)
    except ArchiveLimitError as exc:
        flag = ARCHIVE_FLAGS[exc.limit]
        raise ApiError(400, f"application_archive refused: {validation_message(exc)} (this server's limit, "
                       f"{flag}): make the archive smaller (.dbosignore what the app does not need)") from None
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError, NotImplementedError):
        raise ApiError(400, "application_archive is not a readable zip archive") from None


#: DBOS Cloud's app routes (an extension's field is ignored under --cloud-exact, see ``exact``)
r = APIRouter()


def engine_app(ctx: ServeContext, org: str, app: str) -> AppInfo | None:
    return ctx.state.engine(org).apps.info(app) if ctx.state.has_catalog(org) else None


def view(ctx: ServeContext, org: str, app: str) -> Application | None:
    reg = ctx.state.apps.get(org, app)
    info = engine_app(ctx, org, app)
    if reg is None and info is None:
        return None
    reg = reg or {}
    deployed = info is not None and bool(info.version)
    if deployed and info is not None:
        status, version, url, db_name = info.status, info.version or "", info.app_url.rstrip("/") + "/", \
            info.app_db_name
    else:
        status, version, url, db_name = "REGISTERED", "", "", ""
    return Application(
        Name=app, ID=str(reg.get("ID") or app),
        PostgresInstanceName=info.instance_name if deployed and info else str(reg.get("database", "")),
        ApplicationDatabaseName=db_name, Status=status, Version=version, AppURL=url,
        ExecutorsMemoryMib=int(reg.get("ExecutorsMemoryMib") or DEFAULT_MEMORY_MIB),
        Port=info.port if info else reg.get("Port"), Owner=(info.owner if info else None) or reg.get("Owner"))


def view_or_404(ctx: ServeContext, org: str, app: str) -> Application:
    v = view(ctx, org, app) if valid_name(app) else None
    if v is None:
        raise app_not_found(app)
    return v


# ------------------------------------------------------------------ secrets (first: POST .../applications/secrets
# would otherwise be taken for a deploy of an app named `secrets`, a name register refuses)
@r.post(paths.APP_SECRETS)
def create_secret(org: Org, body: SecretRequest, ctx: Ctx) -> Response:
    view_or_404(ctx, org, body.ApplicationName)
    problem = rules.env_name_problem(body.SecretName)  # the engine checks again at every deploy
    if problem:
        raise ApiError(400, f"invalid secret name: {problem}")
    if len(body.ClearSecretValue) > MAX_SECRET:
        raise ApiError(400, f"a secret's value is limited to {MAX_SECRET} characters")
    if "\x00" in body.ClearSecretValue:
        raise ApiError(400, "a secret's value cannot contain a NUL character (it becomes an environment variable)")
    ctx.state.secrets.update(org, body.ApplicationName,
                         lambda old: {**(old or {}), body.SecretName: body.ClearSecretValue})
    log.info("org %s: secret %s of %s set", org, body.SecretName, body.ApplicationName)
    return JSONResponse({"ApplicationName": body.ApplicationName, "SecretName": body.SecretName},
                        status_code=200)  # the CLI wants exactly 200


# ------------------------------------------------------------------ A1-A3
@r.get(paths.APPS)
def list_apps(org: Org, ctx: Ctx) -> Response:
    names = set(ctx.state.apps.items(org))
    if ctx.state.has_catalog(org):
        names |= {a.name for a in ctx.state.engine(org).apps.all()}
    return ctx.respond([v for v in (view(ctx, org, n) for n in sorted(names)) if v is not None])


@r.get(paths.APP)
def get_app(org: Org, app: str, ctx: Ctx) -> Response:
    return ctx.respond(view_or_404(ctx, org, app))


@r.put(paths.APPS)
def register(org: Org, body: RegisterRequest, ctx: Ctx) -> Response:
    if ctx.cloud_exact:
        body = exact.ignore_extensions(body, "register")
    check(rules.check_app_name, body.name)
    if body.name == "secrets":
        raise ApiError(400, "app_name `secrets` is reserved (its paths are the secrets')")
    if body.language not in LANGUAGES:
        raise ApiError(400, f"language must be one of {', '.join(LANGUAGES)}, got {body.language!r}")
    memory = as_int(body.executors_memory_mib, "executors_memory_mib", 128, 65536)
    check(rules.check_port, body.Port)
    if not valid_name(body.database) or not ctx.state.has_catalog(org) \
            or ctx.state.engine(org).info(body.database) is None:
        raise db_not_found(body.database)
    with ctx.state.locked("app", org, body.name), ctx.state.locked("app-quota", org):
        if view(ctx, org, body.name) is not None:
            raise ApiError(409, f"application {body.name} is already registered")
        known = set(ctx.state.apps.items(org)) | ({a.name for a in ctx.state.engine(org).apps.all()}
                                              if ctx.state.has_catalog(org) else set())
        if len(known) >= ctx.limits.max_apps:
            raise ApiError(400, f"organization {org} has {len(known)} applications, the most this server allows "
                           f"(--max-apps {ctx.limits.max_apps}): delete one first")
        app_id = str(uuid.uuid4())
        ctx.state.apps.set(org, body.name, {
            "ID": app_id, "database": body.database, "language": body.language,
            "ExecutorsMemoryMib": memory or DEFAULT_MEMORY_MIB, "provenancedb": body.provenancedb,
            "Port": body.Port, "Owner": body.Owner})
    log.info("org %s: registered app %s on %s", org, body.name, body.database)
    return JSONResponse(app_id)


# ------------------------------------------------------------------ A4-A5 deploy
def deploy(ctx: ServeContext, org: str, app: str, body: DeployRequest, target: str | None) -> DeployOutput:
    current = view_or_404(ctx, org, app)
    if ctx.cloud_exact:
        body = exact.ignore_extensions(body, "deploy")
    if (body.application_archive is None) == (body.previous_version is None):
        raise ApiError(400, "send exactly one of application_archive and previous_version")
    reg: dict[str, Any] = ctx.state.apps.get(org, app) or {}
    check(rules.check_port, body.Port)
    port = body.Port if body.Port is not None else reg.get("Port")
    instance = target or current.PostgresInstanceName
    eng = ctx.state.engine(org)
    if not valid_name(instance) or not ctx.state.has_catalog(org) or eng.info(instance) is None:
        raise db_not_found(instance)
    creds = ctx.state.credentials(org, instance)
    if creds is None:
        raise ApiError(400, f"this server holds no credentials for database {instance} (it was not provisioned, "
                       "restored or linked through this server)")
    info = eng.info(instance)
    assert info is not None
    if info.status == "stopped":
        info = eng.ensure_running(instance)
    archive: bytes | None = None
    deployed = engine_app(ctx, org, app)
    if body.application_archive is not None:
        try:
            archive = base64.b64decode(body.application_archive, validate=True)
        except (binascii.Error, ValueError):
            raise ApiError(400, "application_archive is not base64") from None
        version = hashlib.sha256(archive).hexdigest()[:12]  # appsource.pack's rule, on the bytes sent
        if ctx.cloud_exact:  # DBOS Cloud numbers each deploy
            version = exact.next_version(reg, [v.version for v in eng.apps.versions(app)]
                                         if ctx.state.has_catalog(org) else [])
        archive = checked_archive(archive, ctx.limits)  # before anything is read out of it or stored
        cfg = archive_config(archive)
        language = cfg.get("language") or reg.get("language") or "python"
        if language != "python":
            raise ApiError(400, f"this server runs Python apps only (the app's language is {language!r}): set "
                           f"`language: python` in {CONFIG}")
        db = cfg.get("database")
        from_config = db.get("app_db_name") if isinstance(db, dict) else None
        app_db_name = body.AppDbName or (from_config if isinstance(from_config, str) and from_config else None) \
            or (deployed.app_db_name if deployed and deployed.version else None) or app
    else:
        version = str(body.previous_version)
        known = [v.version for v in eng.apps.versions(app)] if ctx.state.has_catalog(org) else []
        if version not in known:
            raise ApiError(400, f"version {version} of {app} is not stored; known: {', '.join(known) or 'none'}")
        app_db_name = body.AppDbName or (deployed.app_db_name if deployed else None) or app
    check(rules.check_db_name, app_db_name)
    env = {k: str(v) for k, v in ctx.state.secrets.items(org).get(app, {}).items()}
    access = AppDatabaseAccess(instance, info.hostname, info.port, creds.username, creds.password)
    req = AppDeploy(app, version, archive, access, app_db_name, env,
                    port=port, owner=(deployed.owner if deployed else None) or reg.get("Owner"),
                    memory_mib=int(reg.get("ExecutorsMemoryMib") or DEFAULT_MEMORY_MIB))
    with ctx.state.locked("app", org, app):
        try:
            eng.apps.deploy(req)
        except DbosError as exc:
            detail = validation_message(exc) if isinstance(exc, ValidationError) else exc.message
            log.warning("org %s: deploy of %s version %s failed", org, app, version)
            raise ApiError(status_of(exc) if status_of(exc) != 404 else 400,
                           f"deploy of {app} version {version} failed: {detail.splitlines()[0]}",
                           detailed=detail) from None
        numbered = {"LastVersion": int(version)} if ctx.cloud_exact and archive is not None else {}
        ctx.state.apps.update(org, app, lambda old: {**(old or {"ID": str(uuid.uuid4()), "language": "python"}),
                                                 "database": instance, "Port": port, **numbered})
    log.info("org %s: deployed %s version %s on %s", org, app, version, instance)
    return DeployOutput(ApplicationName=app, ApplicationVersion=version)


@r.post(paths.APP)
def deploy_app(org: Org, app: str, body: DeployRequest, ctx: Ctx) -> Response:
    return ctx.respond(deploy(ctx, org, app, body, None))


@r.post(paths.APP_CHANGE_DB)
def change_database(org: Org, app: str, body: ChangeDatabaseRequest, ctx: Ctx) -> Response:
    view_or_404(ctx, org, app)
    return ctx.respond(deploy(ctx, org, app, body, body.target_database_name))


# ------------------------------------------------------------------ A6-A8
@r.delete(paths.APP)
def delete_app(org: Org, app: str, ctx: Ctx, body: DeleteAppRequest | None = None) -> Response:
    view_or_404(ctx, org, app)
    with ctx.state.locked("app", org, app):
        info = engine_app(ctx, org, app)
        if info is not None:
            ctx.state.engine(org).apps.delete(app)
        if body is not None and body.dropdb and info is not None and info.app_db_name:
            drop_app_databases(ctx.state, org, info.instance_name, info.app_db_name)
        ctx.state.apps.delete(org, app)
        ctx.state.secrets.delete(org, app)
    log.info("org %s: deleted app %s%s", org, app, " and its databases" if body and body.dropdb else "")
    return Response(status_code=204)


@r.get(paths.APP_VERSIONS)
def versions(org: Org, app: str, ctx: Ctx) -> Response:
    view_or_404(ctx, org, app)
    vs = ctx.state.engine(org).apps.versions(app) if ctx.state.has_catalog(org) else []
    return ok([ApplicationVersion(ApplicationName=app, Version=v.version, CreationTime=v.created_at) for v in vs])


@r.patch(paths.APP)
def update(org: Org, app: str, body: UpdateAppRequest, ctx: Ctx) -> Response:
    current = view_or_404(ctx, org, app)
    memory = as_int(body.executors_memory_mib, "executors_memory_mib", 128, 65536)
    min_vms = as_int(body.min_vms, "min_vms", 0, 100)

    def apply(old: Any) -> dict[str, Any]:
        new = dict(old or {"ID": current.ID, "database": current.PostgresInstanceName, "language": "python"})
        if memory is not None:
            new["ExecutorsMemoryMib"] = memory
        if min_vms is not None:
            new["MinVms"] = min_vms
        return new

    ctx.state.apps.update(org, app, apply)
    return ctx.respond(view_or_404(ctx, org, app))


@r.get(paths.APP_SECRET_LIST)
def list_secrets(org: Org, app: str, ctx: Ctx) -> Response:
    view_or_404(ctx, org, app)
    return JSONResponse(sorted(ctx.state.secrets.get(org, app) or {}))


@r.delete(paths.APP_SECRET)
def delete_secret(org: Org, app: str, secret: str, ctx: Ctx) -> Response:
    view_or_404(ctx, org, app)
    if secret not in (ctx.state.secrets.get(org, app) or {}):
        raise ApiError(404, f"secret {secret} of application {app} not found")
    ctx.state.secrets.update(org, app, lambda old: {k: v for k, v in (old or {}).items() if k != secret} or None)
    log.info("org %s: secret %s of %s deleted", org, secret, app)
    return Response(status_code=204)  # the CLI wants exactly 204


# ------------------------------------------------------------------ logs
@r.get(paths.APP_LOGS)
def logs(org: Org, app: str, ctx: Ctx, limit: int | None = Query(None)) -> Response:
    # `last`, `format=json` and `since` (the CLI's) are accepted and ignored: the whole tail is one page
    view_or_404(ctx, org, app)
    lines = max(1, min(limit or 1000, 100_000))
    try:
        body = ctx.state.engine(org).apps.logs(app, lines) if ctx.state.has_catalog(org) else ""
    except NotFoundError:
        body = ""  # registered, never deployed
    return ok(LogsOutput(body=body, end=True, next_timestamp=None))


def drop_app_databases(state: ServeState, org: str, instance: str, app_db_name: str) -> None:
    """``--dropdb``: the app's database and its DBOS system database, on its instance (as its admin user)."""
    from ..apps import Conn, drop_database

    eng = state.engine(org)
    info = eng.info(instance)
    creds = state.credentials(org, instance)
    if info is None:
        return  # the instance is gone, and its databases with it
    if creds is None:
        raise ApiError(400, f"this server holds no credentials for database {instance}: cannot drop {app_db_name}")
    admin = Conn(info.hostname, info.port, creds.username, creds.password)
    for name in (app_db_name, f"{app_db_name}_dbos_sys"):
        drop_database(admin, name)
