"""Backups and point-in-time restores on DBOS Cloud.

DBOS Cloud backs up on its own schedule and does not report the restorable window; ``pulumi-dbos
serve`` does both (extensions). A restore on DBOS Cloud gets the source's password: ours is set after.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ...cloudapi import paths
from ...cloudapi.models import BackupOutput, RestoreRequest, UserDBInstance, dump
from ...errors import DbosError, EngineError, ValidationError
from ...timeutil import parse_rfc3339, to_rfc3339, utcnow
from ..contract import BackupInfo, InstanceInfo
from . import checks, convert
from .answers import parse
from .client import LONG_TIMEOUT
from .creates import create
from .instances import set_password
from .session import CloudSession


def _own(s: CloudSession, name: str, why: str) -> UserDBInstance:
    """``name``, which must not be a linked instance (``why`` says what a linked one lacks)."""
    db = s.require(name)
    if db.IsLinked:
        raise EngineError(f"{name!r} is a linked instance: {why}")
    return db


def backup(s: CloudSession, name: str) -> BackupInfo:
    _own(s, name, "its backups are up to its own server")
    s.require_served("take a backup on demand (it backs up on its own schedule)", "backup")
    with s.mutating():
        data = s.call("POST", paths.DB_BACKUP, what=f"backing up instance {name!r}", name=name,
                      timeout=LONG_TIMEOUT)
    out = parse(BackupOutput, data, f"the backup of {name!r}")
    return BackupInfo(out.PostgresInstanceName, out.BackupID, out.StartedAt, out.FinishedAt)


def restore_window(s: CloudSession, name: str) -> tuple[datetime, datetime]:
    db = _own(s, name, "it has no backups here to restore from")
    if db.EarliestRestorableTime is None or db.LatestRestorableTime is None:
        if not s.serve:
            raise DbosError(f"DBOS Cloud does not report the restorable window of {name!r}",
                            hint="a restore outside it fails when it runs; DBOS Cloud keeps backups for its "
                                 "own retention period")
        raise EngineError(f"instance {name!r} has no restorable window yet (status {db.Status})",
                          hint="restores need a running source with archived WAL")
    return parse_rfc3339(db.EarliestRestorableTime), parse_rfc3339(db.LatestRestorableTime)


def _timestamp(s: CloudSession, src: UserDBInstance, restore_time: str) -> str:
    """What to send as the restore's time: checked against now and the source's window (when reported)."""
    if restore_time == "latest":
        # serve restores to the last archived moment; DBOS Cloud wants a timestamp: now
        return "latest" if s.serve else to_rfc3339(utcnow())
    try:
        target = parse_rfc3339(restore_time)
    except ValueError as exc:
        raise ValidationError([("restore_time", str(exc))]) from None
    if target > utcnow():
        raise ValidationError([("restore_time", f"restore_time {restore_time} is in the future")])
    why = checks.window_problem(convert.instance_info(src), target, restore_time)
    if why:
        raise ValidationError([("restore_time", why)])
    return restore_time


def restore_to_new(s: CloudSession, source: str, name: str, restore_time: str, *, password: str,
                   port: int | None, retention_hours: int | None, owner: str | None) -> InstanceInfo:
    checks.refuse_cloud_limits(s.serve, port, retention_hours)
    src = s.require(source)
    if src.IsLinked:
        raise EngineError(f"cannot restore from {source!r}: it is a linked instance",
                          hint="point-in-time restore needs an instance whose backups DBOS Cloud keeps")
    timestamp = _timestamp(s, src, restore_time)
    s.refuse_taken(name)
    ext: dict[str, Any] = dict(Password=password, Port=port, RetentionHours=retention_hours,
                               Owner=owner) if s.serve else {}
    body = dump(RestoreRequest(RestoreName=name, RestoreTimestamp=timestamp, **ext))

    def own_password() -> None:  # DBOS Cloud gives the restore the source's password: ours is asked for
        set_password(s, name, password, f"setting the password of restored instance {name!r}")

    return create(s, name, f"restoring from {source!r} into", lambda: s.call(
        "POST", paths.DB_RESTORE, what=f"restoring {source!r} into {name!r}", body=body, secrets=[password],
        name=source, timeout=LONG_TIMEOUT), None if s.serve else own_password, owner=owner)
