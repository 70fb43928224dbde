"""The app half of the dbos-cloud engine (DBOS Cloud's ``app ...``): register, env, deploy, waits, delete.

A deploy is what ``dbos-cloud app deploy`` / ``app change-database-instance`` send — register an app
that is not there yet (``PUT applications``; never a database on the way: the official CLI would
provision a missing one), set its environment through the secrets endpoints, then ``POST`` the archive
(or a stored ``previous_version``) to the app, or to ``changedbinstance`` when the instance changes —
followed by a wait the CLI does not have: until the app is ``AVAILABLE`` *with the new version*,
with a deadline and failure states, the error carrying DBOS Cloud's log tail. The database password
of :class:`AppDeploy` is not sent: DBOS Cloud holds the instance's credentials itself.
"""

from __future__ import annotations

import base64
import logging
from typing import Any

from ...appsource import with_app_db_name
from ...cloudapi import paths
from ...cloudapi.models import (
    APP_READY,
    Application,
    ApplicationVersion,
    ChangeDatabaseRequest,
    DeployOutput,
    DeployRequest,
    LogsOutput,
    RegisterRequest,
    SecretRequest,
    dump,
)
from ...errors import DbosError, EngineError, NotFoundError, TimeoutExpired, ValidationError
from .. import settings
from ..contract import AppDeploy, AppInfo, AppVersion, Problem, taken_app
from . import convert
from .answers import parse, parse_list
from .client import LONG_TIMEOUT, poll
from .session import CloudSession
from .tokens import mask

log = logging.getLogger("pulumi_dbos.engine.dbos_cloud")

#: How long a deploy may take to become available before it is reported as failed.
CLOUD_APP_PORT = ("DBOS Cloud gives each app its own URL (https://<organization>-<app>.<domain>): remove `port`, "
                  "or use pulumi-dbos serve or the local engine")
_LOG_TAIL = 25


class CloudApps:
    """Apps of the engine's organization; holds nothing but the engine's session and its deadline."""

    def __init__(self, engine: CloudSession, deadline: float | None = None) -> None:
        self.engine = engine
        self.deadline = settings.from_env().cloud_app_deadline if deadline is None else deadline

    def _call(self, method: str, template: str, *, what: str, **kw: Any) -> Any:
        return self.engine.call(method, template, what=what, **kw)

    def _get(self, name: str) -> Application | None:
        """The app, or None (DBOS Cloud: 404 ``application NAME not found`` = not registered)."""
        return self.engine.read(Application, paths.APP, what=f"reading app {name!r}", label=f"app {name!r}",
                                app=name)

    # ---------------------------------------------------------------- reads
    def versions(self, name: str) -> list[AppVersion]:
        try:
            data = self._call("GET", paths.APP_VERSIONS, what=f"listing the versions of app {name!r}", app=name)
        except NotFoundError:
            return []
        return convert.versions(parse_list(ApplicationVersion, data or [], f"the versions of app {name!r}"))

    def info(self, name: str) -> AppInfo | None:
        app = self._get(name)
        return None if app is None else convert.app_info(app, self.versions(name))

    def _list(self) -> list[Application]:
        return parse_list(Application, self._call("GET", paths.APPS, what="listing apps") or [], "the app list")

    def all(self) -> list[AppInfo]:
        return [convert.app_info(app, self.versions(app.Name)) for app in self._list()]

    def logs(self, name: str, lines: int = 100) -> str:
        data = self._call("GET", paths.APP_LOGS, what=f"reading the logs of app {name!r}", app=name,
                          params={"last": lines, "limit": lines, "format": "json"})
        if data is None:
            return ""
        if isinstance(data, str):
            return data
        return parse(LogsOutput, data, f"the logs of app {name!r}").body

    # ---------------------------------------------------------------- checks
    def preflight(self, name: str, *, port: int | None, version: str | None, owner: str | None,
                  creating: bool, adopt: bool = False) -> list[Problem]:
        problems: list[Problem] = []
        app = self._get(name)
        taken = taken_app(name, self.engine.describe(), app.Owner, owner, adopt) if creating and app else None
        if taken is not None:
            problems.append(taken)
        if port is not None:
            if not self.engine.serve:
                problems.append(Problem("port", CLOUD_APP_PORT))
            elif app is None or app.Port != port:
                used = {a.Port: a.Name for a in self._list() if a.Port is not None and a.Name != name}
                used.update({i.port: i.name for i in self.engine.list() if not i.is_linked and i.port not in used})
                if port in used:
                    problems.append(Problem("port", f"port {port} is already used by {used[port]!r}"))
        if version is not None:
            known = [v.version for v in self.versions(name)] if app is not None else []
            if version not in known:
                problems.append(Problem("previous_version", f"previous_version {version!r} is not a stored version "
                                        f"of {name!r}; known: {', '.join(known) or 'none yet'}"))
        return problems

    # ---------------------------------------------------------------- deploy
    def deploy(self, req: AppDeploy) -> AppInfo:
        serve = self.engine.serve
        name, instance = req.app_name, req.database.instance_name
        masks = [req.database.password, *req.env.values()]
        if req.port is not None and not serve:
            raise ValidationError([("port", CLOUD_APP_PORT)])
        app = self._get(name)
        if req.archive is None:
            known = [v.version for v in self.versions(name)] if app is not None else []
            if req.version not in known:
                raise EngineError(f"version {req.version!r} of app {name!r} is not stored (known: "
                                  f"{', '.join(known) or 'none'})", hint="previous_version must be a deployed version")
        if app is not None and not serve and app.ApplicationDatabaseName \
                and app.ApplicationDatabaseName != req.app_db_name:
            raise ValidationError([("app_db_name", f"app {name!r} is deployed with app_db_name "
                                    f"{app.ApplicationDatabaseName!r}; DBOS Cloud cannot change it to {req.app_db_name!r}")])
        before = None if app is None else (app.Status, app.Version)
        if app is None:
            self._register(req)
        self._sync_env(name, req.env, existed=app is not None)
        payload = req.archive
        if payload is not None and not serve:  # DBOS Cloud reads the app's database from the uploaded config only
            payload = with_app_db_name(payload, req.app_db_name)
        archive = base64.b64encode(payload).decode() if payload is not None else None
        common: dict[str, Any] = dict(application_archive=archive,
                                      previous_version=None if archive is not None else req.version)
        if serve:
            common["AppDbName"] = req.app_db_name
            common["Port"] = req.port  # a change moves the app there (serve's extension)
        if app is not None and app.PostgresInstanceName != instance:
            what = f"moving app {name!r} to instance {instance!r}"
            data = self._call("POST", paths.APP_CHANGE_DB, what=what, app=name, secrets=masks, timeout=LONG_TIMEOUT,
                              body=dump(ChangeDatabaseRequest(**common, target_database_name=instance)))
        else:
            what = f"deploying app {name!r}"
            data = self._call("POST", paths.APP, what=what, app=name, secrets=masks, timeout=LONG_TIMEOUT,
                              body=dump(DeployRequest(**common)))
        version = parse(DeployOutput, data, what).ApplicationVersion
        if serve and req.archive is not None and version != req.version:
            log.warning("app %r: the server stored version %r for content %r", name, version, req.version)
        try:
            app = self._wait_available(name, version, before, masks)
        except _NotTheDeploys as exc:
            raise self._accepted_but(name, version, exc.error) from None
        try:
            return convert.app_info(app, self.versions(name))
        except DbosError as exc:
            raise self._accepted_but(name, version, exc) from None

    def _accepted_but(self, name: str, version: str, exc: DbosError) -> DbosError:
        """A failure past the accepted deploy that is not the deploy's own (a token that expired meanwhile,
        the server gone): say what was done, and how the stack's state catches up."""
        return DbosError(f"app {name!r}: version {version} was deployed ({self.engine.describe()} accepted it), but "
                         f"what followed failed: {exc.message}",
                         hint="the stack's state still records the previous version: with a fresh token "
                         "(`pulumi config set --secret dbos:cloudToken`) run `pulumi refresh`, then `pulumi up`"
                         + (f" ({exc.hint})" if exc.hint else ""))

    def _register(self, req: AppDeploy) -> None:
        ext: dict[str, Any] = dict(Port=req.port, Owner=req.owner) if self.engine.serve else {}
        body = RegisterRequest(name=req.app_name, database=req.database.instance_name, language="python", **ext)
        try:
            self._call("PUT", paths.APPS, what=f"registering app {req.app_name!r}", body=dump(body))
        except NotFoundError as exc:
            raise NotFoundError(exc.message, hint=f"instance {req.database.instance_name!r} must exist first: "
                                "this engine never provisions one on the way (the official CLI would)") from None

    def _sync_env(self, name: str, env: dict[str, str], *, existed: bool) -> None:
        """The app's environment is ``env`` exactly: each variable set (DBOS Cloud's secrets), stale ones removed."""
        if existed:
            data = self._call("GET", paths.APP_SECRET_LIST, what=f"listing the environment of app {name!r}", app=name)
            for stale in sorted(_secret_names(data) - set(env)):
                try:
                    self._call("DELETE", paths.APP_SECRET, what=f"removing variable {stale!r} of app {name!r}",
                               app=name, secret=stale)
                except NotFoundError:
                    pass
        for key, value in sorted(env.items()):
            self._call("POST", paths.APP_SECRETS, what=f"setting variable {key!r} of app {name!r}", secrets=[value],
                       body=dump(SecretRequest(ApplicationName=name, SecretName=key, ClearSecretValue=value)))

    def _wait_available(self, name: str, version: str, before: tuple[str, str] | None,
                        masks: list[str]) -> Application:
        def probe() -> Application | None:
            try:
                app = self._get(name)
            except DbosError as exc:  # no answer about the app at all (a refused token, no server)
                raise _NotTheDeploys(exc) from None
            if app is None:
                raise EngineError(f"app {name!r} disappeared during its deploy")
            if app.Status == APP_READY and app.Version == version:
                return app
            # a failure state seen already before the deploy (the old version crashed) is not this deploy's
            if convert.app_failed(app.Status) and (app.Version == version or (app.Status, app.Version) != before):
                raise self._failure(name, version, f"DBOS Cloud reports status {app.Status}", masks, app)
            return None

        try:
            app: Application = poll(probe, self.deadline, f"app {name!r} version {version} did not become "
                                    f"{APP_READY}", sleep=self.engine.sleep)
            return app
        except TimeoutExpired as exc:
            raise self._failure(name, version, exc.message, masks, None) from None

    def _failure(self, name: str, version: str, why: str, masks: list[str], app: Application | None) -> DbosError:
        detail = ""
        extra = (app.model_extra or {}) if app is not None else {}
        if isinstance(extra.get("DetailedError"), str) and extra["DetailedError"].strip():
            detail = "\n" + str(extra["DetailedError"]).strip()
        try:
            tail = "\n".join(self.logs(name, _LOG_TAIL).splitlines()[-_LOG_TAIL:])
        except DbosError:
            tail = ""
        text = mask(f"app {name!r} version {version}: {why}{detail}"
                    + (f". Last log lines:\n{tail}" if tail.strip() else ""), masks)
        return EngineError(text, hint=f"`pulumi-dbos app logs {name}` shows more")

    # ---------------------------------------------------------------- delete
    def delete(self, name: str) -> None:
        """``app delete`` without --dropdb (the databases are the caller's), then wait until it is gone."""
        try:
            self._call("DELETE", paths.APP, what=f"deleting app {name!r}", app=name, body={})
        except NotFoundError:
            return
        poll(lambda: True if all(a.Name != name for a in self._list()) else None, self.deadline,
             f"app {name!r} was not deleted", sleep=self.engine.sleep)


class _NotTheDeploys(Exception):
    """A failure while waiting for an accepted deploy that says nothing about the deploy itself."""

    def __init__(self, error: DbosError) -> None:
        super().__init__(error.message)
        self.error = error


def _secret_names(data: Any) -> set[str]:
    """Names in the secrets list (DBOS Cloud's shape is not documented: strings or objects)."""
    out: set[str] = set()
    for item in data if isinstance(data, list) else []:
        if isinstance(item, str):
            out.add(item)
        elif isinstance(item, dict):
            for key in ("SecretName", "Name", "name", "secret_name"):
                if isinstance(item.get(key), str):
                    out.add(item[key])
                    break
    return out
