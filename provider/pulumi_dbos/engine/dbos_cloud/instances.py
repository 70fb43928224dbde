"""Existing instances on DBOS Cloud: takeover, start and stop, credentials, retention, port, destroy.

**Never** a call sequence that would provision something by accident: the official CLI provisions a
missing instance on ``db reset-password``/``db url``; here a missing name is a NotFoundError, found by
``info`` first. What only ``pulumi-dbos serve``'s extensions can do (stop/start, retention, a port) is
refused on DBOS Cloud with a message naming the field.
"""

from __future__ import annotations

import logging

from ...cloudapi import paths
from ...cloudapi.models import CredentialsRequest, DatabasePatch, dump
from ...errors import DbosError, EngineError, NotFoundError, ValidationError
from ..contract import InstanceInfo, Status
from . import checks, convert
from .client import LONG_TIMEOUT
from .session import CloudSession

log = logging.getLogger("pulumi_dbos.engine.dbos_cloud")

_BUSY = (Status.CREATING.value, Status.RESTORING.value)


def takeover(s: CloudSession, name: str, owner: str | None, *, adopt: bool) -> InstanceInfo | None:
    db = s.get(name)
    if db is None:
        return None
    info = convert.instance_info(db)
    ours = owner is not None and info.owner == owner
    if ours and info.status in _BUSY:
        log.warning("removing half-made instance %r left by an interrupted create", name)
        destroy(s, name)
        return None
    if not ours and not adopt:
        return None
    if not ours and s.serve:
        _patch(s, name, DatabasePatch(Owner=owner), "taking over")
    return ensure_running(s, name)


def _patch(s: CloudSession, name: str, patch: DatabasePatch, what: str) -> InstanceInfo:
    with s.mutating():
        s.call("PATCH", paths.DB, what=f"{what} instance {name!r}", body=dump(patch), name=name,
               timeout=LONG_TIMEOUT)
    return s.current(name)


def set_owner(s: CloudSession, name: str, owner: str | None) -> InstanceInfo:
    s.require(name)
    s.require_served("record an instance's owner", "owner")
    return _patch(s, name, DatabasePatch(Owner=owner), "setting the owner of")


def ensure_running(s: CloudSession, name: str) -> InstanceInfo:
    db = s.require(name)
    if db.IsLinked or convert.db_ready(db.Status):
        return convert.instance_info(db)
    if not s.serve:
        raise DbosError(f"instance {name!r} is {db.Status!r} on DBOS Cloud; DBOS Cloud's API cannot start it",
                        hint="wait until DBOS Cloud has it available again, or ask DBOS Cloud support")
    with s.mutating():
        s.call("POST", paths.DB_START, what=f"starting instance {name!r}", name=name, timeout=LONG_TIMEOUT)
    return s.current(name)


def stop(s: CloudSession, name: str) -> InstanceInfo:
    db = s.require(name)
    if db.IsLinked:
        return convert.instance_info(db)
    s.require_served("stop an instance", "status")
    with s.mutating():
        s.call("POST", paths.DB_STOP, what=f"stopping instance {name!r}", name=name, timeout=LONG_TIMEOUT)
    return s.current(name)


def reset_credentials(s: CloudSession, name: str, username: str, password: str) -> InstanceInfo:
    db = s.require(name)  # never POST credentials for a missing name: DBOS Cloud would not create it,
    # but the official CLI does (auto-provision); a typo must fail here
    if db.IsLinked:
        raise EngineError(f"{name!r} is a linked instance: its password is managed on its own server",
                          hint="change it there, then update the LinkedInstance's password")
    if username != db.DatabaseUsername:
        raise ValidationError([("username", f"DBOS Cloud resets the password of the instance's own user "
                                            f"{db.DatabaseUsername!r} only, not {username!r}")])
    with s.mutating():
        set_password(s, name, password, f"resetting the password of instance {name!r}")
    return s.current(name)


def set_password(s: CloudSession, name: str, password: str, what: str) -> None:
    s.call("POST", paths.DB_CREDENTIALS, what=what, body=dump(CredentialsRequest(Password=password)),
           secrets=[password], name=name)


def check_credentials(s: CloudSession, name: str, username: str, password: str) -> bool:
    import psycopg  # only here: the rest of the engine is HTTP

    info = s.info(name)  # the cached list: a refresh of N instances checks N passwords with one list call
    if info is not None:
        host, port = info.hostname, info.port
    else:  # not in the list a moment ago: ask for it (a missing name is the usual "not found")
        db = s.require(name)
        host, port = db.HostName, db.Port
    try:
        with psycopg.connect(host=host, port=port, user=username, password=password,
                             dbname="postgres", connect_timeout=5):
            return True
    except psycopg.OperationalError:
        return False


def set_retention(s: CloudSession, name: str, retention_hours: int) -> InstanceInfo:
    info = convert.instance_info(s.require(name))
    if info.retention_hours == retention_hours:
        return info
    if not s.serve:
        raise ValidationError([("retention_hours", checks.CLOUD_RETENTION)])
    return _patch(s, name, DatabasePatch(RetentionHours=retention_hours), "changing the retention of")


def set_port(s: CloudSession, name: str, port: int) -> InstanceInfo:
    db = s.require(name)
    if db.IsLinked:
        raise EngineError(f"{name!r} is a linked instance: its port is its server's")
    if db.Port == port:
        return convert.instance_info(db)
    if not s.serve:
        raise ValidationError([("port", checks.CLOUD_PORT)])
    return _patch(s, name, DatabasePatch(Port=port), "moving")


def destroy(s: CloudSession, name: str) -> None:
    db = s.get(name)
    if db is None:
        return
    with s.mutating():
        try:
            s.call("DELETE", paths.UNLINK if db.IsLinked else paths.DB,
                   what=f"{'unlinking' if db.IsLinked else 'destroying'} instance {name!r}", name=name)
        except NotFoundError:
            return
        s.wait_gone(name, s.deadline)
