"""``dbos:backupRepo``: where the local engine's backup repository is (pgBackRest; ``engine/local/repo.py``).

One model, camelCase keys as in the stack config; the provider hands the checked mapping to the engine
(``RepoSettings.from_mapping``), ``pulumi-dbos serve`` builds the same mapping from its flags. Secrets
(``s3.secretKey``, ``cipherPassphrase``) are set with ``pulumi config set --secret --path``; the engine
writes them only into the repository's 0600 configuration, never into argv, an environment or a log.

```yaml
dbos:backupRepo:
  path: /mnt/backups/pulumi-dbos        # a posix repository (another disk); default <dataDir>/repo
  s3:                                   # and/or an S3-compatible one
    endpoint: s3.example.com:443        # host[:port]; TLS always
    bucket: my-backups
    region: us-east-1
    accessKey: AKIA...
    secretKey: {secure: ...}
    path: /pulumi-dbos/prod             # prefix in the bucket
    caFile: /etc/ssl/my-ca.pem          # a private CA (optional)
  cipherPassphrase: {secure: ...}       # encrypts every repository (AES-256), optional
  deletedRetentionHours: 168            # a destroyed instance stays restorable this long
  archiveTimeout: 60                    # seconds: the RPO bound when the host is lost
```
"""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

_MODEL = ConfigDict(extra="forbid", populate_by_name=True, alias_generator=None)


class S3Config(BaseModel):
    model_config = _MODEL
    endpoint: str = Field(min_length=1, description="host[:port] of the S3 API (TLS)")
    bucket: str = Field(min_length=3, max_length=63, pattern=r"^[a-z0-9][a-z0-9.-]+[a-z0-9]$")
    accessKey: str = Field(min_length=1)  # noqa: N815 - the stack config's key
    secretKey: str = Field(min_length=1)  # noqa: N815
    region: str = "us-east-1"
    path: str = Field("/pulumi-dbos", pattern=r"^/[A-Za-z0-9_./-]*$")
    caFile: str | None = None  # noqa: N815
    uriStyle: str = Field("path", pattern=r"^(path|host)$")  # noqa: N815
    verifyTls: bool = True  # noqa: N815

    @field_validator("endpoint")
    @classmethod
    def _no_scheme(cls, v: str) -> str:
        if "://" in v or "/" in v:
            raise ValueError("is host[:port] without a scheme or path (TLS is always used)")
        return v


class BackupRepoConfig(BaseModel):
    model_config = _MODEL
    path: str | None = Field(None, description="an absolute path")
    s3: S3Config | None = None
    cipherPassphrase: str | None = Field(None, min_length=16, max_length=1024)  # noqa: N815
    deletedRetentionHours: int | None = Field(None, ge=1, le=24 * 365 * 10)  # noqa: N815
    archiveTimeout: int = Field(60, ge=1, le=3600)  # noqa: N815

    @field_validator("path")
    @classmethod
    def _absolute(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"^/[A-Za-z0-9_./+-]*$", v):
            raise ValueError("must be an absolute path of letters, digits and _ . / + - (a directory the "
                             "clusters' OS user can write; another disk for backups that survive this one)")
        return v


def parse(value: Any) -> dict[str, Any]:
    """The checked mapping (ValueError naming each bad key as ``dbos:backupRepo.<key>``)."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise ValueError("dbos:backupRepo: must be a map (set its keys with `pulumi config set --path "
                             "'dbos:backupRepo.path' DIR`)") from None
    if not isinstance(value, dict):
        raise ValueError(f"dbos:backupRepo: must be a map, not {type(value).__name__}")
    try:
        return BackupRepoConfig.model_validate(value).model_dump(exclude_none=True)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err["loc"])
            msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"].removeprefix("Value error, ")
            lines.append(f"dbos:backupRepo.{where}: {msg}")
        raise ValueError("\n".join(lines)) from None
