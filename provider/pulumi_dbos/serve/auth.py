"""Bearer tokens: HS256 JWTs signed with serve's own key (``D/serve/jwt.key``, 32 random bytes, 0600).

A token names a user and an organization; every request's token is verified (signature, expiry,
issuer), and an organization's paths answer only tokens of that organization.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

import jwt

from ..errors import DbosError, ValidationError
from .state import ORG_RE

ISSUER = "pulumi-dbos serve"
ALGORITHM = "HS256"
USER_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")


class AuthError(DbosError):
    """A request without a valid token (answered 401)."""


@dataclass(frozen=True)
class Claims:
    user: str
    org: str


def key_path(serve_dir: Path) -> Path:
    return serve_dir / "jwt.key"


def load_or_create_key(serve_dir: Path) -> bytes:
    """The signing key, created (0600, exclusively: two first uses never make two keys) when missing."""
    path = key_path(serve_dir)
    with contextlib.suppress(FileExistsError):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(secrets.token_bytes(32))
            fh.flush()
            os.fsync(fh.fileno())
    for _ in range(50):  # another process may be between its create and its write
        key = path.read_bytes()
        if len(key) >= 32:
            return key
        time.sleep(0.02)
    raise DbosError(f"{path} holds no key", hint="remove it: a new one is made (tokens issued before stop working)")


def issue(key: bytes, org: str, user: str, ttl_hours: float) -> str:
    problems = []
    if not ORG_RE.match(org) or org == "user":  # /v1alpha1/user/... is the profile's path
        problems.append(("org", f"organization must be 1-30 characters of letters, digits, _ and -, got {org!r}"))
    if not USER_RE.match(user):
        problems.append(("user", f"user must be 1-64 characters of letters, digits, _ . and -, got {user!r}"))
    if problems:
        raise ValidationError(problems)
    now = int(time.time())
    return jwt.encode({"sub": user, "org": org, "iat": now, "exp": now + int(ttl_hours * 3600), "iss": ISSUER},
                      key, algorithm=ALGORITHM)


def verify(key: bytes, token: str) -> Claims:
    """The token's user and organization, or :class:`AuthError` (never echoing the token)."""
    try:
        claims = jwt.decode(token, key, algorithms=[ALGORITHM], issuer=ISSUER,
                            options={"require": ["exp", "iat", "sub", "org", "iss"]})
    except jwt.ExpiredSignatureError:
        raise AuthError("token expired", hint="get a new one: `pulumi-dbos serve token`") from None
    except jwt.InvalidSignatureError:
        # the usual cause: `serve token --data-dir` named another data dir, which made a key of its own
        raise AuthError("invalid token (InvalidSignatureError): not signed by this server's key; make one with "
                        "`pulumi-dbos serve token --data-dir D` where D is the --data-dir this serve runs with",
                        hint="get one from `pulumi-dbos serve token` on this server") from None
    except jwt.InvalidTokenError as exc:
        raise AuthError(f"invalid token ({type(exc).__name__})",
                        hint="get one from `pulumi-dbos serve token` on this server") from None
    org, user = claims.get("org"), claims.get("sub")
    if not isinstance(org, str) or not ORG_RE.match(org) or not isinstance(user, str) or not USER_RE.match(user):
        raise AuthError("invalid token (bad org or sub claim)")
    return Claims(user=user, org=org)
