"""App bindings without Pulumi: app databases and migrations (dbos-config.yaml: :mod:`.dbos_config`).

What ``AppDatabase`` (and the ``db connect`` / ``app rollback`` commands) do,
as plain functions tested on their own:

- ``ensure_database`` / ``drop_database`` on an instance, through its admin URL;
- ``ensure_owner_role``: the optional least-privilege role owning only the app's database;
- ``run_commands``: the app's ``migrate``/``rollback`` commands with the environment a DBOS
  app gets, split with ``shlex`` and run without a shell (no pipes or ``&&``: write a script);
"""

from __future__ import annotations

import os
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
from .engine.settings import EngineSettings
from .engine.urls import url_for
from .errors import CommandError, DbosError
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
