"""Creating instances on DBOS Cloud: the POST, the wait until ready, and the rollback of a half-made one.

What the official CLI leaves out, this adds: a deadline and failure states on every wait (the CLI polls
forever), and the removal of what a create that failed halfway left behind.
"""

from __future__ import annotations

import logging
import os
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
DEADLINE = float(os.environ.get("PULUMI_DBOS_CLOUD_DEADLINE", "600"))
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
        timeout=LONG_TIMEOUT))


def create(s: CloudSession, name: str, what: str, post: Callable[[], object],
           after: Callable[[], object] | None = None) -> InstanceInfo:
    """POST a create, wait until the instance is ready, run ``after``; any failure past the POST removes
    what was made. A refused POST (taken name, bad input, missing source) made nothing: no rollback."""
    with s.mutating():
        try:
            post()
        except (AlreadyExistsError, ValidationError, NotFoundError):
            raise
        except DbosError as exc:
            if type(exc) is DbosError:  # refused token or organization: nothing was made
                raise
            raise _failed(s, name, what, exc) from None
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
