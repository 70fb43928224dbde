"""The FastAPI application: authentication, error bodies, the profile, and the database and app routes."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..cloudapi import paths
from ..cloudapi.models import SERVE_SERVER, UserProfile
from ..errors import DbosError
from . import applications, auth, databases, exact
from .background import Background
from .deps import ServeContext
from .http import ApiError, claims_of, error_response, ok, status_of
from .limits import BodyLimit, Limits, OrgGate, widen_thread_pool
from .state import ServeState

log = logging.getLogger("pulumi_dbos.serve")


def _validation_message(exc: RequestValidationError) -> str:
    """Where the body is wrong and why, never the values sent (a password may be one of them)."""
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(x) for x in err.get("loc", ()) if x != "body") or "body"
        parts.append(f"{loc}: {err.get('msg', 'invalid')}")
    return "invalid request: " + "; ".join(parts)


def create_app(state: ServeState, key: bytes, background: Background | None = None,
               limits: Limits | None = None, *, cloud_exact: bool = False) -> FastAPI:
    """The application. Its middlewares, outermost first: the body cap (413), authentication (401/403), the
    per-organization gate (a queue, then 429; see :mod:`.limits`), then the routes. ``cloud_exact``: DBOS
    Cloud's API without pulumi-dbos's extensions (see :mod:`.exact`)."""
    limits = limits or Limits()

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        widen_thread_pool()
        if background is not None:
            background.start()
        try:
            yield
        finally:
            if background is not None:
                background.stop()

    app = FastAPI(title="pulumi-dbos serve: DBOS Cloud's API over the local engine", docs_url=None,
                  redoc_url=None, lifespan=lifespan)
    app.state.serve = ServeContext(state, limits, cloud_exact)  # what the routes are given (``deps.Ctx``)
    app.add_middleware(OrgGate, limits=limits)  # added first: inside authentication (the token's org)

    @app.middleware("http")
    async def authenticate(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        parts = request.url.path.split("/")
        if len(parts) > 2 and f"/{parts[1]}" == paths.PREFIX:
            scheme, _, token = request.headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                return error_response(401, "missing bearer token (Authorization: Bearer <token from "
                                      "`pulumi-dbos serve token`)")
            try:
                claims = auth.verify(key, token.strip())
            except auth.AuthError as exc:
                return error_response(401, exc.message)
            if parts[2] != "user" and parts[2] != claims.org:
                return error_response(403, f"this token cannot access organization {parts[2]}")
            request.state.claims = claims
        return await call_next(request)

    app.add_middleware(BodyLimit, limit=limits.max_body)  # added last: the outermost

    @app.exception_handler(ApiError)
    async def api_error(_request: Request, exc: ApiError) -> Response:
        return error_response(exc.status, exc.message, exc.detailed)

    @app.exception_handler(DbosError)
    async def dbos_error(request: Request, exc: DbosError) -> Response:
        status = status_of(exc)
        if status >= 500:
            log.error("%s %s failed: %s", request.method, request.url.path, exc.message)
        return error_response(status, exc.message)

    @app.exception_handler(RequestValidationError)
    async def bad_request(_request: Request, exc: RequestValidationError) -> Response:
        return error_response(422, _validation_message(exc))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        message = exc.detail if isinstance(exc.detail, str) else "error"
        if cloud_exact and exc.status_code == 405:  # e.g. PATCH databases/userdb/{name}: no such route there
            return error_response(404, f"no such route: {request.method} {request.url.path}")
        if exc.status_code == 404 and message == "Not Found":
            message = f"no such route: {request.method} {request.url.path}"
        return error_response(exc.status_code, message)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> Response:
        log.error("%s %s: unexpected %s", request.method, request.url.path, type(exc).__name__, exc_info=exc)
        return error_response(500, "internal error of pulumi-dbos serve (its log has the details)")

    @app.get(paths.PROFILE)
    def profile(request: Request) -> Response:
        c = claims_of(request)
        return (exact.ok if cloud_exact else ok)(UserProfile(
            Name=c.user, Email=f"{c.user}@{c.org}.local", Organization=c.org, SubscriptionPlan="pulumi-dbos",
            Server=None if cloud_exact else SERVE_SERVER))

    app.include_router(databases.r)
    if not cloud_exact:
        app.include_router(databases.ext)
    app.include_router(applications.r)
    return app


__all__ = ["ApiError", "create_app"]
