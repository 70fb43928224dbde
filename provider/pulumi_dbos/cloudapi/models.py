"""Request and response bodies of DBOS Cloud's REST API (``../shared/dbos-cloud-api.md``), typed.

Responses allow extra fields (the real service may add some); requests keep the exact names the
official CLI sends. *Extension* fields are pulumi-dbos's own: optional, sent by the ``dbos-cloud``
engine only when the server announced them (``UserProfile.Server``), and always ``None`` from DBOS
Cloud itself.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

#: ``UserProfile.Server`` of ``pulumi-dbos serve``: the extensions below are understood.
SERVE_SERVER = "pulumi-dbos serve"

#: Database statuses the official CLI treats as ready (lower case, compared exactly).
DB_READY = ("available", "backing-up")
#: The app status the official CLI waits for.
APP_READY = "AVAILABLE"


class _Wire(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


class CloudAPIError(_Wire):
    """An error body the CLI recognises: it prints ``[requestID] <label>: <message>.``."""

    message: str
    statusCode: int
    requestID: str
    DetailedError: str | None = None


# ---------------------------------------------------------------------------- users
class UserProfile(_Wire):
    Name: str
    Email: str
    Organization: str
    SubscriptionPlan: str
    #: extension: ``SERVE_SERVER`` when the server is ``pulumi-dbos serve``
    Server: str | None = None


# ---------------------------------------------------------------------------- databases
class DrillSummary(_Wire):
    """extension: an instance's newest restore drill (``UserDBInstance.LastDrill``)."""

    At: str
    Ok: bool
    RtoSeconds: float | None = None
    RpoSeconds: float | None = None


class UserDBInstance(_Wire):
    PostgresInstanceName: str
    Status: str
    HostName: str
    Port: int
    DatabaseUsername: str
    IsLinked: bool
    #: must be serialised as an explicit ``null`` for non-Supabase instances (the CLI tests ``!== null``)
    SupabaseReference: str | None = None
    # --- extensions (serve only) ---
    Kind: str | None = None  # "local" (provisioned) | "restored" | "linked"
    RetentionHours: int | None = None
    CreatedAt: str | None = None
    EarliestRestorableTime: str | None = None
    LatestRestorableTime: str | None = None
    SourceInstance: str | None = None
    RestoredTo: str | None = None
    Owner: str | None = None
    LastDrill: DrillSummary | None = None


class ProvisionRequest(_Wire):
    """``POST /v1alpha1/{org}/databases/userdb``."""

    Name: str
    AdminName: str
    AdminPassword: str
    # --- extensions ---
    Port: int | None = None
    RetentionHours: int | None = None
    Owner: str | None = None


class CredentialsRequest(_Wire):
    """``POST /v1alpha1/{org}/databases/userdb/{name}/credentials``."""

    Password: str


class RestoreRequest(_Wire):
    """``POST /v1alpha1/{org}/databases/userdb/{name}/restore``; the new instance's user has the source's
    password (the one the server holds now), unless the extension ``Password`` says otherwise."""

    RestoreName: str
    RestoreTimestamp: str  # RFC3339, passed through by the CLI unchecked
    # --- extensions ---
    Password: str | None = None
    Port: int | None = None
    RetentionHours: int | None = None
    Owner: str | None = None


class LinkRequest(_Wire):
    """``POST /v1alpha1/{org}/databases/byod``: the password is the ``dbosadmin`` user's."""

    Name: str
    HostName: str
    Port: int | None = 5432  # the CLI sends null for a non-numeric -p
    Password: str
    captureProvenance: bool = False
    supabaseReference: str | None = None
    # --- extensions ---
    Username: str | None = None  # default dbosadmin (DBOS Cloud's fixed linked user)
    Owner: str | None = None


class DatabasePatch(_Wire):
    """extension: ``PATCH /v1alpha1/{org}/databases/userdb/{name}`` — change what DBOS Cloud fixes."""

    RetentionHours: int | None = None
    Port: int | None = None
    Owner: str | None = None


class BackupOutput(_Wire):
    """extension: ``POST /v1alpha1/{org}/databases/userdb/{name}/backup``."""

    PostgresInstanceName: str
    BackupID: str
    StartedAt: str
    FinishedAt: str


class DrillRequest(_Wire):
    """extension: ``POST /v1alpha1/{org}/databases/userdb/{name}/drills`` — run a restore drill now;
    ``CheckSql`` (kept for the instance's later drills) runs in ``CheckDatabase`` (default ``postgres``)."""

    CheckSql: str | None = None
    CheckDatabase: str | None = None


class DrillOutput(_Wire):
    """extension: a restore drill's result (``GET``/``POST …/userdb/{name}/drills``): the contract's ``DrillResult``."""

    PostgresInstanceName: str
    At: str
    Ok: bool
    RtoSeconds: float | None = None
    RpoSeconds: float | None = None
    RestoredTo: str | None = None
    Tables: int = 0
    CountsCompared: bool = False
    SqlChecked: bool = False
    Reason: str | None = None


class PreflightRequest(_Wire):
    """extension: ``POST /v1alpha1/{org}/databases/preflight`` — the engine contract's ``Preflight``."""

    Kind: str
    Name: str
    Owner: str | None = None
    Creating: bool = True
    Adopt: bool = False
    Port: int | None = None
    Source: str | None = None
    RestoreTime: str | None = None


class PreflightProblem(_Wire):
    Field: str
    Message: str


# ---------------------------------------------------------------------------- applications
class Application(_Wire):
    Name: str
    ID: str
    PostgresInstanceName: str
    ApplicationDatabaseName: str
    Status: str
    Version: str
    AppURL: str
    ExecutorsMemoryMib: int = 512
    # --- extensions ---
    Port: int | None = None
    Owner: str | None = None


class ApplicationVersion(_Wire):
    ApplicationName: str
    Version: str
    CreationTime: str


class DeployOutput(_Wire):
    ApplicationName: str
    ApplicationVersion: str


class RegisterRequest(_Wire):
    """``PUT /v1alpha1/{org}/applications`` (no app_db_name: the server learns it from the archive)."""

    name: str
    database: str
    language: str = "node"
    provenancedb: str = ""
    executors_memory_mib: int | str | None = None  # the CLI sends a string ("1024")
    # --- extensions ---
    Port: int | None = None
    Owner: str | None = None


class DeployRequest(_Wire):
    """``POST /v1alpha1/{org}/applications/{app}``: exactly one of the two."""

    application_archive: str | None = None  # base64 zip
    previous_version: str | None = None
    # --- extensions ---
    AppDbName: str | None = None  # when the archive's dbos-config.yaml does not say
    Port: int | None = None  # the app's port from now on (a change moves it); None: the one it has


class ChangeDatabaseRequest(DeployRequest):
    """``POST /v1alpha1/{org}/applications/{app}/changedbinstance``."""

    target_database_name: str


class DeleteAppRequest(_Wire):
    """``DELETE /v1alpha1/{org}/applications/{app}`` with a JSON body (``{}`` without --dropdb)."""

    dropdb: bool | None = None  # None: left out, as the CLI does without --dropdb (``{}``)


class UpdateAppRequest(_Wire):
    """``PATCH /v1alpha1/{org}/applications/{app}``: strings as typed."""

    executors_memory_mib: int | str | None = None
    min_vms: int | str | None = None


class SecretRequest(_Wire):
    """``POST /v1alpha1/{org}/applications/secrets``: an environment variable of the app (expects 200)."""

    ApplicationName: str
    SecretName: str
    ClearSecretValue: str


class LogsOutput(_Wire):
    """``GET /v1alpha1/{org}/logs/applications/{app}?last=&limit=&format=json``."""

    body: str
    end: bool = True
    next_timestamp: str | None = None


def dump(model: BaseModel) -> dict[str, Any]:
    """A request body: fields left at None are left out, except where the API needs an explicit null."""
    return model.model_dump(exclude_none=True)


__all__ = [name for name in dir() if name[0].isupper()] + ["dump", "Field"]
