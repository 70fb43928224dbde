"""Creating instances on DBOS Cloud: the POST, the wait until ready, and the rollback of a half-made one.

What the official CLI leaves out, this adds: a deadline and failure states on every wait (the CLI polls
forever), and the removal of what a create that failed halfway left behind.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from ...cloudapi import paths
from ...cloudapi.models import ProvisionRequest, UserDBInstance, dump
from ...errors import AlreadyExistsError, DbosError, EngineError, NotFoundError, ValidationError
from ..contract import InstanceInfo
from . import checks, convert
from .client import LONG_TIMEOUT, poll
from .session import CloudSession

log = logging.getLogger("pulumi_dbos.engine.dbos_cloud")

#: How long a provision or restore may take before it is given up and rolled back.
#: A new record may take a moment to show in ``info`` on an eventually consistent server.
_VISIBLE_GRACE = 5.0


def provision(s: CloudSession, name: str, username: str, password: str, *, port: int | None,
              retention_hours: int, owner: str | None) -> InstanceInfo:
    checks.refuse_cloud_limits(s.serve, port, retention_hours)
    s.refuse_taken(name)
    ext: dict[str, Any] = dict(Port=port, RetentionHours=retention_hours, Owner=owner) if s.serve else {}
    body = dump(ProvisionRequest(Name=name, AdminName=username, AdminPassword=password, **ext))
    return create(s, name, "provisioning instance", lambda: s.call(
        "POST", paths.PROVISION, what=f"provisioning instance {name!r}", body=body, secrets=[password],
        timeout=LONG_TIMEOUT), owner=owner)


def create(s: CloudSession, name: str, what: str, post: Callable[[], object],
           after: Callable[[], object] | None = None, *, owner: str | None = None) -> InstanceInfo:
    """POST a create, wait until the instance is ready, run ``after``; any failure past the POST removes
    what was made. A refused POST (taken name, bad input, missing source) made nothing: no rollback. A POST
    without an answer (5xx, dropped connection) may or may not have made it — and another stack may have
    made that name meanwhile: only an instance provably ours (serve's ``Owner`` is ``owner``) is removed."""
    with s.mutating():
        try:
            post()
        except (AlreadyExistsError, ValidationError, NotFoundError):
            raise
        except DbosError as exc:
            if type(exc) is DbosError:  # refused token or organization: nothing was made
                raise
            raise EngineError(f"{what} {name!r} failed: {exc.message}; {_rollback_if_ours(s, name, owner)}",
                              hint=exc.hint) from None
        try:
            ready = _wait_ready(s, name, what)
            if after is None:
                return convert.instance_info(ready)
            after()
        except DbosError as exc:
            raise _failed(s, name, what, exc) from None
        except BaseException:
            rollback(s, name)
            raise
    return s.current(name)


def rollback(s: CloudSession, name: str) -> str:
    """Remove a half-made instance, best effort (the create's error is what the user must see); how it went,
    for that error."""
    try:
        s.call("DELETE", paths.DB, what=f"removing half-made instance {name!r}", name=name)
    except NotFoundError:
        return "nothing was left behind"
    except DbosError as exc:
        log.warning("could not remove half-made instance %r: %s", name, exc.message)
        return (f"removing the half-made instance failed too ({exc.message.splitlines()[0]}): remove it with "
                f"`dbos-cloud db destroy {name}`")
    try:
        s.wait_gone(name, min(s.deadline, 120.0))
    except DbosError:
        return "the half-made instance is still being removed"
    return "it was rolled back"


def _rollback_if_ours(s: CloudSession, name: str, owner: str | None) -> str:
    """After a POST without an answer: remove the instance of that name only when it is provably ours."""
    try:
        db = s.get(name)
    except DbosError as exc:
        return (f"whether it made instance {name!r} is unknown ({exc.message.splitlines()[0]}): `pulumi refresh` "
                "shows it, and if it is this stack's remove it with `pulumi-dbos db status`/`dbos-cloud db destroy`")
    if db is None:
        return "nothing was left behind"
    if s.serve and owner is not None and db.Owner == owner:
        return rollback(s, name)
    if s.serve:
        return (f"an instance named {name!r} exists but is not provably this stack's (its owner is "
                f"{str(db.Owner).split('#')[0] if db.Owner else 'not recorded'}): it was left alone")
    return (f"an instance named {name!r} exists; DBOS Cloud records no owner, so it may be another stack's "
            f"and was left alone: if this create made it, remove it with `dbos-cloud db destroy {name}`, "
            "or adopt it (adopt=True)")


def _failed(s: CloudSession, name: str, what: str, exc: DbosError) -> EngineError:
    return EngineError(f"{what} {name!r} failed: {exc.message}; {rollback(s, name)}", hint=exc.hint)


def _wait_ready(s: CloudSession, name: str, what: str) -> UserDBInstance:
    started = time.monotonic()

    def probe() -> UserDBInstance | None:
        db = s.get(name)
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

    result: UserDBInstance = poll(probe, s.deadline, f"{what} {name!r} did not finish",
                                  hint="the deadline is PULUMI_DBOS_CLOUD_DEADLINE seconds", sleep=s.sleep)
    return result
