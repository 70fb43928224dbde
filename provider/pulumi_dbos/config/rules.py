"""Field rules: each input rule written once, shared by resource inputs and the stack config.

Values still *unknown* during a preview (Pulumi's sentinel string) are skipped, never rejected.
"""

from __future__ import annotations

import hashlib
import re
from typing import Annotated, Any

from pydantic import AfterValidator

from ..timeutil import parse_rfc3339
from .fields import UNKNOWN, is_unknown  # noqa: F401 (UNKNOWN is re-exported)

RESERVED_USERNAMES = frozenset({"dbosadmin", "dbos", "postgres", "admin"})
_NAME = re.compile(r"^[a-z0-9_]{3,16}$")
_FORBIDDEN_PW = set("@/\\\"'")
MAX_RETENTION_HOURS = 720


# ---------------------------------------------------------------------------- field rules
def check_name(v: str, what: str = "name") -> str:
    if is_unknown(v):
        return v
    if not isinstance(v, str) or not _NAME.match(v):
        raise ValueError(f"{what} must be 3-16 characters of lowercase letters, digits and underscores "
                         f"([a-z0-9_]{{3,16}}), got {v!r}")
    return v


def check_instance_name(v: str) -> str:
    return check_name(v, "instance_name")


def check_app_name(v: str) -> str:
    return check_name(v, "app_name")


# ---------------------------------------------------------------------------- preview environments
#: the longest PR number a preview name holds: ``_pr`` + 7 digits leaves room for one character of the base
#: and a 4-character digest within the 16 of a name
MAX_PR_DIGITS = 7


def check_pr_number(v: Any) -> int:
    """A pull request's number: a positive integer of at most :data:`MAX_PR_DIGITS` digits (an int or its digits)."""
    text = str(v).strip() if isinstance(v, (int, str)) and not isinstance(v, bool) else ""
    if not text.isdigit() or int(text) < 1 or len(str(int(text))) > MAX_PR_DIGITS:
        raise ValueError(f"pr_number must be a positive integer of at most {MAX_PR_DIGITS} digits (a name holds "
                         f"it within 16 characters), got {v!r}")
    return int(text)


def preview_name(base: str, pr_number: Any) -> str:
    """The instance and app name of pull request ``pr_number``'s preview of ``base`` (an app name):
    ``<base>_pr<N>`` when that fits in 16 characters, else the base cut short plus a 4-hex digest of the
    whole base (``<cut>_<digest>_pr<N>``), so two long bases sharing a prefix stay apart. The full number is
    always kept: two pull requests never share a name. What still collides (a name some other stack made)
    is refused at preview by the engine's ownership check, never taken over."""
    check_name(base, "app_name")
    n = check_pr_number(pr_number)
    suffix = f"_pr{n}"
    if len(base) + len(suffix) <= 16:
        return base + suffix
    digest = hashlib.sha256(base.encode()).hexdigest()[:4]
    cut = base[:16 - len(suffix) - 5].rstrip("_")
    return f"{cut}_{digest}{suffix}" if cut else digest + suffix


def check_username(v: str) -> str:
    if is_unknown(v):
        return v
    check_name(v, "username")
    if not v[0].isalpha():
        raise ValueError(f"username must start with a letter, got {v!r}")
    if v in RESERVED_USERNAMES:
        raise ValueError(f"username {v!r} is reserved (reserved: {', '.join(sorted(RESERVED_USERNAMES))})")
    if v.startswith("pg_"):
        raise ValueError(f"username {v!r} starts with pg_, which PostgreSQL reserves for its own roles")
    return v


def check_password(v: str | None) -> str | None:
    """8-128 characters; none of @ / \\ \" ' and no whitespace. Never echoes the value."""
    if v is None or is_unknown(v):
        return v
    if not isinstance(v, str):
        raise ValueError("password must be a string")
    if not 8 <= len(v) <= 128:
        raise ValueError(f"password must be 8-128 characters long (got {len(v)})")
    bad = sorted({c for c in v if c in _FORBIDDEN_PW})
    if bad:
        raise ValueError(f"password must not contain {' '.join(bad)} (forbidden: @ / \\ \" ')")
    if any(c.isspace() for c in v):
        raise ValueError("password must not contain whitespace")
    if any(ord(c) < 32 or ord(c) == 127 for c in v):
        raise ValueError("password must not contain control characters")
    return v


def check_restore_time(v: str) -> str:
    if is_unknown(v) or v == "latest":
        return v
    try:
        parse_rfc3339(v)
    except ValueError as exc:
        raise ValueError(f"restore_time: {exc}") from None
    return v


def check_port(v: int | None) -> int | None:
    if v is None or is_unknown(v):
        return v
    if not isinstance(v, int) or isinstance(v, bool) or not 1024 <= v <= 65535:
        raise ValueError(f"port must be an integer in 1024-65535, got {v!r}")
    return v


def check_retention(v: int | None) -> int | None:
    if v is None or is_unknown(v):
        return v
    if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= MAX_RETENTION_HOURS:
        raise ValueError(f"retention_hours must be an integer in 1-{MAX_RETENTION_HOURS}, got {v!r}")
    return v


def check_hostname(v: str) -> str:
    if is_unknown(v):
        return v
    if not isinstance(v, str) or not re.match(r"^[A-Za-z0-9.\-:\[\]]{1,253}$", v):
        raise ValueError(f"hostname must be a DNS name or IP address, got {v!r}")
    return v


def check_db_name(v: str | None) -> str | None:
    if v is None or is_unknown(v):
        return v
    if not isinstance(v, str) or not re.match(r"^[a-z_][a-z0-9_]{0,62}$", v):
        raise ValueError(f"app_db_name must be 1-63 characters of [a-z0-9_] starting with a letter or _, got {v!r}")
    return v


#: an app's environment variable name: DBOS Cloud's rule (letters, digits, underscore; not starting with a digit)
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
#: names an app's environment may not hold: what the engine sets itself (DBOS Cloud's names), and what changes
#: how a program is loaded or an interpreter starts rather than what the app reads (the dynamic loader's
#: ``LD_*`` of ld.so(8) and the variables glibc drops for setuid programs; Python's ``PYTHON*``; shells' and
#: other interpreters' start-up files and option variables)
RESERVED_ENV = re.compile(
    r"^(DBOS_.*|PG.*|PATH|HOME|PORT|LANG|LC_.*|VIRTUAL_ENV|USER|LOGNAME|SHELL"
    r"|LD_.*|GCONV_PATH|GETCONF_DIR|GLIBC_TUNABLES|HOSTALIASES|LOCALDOMAIN|LOCPATH|MALLOC_.*|NIS_PATH|NLSPATH"
    r"|RESOLV_HOST_CONF|RES_OPTIONS|TMPDIR|TZDIR"
    r"|PYTHON.*|BASH_ENV|ENV|BASHOPTS|SHELLOPTS|PS4|IFS|CDPATH|PERL5LIB|PERL5OPT|PERLLIB|RUBYLIB|RUBYOPT"
    r"|NODE_OPTIONS|NODE_PATH|JAVA_TOOL_OPTIONS|_JAVA_OPTIONS|SSL_CERT_FILE|SSL_CERT_DIR)$")


def env_name_problem(name: str) -> str | None:
    """Why ``name`` cannot be one of an app's environment variables (None: it can)."""
    if not isinstance(name, str) or not ENV_NAME.match(name):
        return (f"environment variable name {name!r} is not letters, digits and _ (not starting with a digit, "
                "at most 128)")
    if RESERVED_ENV.match(name):
        return (f"environment variable {name!r} is reserved: DBOS_*, PG*, PATH, HOME, PORT... are set by the "
                "engine, and loader or interpreter variables (LD_*, PYTHON*, GCONV_PATH, BASH_ENV...) are refused")
    return None


def check_env(v: Any) -> dict[str, str]:
    """An app's environment: names by :func:`env_name_problem`, values strings without NUL. Never echoes a value."""
    if is_unknown(v):
        return v  # type: ignore[no-any-return]
    if not isinstance(v, dict):
        raise ValueError("env must be a mapping of names to strings")
    problems = [p for p in (env_name_problem(k) for k in v) if p]
    problems += [f"environment variable {k!r}: its value must be a string without NUL characters"
                 for k, val in v.items() if not is_unknown(val) and (not isinstance(val, str) or "\x00" in val)]
    if problems:
        raise ValueError("; ".join(problems))
    return v


def check_commands(v: Any) -> list[str] | None:
    if v is None or is_unknown(v):
        return None if v is None else v  # type: ignore[no-any-return]
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise ValueError("must be a list of command strings")
    return v


InstanceName = Annotated[str, AfterValidator(check_instance_name)]
Username = Annotated[str, AfterValidator(check_username)]
LinkedUsername = Annotated[str, AfterValidator(lambda v: check_name(v, "username"))]
Password = Annotated[str, AfterValidator(check_password)]
OptionalPassword = Annotated[str | None, AfterValidator(check_password)]
Port = Annotated[int | None, AfterValidator(check_port)]
Retention = Annotated[int, AfterValidator(check_retention)]
OptionalRetention = Annotated[int | None, AfterValidator(check_retention)]
RestoreTime = Annotated[str, AfterValidator(check_restore_time)]
Hostname = Annotated[str, AfterValidator(check_hostname)]
AppName = Annotated[str, AfterValidator(check_app_name)]
DbName = Annotated[str | None, AfterValidator(check_db_name)]
# Any, so that a wrong type gets this rule's message rather than pydantic's
Commands = Annotated[Any, AfterValidator(check_commands)]
AppEnv = Annotated[dict[str, str], AfterValidator(check_env)]
