"""App bindings without Pulumi: app databases, migrations, dbos-config.yaml.

What ``AppDatabase`` (and the ``db connect`` / ``app rollback`` commands) do,
as plain functions tested on their own:

- ``ensure_database`` / ``drop_database`` on an instance, through its admin URL;
- ``ensure_owner_role``: the optional least-privilege role owning only the app's database;
- ``run_commands``: the app's ``migrate``/``rollback`` commands with the environment a DBOS
  app gets, split with ``shlex`` and run without a shell (no pipes or ``&&``: write a script);
- ``read_dbos_config`` / ``write_connection``: both dbos-config.yaml layouts, comments kept.
"""

from __future__ import annotations

import io
import os
import re
import secrets
import shlex
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from .engine import proc
from .engine.files import write_atomic
from .engine.settings import EngineSettings
from .errors import CommandError, DbosError, ValidationError
from .resources_util import url_for
from .timeutil import to_rfc3339, utcnow


@dataclass(frozen=True)
class Conn:
    """Where an app's database lives (parsed from an instance's admin URL)."""

    hostname: str
    port: int
    username: str
    password: str
    dbname: str = "postgres"

    @classmethod
    def from_url(cls, url: str) -> Conn:
        d = conninfo_to_dict(url)
        return cls(hostname=str(d.get("host") or "127.0.0.1"), port=int(d.get("port") or 5432),
                   username=str(d.get("user") or ""), password=str(d.get("password") or ""),
                   dbname=str(d.get("dbname") or "postgres"))

    def with_db(self, dbname: str) -> Conn:
        return Conn(self.hostname, self.port, self.username, self.password, dbname)

    @property
    def url(self) -> str:
        return url_for(self.username, self.password, self.hostname, self.port, self.dbname)

    def connect(self, **kw: Any) -> psycopg.Connection[Any]:
        try:
            return psycopg.connect(host=self.hostname, port=self.port, user=self.username, password=self.password,
                                   dbname=self.dbname, connect_timeout=10, **kw)
        except psycopg.Error as exc:
            msg = str(exc).replace(self.password, "[secret]") if self.password else str(exc)
            raise DbosError(f"cannot connect to {self.hostname}:{self.port}/{self.dbname} as {self.username!r}: "
                            f"{msg.strip()}", hint=_connect_hint(exc)) from None

    def env(self) -> dict[str, str]:
        """The environment a DBOS app gets."""
        return {
            "DBOS_DATABASE_URL": self.url,
            "PGHOST": self.hostname, "PGPORT": str(self.port), "PGUSER": self.username,
            "PGPASSWORD": self.password, "PGDATABASE": self.dbname,
        }


def _connect_hint(exc: psycopg.Error) -> str:
    if "password authentication failed" in str(exc):
        return ("the stored password does not work on the instance: run `pulumi refresh` then `pulumi up`, "
                "which resets it to the one in the stack")
    return "is the instance available? `pulumi-dbos db status NAME`; `pulumi up` starts it"


def database_exists(admin: Conn, dbname: str) -> bool:
    with admin.connect(autocommit=True) as c:
        return c.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,)).fetchone() is not None


def ensure_database(admin: Conn, dbname: str) -> bool:
    """Create ``dbname`` if missing (owned by the instance's user). Returns True if created."""
    with admin.connect(autocommit=True) as c:
        if c.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,)).fetchone():
            return False
        try:
            c.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
        except psycopg.errors.DuplicateDatabase:
            return False
        return True


def drop_database(admin: Conn, dbname: str) -> None:
    with admin.connect(autocommit=True) as c:
        c.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname)))


def owner_role_name(app_name: str) -> str:
    return f"{app_name}_owner"


def _owner_door(c: psycopg.Connection[Any]) -> bool:
    """Whether the server offers the owner-role functions to this user (``roles.OWNER_FUNCTIONS``).

    They exist on the local engine's instances (serve's included) on every PostgreSQL version: the
    cluster's superuser made them, because the instance's user has no CREATEROLE there on < 16.
    Elsewhere (DBOS Cloud, a linked server) the user manages owner roles itself, with CREATEROLE.
    """
    from .engine.local.roles import OWNER_SCHEMA

    row = c.execute("SELECT bool_and(has_function_privilege(p.oid, 'EXECUTE')) FROM pg_proc p "
                    "JOIN pg_namespace n ON n.oid = p.pronamespace "
                    "WHERE n.nspname = %s AND p.proname IN ('ensure_owner_role', 'drop_owner_role') "
                    "HAVING count(*) = 2", (OWNER_SCHEMA,)).fetchone()
    return bool(row and row[0])


def _owner_fn(which: int) -> sql.Composable:
    from .engine.local.roles import OWNER_FUNCTIONS

    schema, name = OWNER_FUNCTIONS[which].split(".")
    return sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(name))


def _cannot_manage_roles(role: str, exc: psycopg.Error) -> DbosError:
    return DbosError(f"cannot create or change owner role {role!r}: {str(exc).strip()}",
                     hint="owner_role=True needs an instance user allowed to manage roles (CREATEROLE: DBOS Cloud's "
                          "user has it; pulumi-dbos's own instances offer a narrower way): grant it on this "
                          "server, or set owner_role=False")


def ensure_owner_role(admin: Conn, app_name: str, dbname: str, password: str | None = None) -> Conn:
    """A role that owns only ``dbname``; other roles but the instance's user lose CONNECT on it.

    Returns its connection. The password is generated unless given (kept by the caller as a secret);
    it is sent as a SCRAM verifier, never as text. On the local engine's instances the role is made
    through the superuser's functions (the instance's user has no CREATEROLE); elsewhere by the user.
    """
    role = owner_role_name(app_name)
    password = password or secrets.token_urlsafe(24).replace("-", "x").replace("_", "y")
    with admin.connect(autocommit=True) as c:
        verifier = c.pgconn.encrypt_password(password.encode(), role.encode(), b"scram-sha-256").decode()
        try:
            if _owner_door(c):
                c.execute(sql.SQL("SELECT {}({}, {})").format(_owner_fn(0), sql.Literal(app_name),
                                                               sql.Literal(verifier))).fetchall()
            else:
                if c.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone():
                    # only the password: attributes were set at creation, and altering them needs a superuser
                    c.execute(sql.SQL("ALTER ROLE {} WITH PASSWORD {}").format(sql.Identifier(role),
                                                                              sql.Literal(verifier)))
                else:
                    c.execute(sql.SQL("CREATE ROLE {} WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD {}")
                              .format(sql.Identifier(role), sql.Literal(verifier)))
                c.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(role), sql.Identifier(admin.username)))
        except psycopg.errors.InsufficientPrivilege as exc:
            raise _cannot_manage_roles(role, exc) from None
        c.execute(sql.SQL("ALTER DATABASE {} OWNER TO {}").format(sql.Identifier(dbname), sql.Identifier(role)))
        c.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(sql.Identifier(dbname)))
        c.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(sql.Identifier(dbname), sql.Identifier(role)))
    with admin.with_db(dbname).connect(autocommit=True) as c:
        c.execute(sql.SQL("ALTER SCHEMA public OWNER TO {}").format(sql.Identifier(role)))
    return Conn(admin.hostname, admin.port, role, password, dbname)


def release_owner_role(admin: Conn, app_name: str, dbname: str) -> None:
    """Owner role turned off: the database goes back to the instance's user, the role is dropped."""
    role = owner_role_name(app_name)
    with admin.connect(autocommit=True) as c:
        c.execute(sql.SQL("ALTER DATABASE {} OWNER TO {}").format(sql.Identifier(dbname), sql.Identifier(admin.username)))
    with admin.with_db(dbname).connect(autocommit=True) as c:
        c.execute(sql.SQL("REASSIGN OWNED BY {} TO {}").format(sql.Identifier(role), sql.Identifier(admin.username)))
    drop_owner_role(admin, app_name)


def drop_owner_role(admin: Conn, app_name: str) -> None:
    role = owner_role_name(app_name)
    with admin.connect(autocommit=True) as c:
        try:
            if _owner_door(c):
                c.execute(sql.SQL("SELECT {}({})").format(_owner_fn(1), sql.Literal(app_name))).fetchall()
            elif c.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone():
                c.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))
        except psycopg.errors.InsufficientPrivilege as exc:
            raise _cannot_manage_roles(role, exc) from None


@dataclass
class CommandsResult:
    ran: list[str] = field(default_factory=list)
    output: str = ""
    finished_at: str = ""


def run_commands(commands: list[str], conn: Conn, working_dir: str | None, what: str = "migrate") -> CommandsResult:
    """Run each command (shlex-split, no shell) in ``working_dir`` with the DBOS app environment.

    A failure raises :class:`CommandError` with the exit code and the output, secrets masked.
    """
    result = CommandsResult()
    cwd = Path(working_dir).expanduser() if working_dir else Path.cwd()
    if not cwd.is_dir():
        raise DbosError(f"{what}: working_dir {cwd} does not exist")
    env = proc.clean_env(conn.env())
    for key in ("VIRTUAL_ENV", "PYTHONPATH"):
        if key in os.environ:
            env[key] = os.environ[key]
    masks = [conn.password, urllib.parse.quote(conn.password, safe="")]
    for command in commands:
        argv = shlex.split(command)
        if not argv:
            continue
        try:
            cp = proc.run(argv, cwd=cwd, env=env, timeout=EngineSettings.from_env().migrate_timeout, check=False, secrets=masks)
        except CommandError as exc:
            raise DbosError(f"{what} command `{proc.mask(command, masks)}` could not run: {exc.message}") from None
        out = proc.mask(cp.stdout + cp.stderr, masks)
        result.output += out
        if cp.returncode != 0:
            raise DbosError(
                f"{what} command `{proc.mask(command, masks)}` failed with exit code {cp.returncode}:\n"
                f"{out.strip()[-4000:]}",
                hint=f"fix the {what} command or the migration; nothing else was changed")
        result.ran.append(command)
    result.finished_at = to_rfc3339(utcnow())
    return result


# ---------------------------------------------------------------------------------- dbos-config.yaml
@dataclass
class DbosConfig:
    path: Path
    app_db_name: str | None = None
    migrate: list[str] | None = None
    rollback: list[str] | None = None
    layout: str = "database"  # "database" (older) or "database_url" (newer)


def _yaml() -> Any:
    from ruamel.yaml import YAML

    y = YAML()
    y.preserve_quotes = True
    return y


def read_dbos_config(path: str | Path) -> DbosConfig:
    """Read app_db_name/migrate/rollback; a malformed file raises ValidationError naming the file and key."""
    p = Path(path)
    where = str(p)
    if not p.is_file():
        raise ValidationError([("dbos_config", f"{where}: file not found")])
    from ruamel.yaml.error import YAMLError

    try:
        doc = _yaml().load(p.read_text())
    except YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" at line {mark.line + 1}" if mark is not None else ""
        raise ValidationError([("dbos_config", f"{where}: YAML syntax error{line}")]) from None
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise ValidationError([("dbos_config", f"{where}: the top level must be a mapping")])
    cfg = DbosConfig(path=p)
    problems: list[tuple[str, str]] = []
    db = doc.get("database")
    if db is not None and not isinstance(db, dict):
        problems.append(("dbos_config", f"{where}: key 'database' must be a mapping"))
        db = None
    db = db or {}
    if "database_url" in doc:
        cfg.layout = "database_url"
        url = doc.get("database_url")
        if url is not None and not isinstance(url, str):
            problems.append(("dbos_config", f"{where}: key 'database_url' must be a string"))
        elif isinstance(url, str) and "${" not in url:
            name = urllib.parse.unquote(urllib.parse.urlsplit(url).path.lstrip("/"))
            cfg.app_db_name = name or None
    if "app_db_name" in db:
        v = db["app_db_name"]
        if not isinstance(v, str) or not re.match(r"^[a-z_][a-z0-9_]{0,62}$", v):
            problems.append(("dbos_config", f"{where}: key 'database.app_db_name' must be a database name "
                             f"([a-z0-9_], 1-63 chars), got {v!r}"))
        else:
            cfg.app_db_name = v
    for key in ("migrate", "rollback"):
        if key in db:
            v = db[key]
            if v is None:
                v = []
            if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
                problems.append(("dbos_config", f"{where}: key 'database.{key}' must be a list of commands"))
            else:
                setattr(cfg, key, [str(x) for x in v])
    if problems:
        raise ValidationError(problems)
    return cfg


def write_connection(path: str | Path, hostname: str, port: int, username: str, dbname: str, *,
                     password: str | None = None, url_safe: bool | None = None) -> bool:
    """Point a dbos-config.yaml at a database, keeping its other keys and comments.

    The password itself is never written. Two layouts:

    - DBOS Transact 3.x (a top-level ``system_database_url``, or no ``database:`` section with
      connection keys): sets ``system_database_url`` (database ``<dbname>_dbos_sys``); 3.x rejects a
      top-level ``database_url``, so one is only updated when the file already has it (2.x). DBOS substitutes environment variables into the file's text before it
      parses the URL, so ``${PGPASSWORD}`` goes into the URLs only when the password needs no
      percent-escaping there (``url_safe``; else decided from ``password``; neither given: assumed
      safe). Otherwise the URLs carry no password and libpq (DBOS connects through psycopg) reads
      ``PGPASSWORD`` from the environment.
    - older (``database.hostname``/``port``/...): ``database.password: "${PGPASSWORD}"``, quoted so that
      any allowed password (none has ``"`` or ``\\``) is still one YAML string once expanded.

    Returns True when the file refers to ``${PGPASSWORD}``, False when its URLs carry no password.
    """
    from ruamel.yaml.comments import CommentedMap
    from ruamel.yaml.error import YAMLError
    from ruamel.yaml.scalarstring import DoubleQuotedScalarString

    p = Path(path)
    y = _yaml()
    y.width = 4096  # never fold a URL onto the next line
    try:
        doc = y.load(p.read_text()) if p.exists() else None
    except YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" at line {mark.line + 1}" if mark is not None else ""
        raise DbosError(f"{p}: YAML syntax error{line}", hint="fix the file, then run the command again") from None
    if doc is None:
        doc = CommentedMap()
    if not isinstance(doc, CommentedMap):
        raise DbosError(f"{p}: the top level must be a mapping", hint="is it a dbos-config.yaml?")
    db = doc.get("database")
    has_conn_keys = isinstance(db, dict) and any(k in db for k in ("hostname", "port", "username", "password"))
    if "database_url" in doc or "system_database_url" in doc or not has_conn_keys:
        if url_safe is None:
            # only characters a URL never escapes (RFC 3986 "unreserved"): what url_for leaves as is
            url_safe = password is None or urllib.parse.quote(password, safe="") == password
        auth = urllib.parse.quote(username, safe="") + (":${PGPASSWORD}" if url_safe else "")
        host = f"[{hostname}]" if ":" in hostname else hostname

        def url(name: str) -> str:
            return f"postgresql://{auth}@{host}:{port}/{urllib.parse.quote(name, safe='')}"

        if "database_url" in doc:  # the 2.x layout; 3.x rejects this key, so it is never added
            doc["database_url"] = url(dbname)
        if "system_database_url" in doc:
            doc["system_database_url"] = url(f"{dbname}_dbos_sys")
        else:
            keys = list(doc.keys())
            at = keys.index("database_url") + 1 if "database_url" in keys else \
                keys.index("database") if "database" in keys else len(keys)
            doc.insert(at, "system_database_url", url(f"{dbname}_dbos_sys"))
        embedded = url_safe
    else:
        assert isinstance(db, dict)
        db["hostname"] = hostname
        db["port"] = port
        db["username"] = username
        db["password"] = DoubleQuotedScalarString("${PGPASSWORD}")
        db["app_db_name"] = dbname
        embedded = True
    out = io.StringIO()
    y.dump(doc, out)
    mode = p.stat().st_mode & 0o777 if p.exists() else 0o644
    write_atomic(p, out.getvalue(), mode)  # the user's file: its mode kept
    return embedded
