"""Wire bodies to the engine contract's records (and the status vocabulary between them)."""

from __future__ import annotations

from urllib.parse import urlsplit

from ...cloudapi.models import DB_READY, Application, ApplicationVersion, UserDBInstance
from ...timeutil import parse_rfc3339
from ..contract import AppInfo, AppVersion, InstanceInfo, Kind, Status

#: DBOS Cloud's retention when nobody chooses one (the contract's default)
DEFAULT_RETENTION_HOURS = 24

#: Database statuses that will never become ready by waiting (DBOS Cloud passes RDS-like statuses through).
_DB_FAILED_WORDS = ("fail", "error", "delet", "incompatible", "inaccessible", "storage-full", "missing", "stopped")
#: App statuses that end a deploy's wait with an error.
_APP_FAILED_WORDS = ("UNHEALTHY", "FAIL", "ERROR", "STOPPED", "CRASH")


def db_status(raw: str) -> str:
    """Lower case as given, except that DBOS Cloud's other ready state (``backing-up``) reads as available:
    the contract has one ready state, and the instance serves connections during a backup."""
    s = raw.strip().lower()
    return Status.AVAILABLE.value if s in DB_READY else s


def db_ready(raw: str) -> bool:
    return raw.strip().lower() in DB_READY


def db_failed(raw: str) -> bool:
    s = raw.strip().lower()
    return any(w in s for w in _DB_FAILED_WORDS)


def app_failed(raw: str) -> bool:
    s = raw.strip().upper()
    return any(w in s for w in _APP_FAILED_WORDS)


def instance_info(db: UserDBInstance) -> InstanceInfo:
    kind = Kind.LINKED if db.IsLinked else Kind.PROVISIONED
    if db.Kind:
        try:
            kind = Kind(db.Kind.lower())
        except ValueError:
            pass
    return InstanceInfo(
        name=db.PostgresInstanceName, status=db_status(db.Status), hostname=db.HostName, port=int(db.Port),
        username=db.DatabaseUsername, kind=kind,
        retention_hours=db.RetentionHours if db.RetentionHours is not None else DEFAULT_RETENTION_HOURS,
        created_at=db.CreatedAt, earliest_restorable_time=db.EarliestRestorableTime,
        latest_restorable_time=db.LatestRestorableTime, source_instance=db.SourceInstance,
        restored_to=db.RestoredTo, owner=db.Owner,
        last_drill={"at": db.LastDrill.At, "ok": db.LastDrill.Ok, "rto_seconds": db.LastDrill.RtoSeconds,
                    "rpo_seconds": db.LastDrill.RpoSeconds} if db.LastDrill else None)


def versions(rows: list[ApplicationVersion]) -> list[AppVersion]:
    """Oldest first (by CreationTime; DBOS Cloud lists in no promised order), each version once."""
    def key(v: ApplicationVersion) -> tuple[int, str]:
        try:
            return 0, parse_rfc3339(v.CreationTime).isoformat()
        except ValueError:
            return 1, v.CreationTime

    out: list[AppVersion] = []
    seen: set[str] = set()
    for v in sorted(rows, key=key):
        if v.Version not in seen:
            seen.add(v.Version)
            out.append(AppVersion(v.Version, v.CreationTime))
    return out


def app_info(app: Application, history: list[AppVersion]) -> AppInfo:
    url = app.AppURL.rstrip("/")
    port = app.Port
    if port is None:
        try:
            port = urlsplit(url).port
        except ValueError:
            port = None
    return AppInfo(name=app.Name, status=app.Status, version=app.Version or None,
                   instance_name=app.PostgresInstanceName, app_db_name=app.ApplicationDatabaseName, app_url=url,
                   port=port or 0, versions=history, owner=app.Owner)
