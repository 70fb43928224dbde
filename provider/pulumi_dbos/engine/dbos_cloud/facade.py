"""The ``dbos-cloud`` engine: the engine contract over DBOS Cloud's REST API (or ``pulumi-dbos serve``).

A thin facade over :mod:`.client` (HTTP, retries, errors), :mod:`.checks` (preflight from one cached
list), :mod:`.convert` (wire bodies → contract records) and :mod:`.apps` (the ``app ...`` half).

What the official CLI leaves out, this engine adds: its own deadlines and failure states on every
wait (the CLI polls forever), a rollback of a create that failed halfway, and **never** a call
sequence that would provision something by accident (the CLI provisions a missing instance on
``db reset-password``/``db url``; here a missing name is a NotFoundError, found by ``info`` first).

Fields and routes marked *extension* in :mod:`pulumi_dbos.cloudapi.models` are used only when the
server announced itself as ``pulumi-dbos serve``; on DBOS Cloud what only they can do (a chosen
port, retention, stop/start, backups, restore windows) is refused with a message naming the field.

Preview and refresh of N resources cost O(1) calls: ``list()`` is cached for ``LIST_TTL`` seconds per
engine object and dropped by every mutation this object makes; ``info(name)`` reads that list.
"""

from __future__ import annotations

import builtins
import dataclasses
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import httpx

from ...cloudapi import paths
from ...cloudapi.models import (
    BackupOutput,
    CredentialsRequest,
    DatabasePatch,
    LinkRequest,
    PreflightProblem,
    PreflightRequest,
    ProvisionRequest,
    RestoreRequest,
    UserDBInstance,
    dump,
)
from ...errors import AlreadyExistsError, DbosError, EngineError, NotFoundError, ValidationError
from ...timeutil import parse_rfc3339, to_rfc3339, utcnow
from ..contract import (
    AppDeploy,
    AppInfo,
    AppVersion,
    BackupInfo,
    InstanceInfo,
    Kind,
    Preflight,
    Problem,
    Status,
)
from . import checks, convert
from .apps import CloudApps
from .client import DEFAULT_DOMAIN, DOMAIN_ENV, LONG_TIMEOUT, CloudClient, parse, parse_list, poll

log = logging.getLogger("pulumi_dbos.engine.dbos_cloud")

LIST_TTL = 2.0
#: How long a provision or restore may take before it is given up and rolled back.
DEADLINE = float(os.environ.get("PULUMI_DBOS_CLOUD_DEADLINE", "600"))
#: A new record may take a moment to show in ``info`` on an eventually consistent server.
_VISIBLE_GRACE = 5.0
_BUSY = (Status.CREATING.value, Status.RESTORING.value)
LINKED_USER = "dbosadmin"  # DBOS Cloud links every server as this user


class DbosCloudEngine:
    """Instances and apps of one DBOS Cloud organization (the token's), at ``domain``."""

    kind = "dbos-cloud"

    def __init__(self, domain: str | None = DEFAULT_DOMAIN, token: str | None = None, ca_cert: str | None = None, *,
                 deadline: float | None = None, app_deadline: float | None = None,
                 transport: httpx.BaseTransport | None = None, sleep: Callable[[float], None] = time.sleep,
                 backoff: float = 0.5) -> None:
        domain = domain or os.environ.get(DOMAIN_ENV) or DEFAULT_DOMAIN
        self.client = CloudClient(domain, token, ca_cert, transport=transport, sleep=sleep, backoff=backoff)
        self.deadline = DEADLINE if deadline is None else deadline
        self.sleep = sleep
        self._lock = threading.Lock()
        self._cache: tuple[float, list[InstanceInfo]] | None = None
        self._generation = 0
        self.apps = CloudApps(self, app_deadline)

    # ---------------------------------------------------------------- plumbing
    @property
    def domain(self) -> str:
        return self.client.domain

    @property
    def serve(self) -> bool:
        """Whether the server is ``pulumi-dbos serve`` (extensions understood)."""
        return self.client.profile.serve

    def describe(self) -> str:
        prof = self.client.cached_profile()  # never a call: describe() words errors, also unreachable ones
        if prof is None:
            return f"DBOS Cloud at {self.domain}"
        what = "pulumi-dbos serve" if prof.serve else "DBOS Cloud"
        return f"{what} at {self.domain} (organization {prof.organization})"

    def invalidate(self) -> None:
        """Forget the cached list (after a mutation; also one still in flight must not be stored)."""
        with self._lock:
            self._cache = None
            self._generation += 1

    @contextmanager
    def _mutating(self) -> Iterator[None]:
        self.invalidate()
        try:
            yield
        finally:
            self.invalidate()

    def call(self, method: str, template: str, *, what: str, **kw: Any) -> Any:
        return self.client.call(method, template, what=what, **kw)

    def _get(self, name: str) -> UserDBInstance | None:
        """The instance now (not cached), or None."""
        try:
            data = self.call("GET", paths.DB_INFO, what=f"reading instance {name!r}", name=name)
        except NotFoundError:
            return None
        return parse(UserDBInstance, data, f"instance {name!r}")

    def _require(self, name: str) -> UserDBInstance:
        db = self._get(name)
        if db is None:
            raise NotFoundError(f"instance {name!r} does not exist in {self.describe()}",
                                hint="`pulumi-dbos db list` shows the instances of this organization")
        return db

    def _current(self, name: str) -> InstanceInfo:
        db = self._get(name)
        if db is None:
            raise NotFoundError(f"instance {name!r} disappeared from {self.describe()}",
                                hint="run `pulumi refresh`, then `pulumi up` to recreate it")
        return convert.instance_info(db)

    def _require_served(self, what: str, field: str) -> None:
        if not self.serve:
            raise checks.not_supported(what, field)

    # ---------------------------------------------------------------- contract: reads
    def list(self) -> builtins.list[InstanceInfo]:
        with self._lock:
            if self._cache is not None and time.monotonic() - self._cache[0] < LIST_TTL:
                return [dataclasses.replace(i) for i in self._cache[1]]
            generation = self._generation
        data = self.call("GET", paths.DATABASES, what="listing instances")
        items = [convert.instance_info(db) for db in parse_list(UserDBInstance, data, "the instance list")]
        with self._lock:
            if generation == self._generation:
                self._cache = (time.monotonic(), items)
        return [dataclasses.replace(i) for i in items]

    def info(self, name: str) -> InstanceInfo | None:
        return next((i for i in self.list() if i.name == name), None)

    def preflight(self, req: Preflight) -> builtins.list[Problem]:
        problems = checks.preflight(req, self.list(), serve=self.serve, where=self.describe())
        if req.creating and self.serve:
            body = PreflightRequest(Kind=str(req.kind), Name=req.name, Owner=req.owner, Creating=req.creating,
                                    Adopt=req.adopt, Port=req.port, Source=req.source, RestoreTime=req.restore_time)
            data = self.call("POST", paths.DB_PREFLIGHT, what=f"checking instance {req.name!r}", body=dump(body))
            seen = {p.field for p in problems}
            for p in parse_list(PreflightProblem, data or [], "the preflight"):
                if p.Field not in seen:  # one problem per input: ours already say it
                    seen.add(p.Field)
                    problems.append(Problem(p.Field, p.Message))
        return problems

    # ---------------------------------------------------------------- creates
    def _rollback(self, name: str) -> str:
        """Remove a half-made instance, best effort (the create's error is what the user must see); how it went,
        for that error."""
        try:
            self.call("DELETE", paths.DB, what=f"removing half-made instance {name!r}", name=name)
        except NotFoundError:
            return "nothing was left behind"
        except DbosError as exc:
            log.warning("could not remove half-made instance %r: %s", name, exc.message)
            return (f"removing the half-made instance failed too ({exc.message.splitlines()[0]}): remove it with "
                    f"`dbos-cloud db destroy {name}`")
        try:
            self._wait_gone(name, min(self.deadline, 120.0))
        except DbosError:
            return "the half-made instance is still being removed"
        return "it was rolled back"

    def _failed(self, name: str, what: str, exc: DbosError) -> EngineError:
        return EngineError(f"{what} {name!r} failed: {exc.message}; {self._rollback(name)}", hint=exc.hint)

    def _create(self, name: str, what: str, post: Callable[[], object],
                after: Callable[[], object] | None = None) -> InstanceInfo:
        """POST a create, wait until the instance is ready, run ``after``; any failure past the POST removes
        what was made. A refused POST (taken name, bad input, missing source) made nothing: no rollback."""
        with self._mutating():
            try:
                post()
            except (AlreadyExistsError, ValidationError, NotFoundError):
                raise
            except DbosError as exc:
                if type(exc) is DbosError:  # refused token or organization: nothing was made
                    raise
                raise self._failed(name, what, exc) from None
            try:
                ready = self._wait_ready(name, what)
                if after is None:
                    return convert.instance_info(ready)
                after()
            except DbosError as exc:
                raise self._failed(name, what, exc) from None
            except BaseException:
                self._rollback(name)
                raise
        return self._current(name)

    def _wait_ready(self, name: str, what: str) -> UserDBInstance:
        started = time.monotonic()

        def probe() -> UserDBInstance | None:
            db = self._get(name)
            if db is None:
                if time.monotonic() - started < _VISIBLE_GRACE:
                    return None
                raise EngineError(f"{what} {name!r}: the instance is not there any more")
            if convert.db_ready(db.Status):
                return db
            if convert.db_failed(db.Status):
                raise EngineError(f"{what} {name!r}: DBOS Cloud reports status {db.Status!r}",
                                  hint="`pulumi-dbos db status` shows it; DBOS Cloud support can tell why")
            return None

        result: UserDBInstance = poll(probe, self.deadline, f"{what} {name!r} did not finish",
                                      hint="the deadline is PULUMI_DBOS_CLOUD_DEADLINE seconds", sleep=self.sleep)
        return result

    def _wait_gone(self, name: str, timeout: float) -> None:
        poll(lambda: True if self._get(name) is None else None, timeout,
             f"instance {name!r} was not removed", sleep=self.sleep)

    def _cloud_limits(self, port: int | None, retention_hours: int | None) -> None:
        """On DBOS Cloud (no extensions) a chosen port or retention cannot be honoured: refuse, naming it."""
        if self.serve:
            return
        problems = []
        if port is not None:
            problems.append(("port", checks.CLOUD_PORT))
        if retention_hours is not None and retention_hours != convert.DEFAULT_RETENTION_HOURS:
            problems.append(("retention_hours", checks.CLOUD_RETENTION))
        if problems:
            raise ValidationError(problems)

    def _refuse_taken(self, name: str) -> None:
        if self._get(name) is not None:
            raise AlreadyExistsError(f"an instance named {name!r} already exists in {self.describe()}",
                                     hint="choose another instance_name, or set adopt=True to take it over")

    # ---------------------------------------------------------------- contract: instances
    def provision(self, name: str, username: str, password: str, *, port: int | None = None,
                  retention_hours: int = 24, owner: str | None = None) -> InstanceInfo:
        self._cloud_limits(port, retention_hours)
        self._refuse_taken(name)
        ext: dict[str, Any] = dict(Port=port, RetentionHours=retention_hours, Owner=owner) if self.serve else {}
        body = dump(ProvisionRequest(Name=name, AdminName=username, AdminPassword=password, **ext))
        return self._create(name, "provisioning instance", lambda: self.call(
            "POST", paths.PROVISION, what=f"provisioning instance {name!r}", body=body, secrets=[password],
            timeout=LONG_TIMEOUT))

    def takeover(self, name: str, owner: str | None, *, adopt: bool = False) -> InstanceInfo | None:
        db = self._get(name)
        if db is None:
            return None
        info = convert.instance_info(db)
        ours = owner is not None and info.owner == owner
        if ours and info.status in _BUSY:
            log.warning("removing half-made instance %r left by an interrupted create", name)
            self.destroy(name)
            return None
        if not ours and not adopt:
            return None
        if not ours and self.serve:
            self._patch(name, DatabasePatch(Owner=owner), "taking over")
        return self.ensure_running(name)

    def _patch(self, name: str, patch: DatabasePatch, what: str) -> InstanceInfo:
        with self._mutating():
            self.call("PATCH", paths.DB, what=f"{what} instance {name!r}", body=dump(patch), name=name,
                      timeout=LONG_TIMEOUT)
        return self._current(name)

    def ensure_running(self, name: str) -> InstanceInfo:
        db = self._require(name)
        if db.IsLinked or convert.db_ready(db.Status):
            return convert.instance_info(db)
        if not self.serve:
            raise DbosError(f"instance {name!r} is {db.Status!r} on DBOS Cloud; DBOS Cloud's API cannot start it",
                            hint="wait until DBOS Cloud has it available again, or ask DBOS Cloud support")
        with self._mutating():
            self.call("POST", paths.DB_START, what=f"starting instance {name!r}", name=name, timeout=LONG_TIMEOUT)
        return self._current(name)

    start = ensure_running  # the CLI's name

    def stop(self, name: str) -> InstanceInfo:
        db = self._require(name)
        if db.IsLinked:
            return convert.instance_info(db)
        self._require_served("stop an instance", "status")
        with self._mutating():
            self.call("POST", paths.DB_STOP, what=f"stopping instance {name!r}", name=name, timeout=LONG_TIMEOUT)
        return self._current(name)

    def reset_credentials(self, name: str, username: str, password: str) -> InstanceInfo:
        db = self._require(name)  # never POST credentials for a missing name: DBOS Cloud would not create it,
        # but the official CLI does (auto-provision); a typo must fail here
        if db.IsLinked:
            raise EngineError(f"{name!r} is a linked instance: its password is managed on its own server",
                              hint="change it there, then update the LinkedInstance's password")
        if username != db.DatabaseUsername:
            raise ValidationError([("username", f"DBOS Cloud resets the password of the instance's own user "
                                                f"{db.DatabaseUsername!r} only, not {username!r}")])
        with self._mutating():
            self.call("POST", paths.DB_CREDENTIALS, what=f"resetting the password of instance {name!r}",
                      body=dump(CredentialsRequest(Password=password)), secrets=[password], name=name)
        return self._current(name)

    def check_credentials(self, name: str, username: str, password: str) -> bool:
        import psycopg  # only here: the rest of the engine is HTTP

        db = self._require(name)
        try:
            with psycopg.connect(host=db.HostName, port=db.Port, user=username, password=password,
                                 dbname="postgres", connect_timeout=5):
                return True
        except psycopg.OperationalError:
            return False

    def set_retention(self, name: str, retention_hours: int) -> InstanceInfo:
        db = self._require(name)
        info = convert.instance_info(db)
        if info.retention_hours == retention_hours:
            return info
        if not self.serve:
            raise ValidationError([("retention_hours", checks.CLOUD_RETENTION)])
        return self._patch(name, DatabasePatch(RetentionHours=retention_hours), "changing the retention of")

    def set_port(self, name: str, port: int) -> InstanceInfo:
        db = self._require(name)
        if db.IsLinked:
            raise EngineError(f"{name!r} is a linked instance: its port is its server's")
        if db.Port == port:
            return convert.instance_info(db)
        if not self.serve:
            raise ValidationError([("port", checks.CLOUD_PORT)])
        return self._patch(name, DatabasePatch(Port=port), "moving")

    def destroy(self, name: str) -> None:
        db = self._get(name)
        if db is None:
            return
        with self._mutating():
            try:
                self.call("DELETE", paths.UNLINK if db.IsLinked else paths.DB,
                          what=f"{'unlinking' if db.IsLinked else 'destroying'} instance {name!r}", name=name)
            except NotFoundError:
                return
            self._wait_gone(name, self.deadline)

    # ---------------------------------------------------------------- contract: backups and restores
    def backup(self, name: str) -> BackupInfo:
        db = self._require(name)
        if db.IsLinked:
            raise EngineError(f"{name!r} is a linked instance: its backups are up to its own server")
        self._require_served("take a backup on demand (it backs up on its own schedule)", "backup")
        with self._mutating():
            data = self.call("POST", paths.DB_BACKUP, what=f"backing up instance {name!r}", name=name,
                             timeout=LONG_TIMEOUT)
        out = parse(BackupOutput, data, f"the backup of {name!r}")
        return BackupInfo(out.PostgresInstanceName, out.BackupID, out.StartedAt, out.FinishedAt)

    def restore_window(self, name: str) -> tuple[datetime, datetime]:
        db = self._require(name)
        if db.IsLinked:
            raise EngineError(f"{name!r} is a linked instance: it has no backups here to restore from")
        if db.EarliestRestorableTime is None or db.LatestRestorableTime is None:
            if not self.serve:
                raise DbosError(f"DBOS Cloud does not report the restorable window of {name!r}",
                                hint="a restore outside it fails when it runs; DBOS Cloud keeps backups for its "
                                     "own retention period")
            raise EngineError(f"instance {name!r} has no restorable window yet (status {db.Status})",
                              hint="restores need a running source with archived WAL")
        return parse_rfc3339(db.EarliestRestorableTime), parse_rfc3339(db.LatestRestorableTime)

    def restore_to_new(self, source: str, name: str, restore_time: str, *, password: str,
                       port: int | None = None, retention_hours: int | None = None,
                       owner: str | None = None) -> InstanceInfo:
        self._cloud_limits(port, retention_hours)
        src = self._require(source)
        if src.IsLinked:
            raise EngineError(f"cannot restore from {source!r}: it is a linked instance",
                              hint="point-in-time restore needs an instance whose backups DBOS Cloud keeps")
        if restore_time == "latest":
            # serve restores to the last archived moment; DBOS Cloud wants a timestamp: now
            timestamp = "latest" if self.serve else to_rfc3339(utcnow())
        else:
            try:
                target = parse_rfc3339(restore_time)
            except ValueError as exc:
                raise ValidationError([("restore_time", str(exc))]) from None
            if target > utcnow():
                raise ValidationError([("restore_time", f"restore_time {restore_time} is in the future")])
            why = checks.window_problem(convert.instance_info(src), target, restore_time)
            if why:
                raise ValidationError([("restore_time", why)])
            timestamp = restore_time
        self._refuse_taken(name)
        ext: dict[str, Any] = dict(Password=password, Port=port, RetentionHours=retention_hours,
                                   Owner=owner) if self.serve else {}
        body = dump(RestoreRequest(RestoreName=name, RestoreTimestamp=timestamp, **ext))

        def set_password() -> None:  # DBOS Cloud gives the restore the source's password: ours is asked for
            self.call("POST", paths.DB_CREDENTIALS, what=f"setting the password of restored instance {name!r}",
                      body=dump(CredentialsRequest(Password=password)), secrets=[password], name=name)

        return self._create(name, f"restoring from {source!r} into", lambda: self.call(
            "POST", paths.DB_RESTORE, what=f"restoring {source!r} into {name!r}", body=body, secrets=[password],
            name=source, timeout=LONG_TIMEOUT), None if self.serve else set_password)

    # ---------------------------------------------------------------- contract: linked servers
    def link(self, name: str, hostname: str, port: int, username: str, password: str, *,
             owner: str | None = None) -> InstanceInfo:
        if not self.serve and username != LINKED_USER:
            raise ValidationError([("username", f"DBOS Cloud links a server as the user {LINKED_USER!r} only: create "
                                                f"that role on your server and use it")])
        existing = self._get(name)
        if existing is not None and not existing.IsLinked:
            raise AlreadyExistsError(f"an instance named {name!r} already exists in {self.describe()} and is not "
                                     "linked", hint="choose another instance_name")
        ext: dict[str, Any] = dict(Username=username, Owner=owner) if self.serve else {}
        body = dump(LinkRequest(Name=name, HostName=hostname, Port=port, Password=password, **ext))
        with self._mutating():
            if existing is not None:
                # a new address or password of a linked server: DBOS Cloud links anew (there is no update)
                self.call("DELETE", paths.UNLINK, what=f"re-linking instance {name!r}", name=name)
            try:
                self.call("POST", paths.LINK, what=f"linking instance {name!r} to {hostname}:{port}", body=body,
                          secrets=[password])
            except DbosError as exc:
                if existing is not None:
                    raise EngineError(f"{exc.message} (its previous link was removed: `pulumi up` links it again "
                                      "once the server is reachable)", hint=exc.hint) from None
                raise
        return self._current(name)

    def unlink(self, name: str) -> None:
        db = self._get(name)
        if db is None:
            return
        if not db.IsLinked:
            raise EngineError(f"{name!r} is not a linked instance", hint="destroy it instead")
        with self._mutating():
            try:
                self.call("DELETE", paths.UNLINK, what=f"unlinking instance {name!r}", name=name)
            except NotFoundError:
                pass

    # ---------------------------------------------------------------- contract: apps
    def app_preflight(self, app_name: str, *, port: int | None, version: str | None, owner: str | None,
                      creating: bool) -> builtins.list[Problem]:
        return self.apps.preflight(app_name, port=port, version=version, owner=owner, creating=creating)

    def deploy_app(self, req: AppDeploy) -> AppInfo:
        return self.apps.deploy(req)

    def app_info(self, app_name: str) -> AppInfo | None:
        return self.apps.info(app_name)

    def list_apps(self) -> builtins.list[AppInfo]:
        return self.apps.all()

    def app_versions(self, app_name: str) -> builtins.list[AppVersion]:
        return self.apps.versions(app_name)

    def app_logs(self, app_name: str, lines: int = 100) -> str:
        return self.apps.logs(app_name, lines)

    def delete_app(self, app_name: str) -> None:
        self.apps.delete(app_name)

    def close(self) -> None:
        self.client.close()


__all__ = ["DbosCloudEngine", "Kind"]
