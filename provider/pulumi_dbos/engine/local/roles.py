"""The user's role on a local instance: created like RDS's master user, passwords as SCRAM verifiers.

Passwords never appear in argv or SQL text: the verifier is computed client-side
(``PGconn.encrypt_password``) and sent instead.

No role escalation (issue 18). The instance's user is a tenant's; the cluster runs as the OS user
that runs every instance of the data dir (under ``pulumi-dbos serve``, every organization's), so the
user must never gain ``pg_execute_server_program`` (``COPY ... FROM PROGRAM`` runs a program as that
OS user), ``pg_read_server_files`` or ``pg_write_server_files``:

- PostgreSQL < 16: a CREATEROLE role may grant membership in *any* non-superuser role, built-in ones
  included (``GRANT pg_execute_server_program TO <itself>`` succeeds). The user gets no CREATEROLE.
- PostgreSQL >= 16: CREATEROLE only lets a role grant roles it holds ADMIN OPTION on (it gets that on
  the roles it creates; nobody but a superuser holds it on the built-in roles), and it cannot hand out
  SUPERUSER, REPLICATION or BYPASSRLS it does not have itself; so the user keeps CREATEROLE there, as
  DBOS Cloud's user has it.
- Every version: :func:`harden` (run at creation, after a restore, and once on every instance made by
  older code, see the facade) strips CREATEROLE from every non-superuser role on < 16 and revokes the
  three roles from every non-superuser member, whoever granted them.

Owner roles (``AppDatabase(owner_role=True)``, ``<app>_owner``) needed CREATEROLE. They are made by the
cluster's superuser instead, through two SECURITY DEFINER functions it installs in database
``postgres`` (:data:`OWNER_FUNCTIONS`, executable by the instance's user only): they create, re-password
and drop roles named ``<app>_owner`` that they made themselves (recorded in a table only the superuser
can write), always LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS, granted to the
calling user. They cannot touch any other role (a built-in ``pg_*`` one, the instance's user, a role
the user did not get from them). ``apps.ensure_owner_role`` uses them when they exist, so the same
code path works on the local engine, under serve (the ``dbos-cloud`` engine connects as the instance's
user, as a DBOS app does) and, without them, on DBOS Cloud or a linked server whose user has CREATEROLE.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...errors import EngineError
from ..files import write_atomic

if TYPE_CHECKING:  # psycopg loads on first use: a preview's checks never connect
    import psycopg

log = logging.getLogger("pulumi_dbos.engine")

#: built-in roles that reach the server's OS user: never held by anyone but a superuser
SERVER_ROLES = ("pg_execute_server_program", "pg_read_server_files", "pg_write_server_files")
#: the superuser's schema in database ``postgres`` holding the owner-role functions and their records
OWNER_SCHEMA = "pulumi_dbos"
#: ``ensure_owner_role(app text, verifier text) -> text`` and ``drop_owner_role(app text)``
OWNER_FUNCTIONS = (f"{OWNER_SCHEMA}.ensure_owner_role", f"{OWNER_SCHEMA}.drop_owner_role")
#: from this version on the instance's user may keep CREATEROLE (see the module's docstring)
CREATEROLE_SAFE_FROM = 160000
#: the marker file, in the instance's directory, saying :func:`harden` ran (bumped when it changes)
HARDENED_MARKER = "roles-hardened"
HARDEN_VERSION = "1"

_harden_lock = threading.Lock()

# An app name is 3-16 characters of [a-z0-9_] (resources validate it); the functions accept 1-57 so that
# ``<app>_owner`` is a valid identifier, and nothing starting with ``pg_`` (reserved: ``pg_database_owner``).
_FUNCTIONS = r"""
CREATE TABLE IF NOT EXISTS pulumi_dbos.owner_roles (rolname name PRIMARY KEY);
REVOKE ALL ON TABLE pulumi_dbos.owner_roles FROM PUBLIC;

CREATE OR REPLACE FUNCTION pulumi_dbos.owner_role_of(app text) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
-- ``<app>_owner`` if ``app`` may have one, and it is absent or one of ours; an error otherwise
DECLARE
    r text := app || '_owner';
BEGIN
    IF app IS NULL OR app !~ '^[a-z0-9_]{1,57}$' OR app ~ '^pg_' OR r = session_user THEN
        RAISE EXCEPTION 'invalid app name for an owner role: %', app USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = r)
            AND NOT EXISTS (SELECT 1 FROM pulumi_dbos.owner_roles o WHERE o.rolname = r) THEN
        RAISE EXCEPTION 'role % exists and is not an owner role made by pulumi-dbos', r
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN r;
END
$fn$;

CREATE OR REPLACE FUNCTION pulumi_dbos.ensure_owner_role(app text, verifier text) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    r text := pulumi_dbos.owner_role_of(app);
BEGIN
    IF verifier IS NULL OR verifier !~ '^SCRAM-SHA-256\$' THEN
        RAISE EXCEPTION 'an owner role''s password must be sent as a SCRAM-SHA-256 verifier'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = r) THEN
        EXECUTE format('ALTER ROLE %I WITH LOGIN PASSWORD %L', r, verifier);
    ELSE
        EXECUTE format('CREATE ROLE %I WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION '
                       'NOBYPASSRLS PASSWORD %L', r, verifier);
        INSERT INTO pulumi_dbos.owner_roles (rolname) VALUES (r) ON CONFLICT DO NOTHING;
    END IF;
    EXECUTE format('GRANT %I TO %I', r, session_user);
    RETURN r;
END
$fn$;

CREATE OR REPLACE FUNCTION pulumi_dbos.drop_owner_role(app text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    r text := pulumi_dbos.owner_role_of(app);
BEGIN
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = r) THEN
        EXECUTE format('DROP ROLE %I', r);
    END IF;
    DELETE FROM pulumi_dbos.owner_roles o WHERE o.rolname = r;
END
$fn$;

REVOKE ALL ON FUNCTION pulumi_dbos.owner_role_of(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION pulumi_dbos.ensure_owner_role(text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION pulumi_dbos.drop_owner_role(text) FROM PUBLIC;
"""


def verifier(conn: psycopg.Connection[Any], username: str, password: str) -> str:
    return conn.pgconn.encrypt_password(password.encode(), username.encode(), b"scram-sha-256").decode()


def createrole_allowed(conn: psycopg.Connection[Any]) -> bool:
    """Whether the instance's user may hold CREATEROLE on this server (PostgreSQL 16 or later)."""
    return conn.info.server_version >= CREATEROLE_SAFE_FROM


def create_user(conn: psycopg.Connection[Any], username: str, password: str) -> None:
    """LOGIN, CREATEDB (CREATEROLE on PostgreSQL 16+ only), owner of database ``postgres``; not a superuser.

    ``conn``: the superuser's, over the private socket, in database ``postgres``.
    """
    from psycopg import sql
    extra = sql.SQL(" CREATEROLE") if createrole_allowed(conn) else sql.SQL("")
    conn.execute(sql.SQL("CREATE ROLE {} WITH LOGIN CREATEDB{} PASSWORD {}").format(
        sql.Identifier(username), extra, sql.Literal(verifier(conn, username, password))))
    conn.execute(sql.SQL("GRANT pg_monitor, pg_signal_backend TO {}").format(sql.Identifier(username)))
    conn.execute(sql.SQL("ALTER DATABASE postgres OWNER TO {}").format(sql.Identifier(username)))
    harden(conn, username)


def harden(conn: psycopg.Connection[Any], username: str) -> None:
    """Take away what leads to the server's OS user, and (re)install the owner-role functions.

    ``conn``: the superuser's, over the private socket, in database ``postgres`` (autocommit). Idempotent;
    one transaction, serialized across processes by an advisory lock. Repairs instances made by older
    code (their user had CREATEROLE on PostgreSQL < 16, and may have used it): afterwards no
    non-superuser has CREATEROLE (< 16) or is a member of :data:`SERVER_ROLES`, and the owner roles the
    user made itself the old way (``<app>_owner`` roles it is a member of) are adopted by the functions.
    """
    from psycopg import sql
    pg16 = createrole_allowed(conn)
    user = sql.Identifier(username)
    with _harden_lock, conn.transaction():
        conn.execute("SELECT pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('pulumi_dbos.roles'))")
        if not pg16:
            for (role,) in conn.execute("SELECT rolname FROM pg_catalog.pg_roles WHERE rolcreaterole AND NOT rolsuper").fetchall():
                log.warning("instance role %r had CREATEROLE (a way to the server's OS user on PostgreSQL < 16): "
                            "revoked", role)
                conn.execute(sql.SQL("ALTER ROLE {} NOCREATEROLE").format(sql.Identifier(role)))
        granted = conn.execute(
            "SELECT r.rolname, m.rolname, g.rolname FROM pg_catalog.pg_auth_members a "
            "JOIN pg_catalog.pg_roles r ON r.oid = a.roleid JOIN pg_catalog.pg_roles m ON m.oid = a.member "
            "LEFT JOIN pg_catalog.pg_roles g ON g.oid = a.grantor "
            "WHERE r.rolname = ANY(%s) AND NOT m.rolsuper", (list(SERVER_ROLES),)).fetchall()
        for role, member, grantor in granted:
            log.warning("instance role %r was a member of %s: revoked", member, role)
            # 16+ keeps one grant per grantor and REVOKE removes only the named grantor's
            by = sql.SQL(" GRANTED BY {}").format(sql.Identifier(grantor)) if pg16 and grantor else sql.SQL("")
            conn.execute(sql.SQL("REVOKE {} FROM {}{}").format(sql.Identifier(role), sql.Identifier(member), by))
        # the functions' schema: the superuser's own (one of that name made by the user is dropped first)
        row = conn.execute("SELECT pg_catalog.pg_get_userbyid(nspowner) = current_user FROM pg_catalog.pg_namespace "
                           "WHERE nspname = %s",
                           (OWNER_SCHEMA,)).fetchone()
        schema = sql.Identifier(OWNER_SCHEMA)
        if row is not None and not row[0]:
            log.warning("schema %s of instance user was not the superuser's: replaced", OWNER_SCHEMA)
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(schema))
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(schema))
        conn.execute(sql.SQL("REVOKE ALL ON SCHEMA {} FROM PUBLIC").format(schema))
        conn.execute(_FUNCTIONS)
        conn.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(schema, user))
        conn.execute(sql.SQL("GRANT EXECUTE ON FUNCTION {}.ensure_owner_role(text, text), {}.drop_owner_role(text) "
                             "TO {}").format(schema, schema, user))
        conn.execute(
            "INSERT INTO pulumi_dbos.owner_roles (rolname) SELECT rolname FROM pg_catalog.pg_roles "
            "WHERE rolname ~ '^[a-z0-9_]{1,57}_owner$' AND rolname !~ '^pg_' AND NOT rolsuper AND rolname <> %s "
            "AND pg_catalog.pg_has_role(%s, oid, 'MEMBER') ON CONFLICT DO NOTHING", (username, username))


def hardened(inst_dir: Path) -> bool:
    """Whether :func:`harden` (this version of it) ran on the instance in ``inst_dir``."""
    try:
        fd = os.open(inst_dir / HARDENED_MARKER, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return False
    with os.fdopen(fd) as fh:
        return fh.read().strip() == HARDEN_VERSION


def mark_hardened(inst_dir: Path) -> None:
    """Write the marker (a new file renamed into place, fsynced: never written through an existing path)."""
    write_atomic(inst_dir / HARDENED_MARKER, HARDEN_VERSION + "\n", 0o600)


def forget_hardened(inst_dir: Path) -> None:
    """Drop the marker (tests: an instance made by older code)."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(inst_dir / HARDENED_MARKER)


def set_password(conn: psycopg.Connection[Any], username: str, password: str) -> None:
    from psycopg import sql
    if conn.execute("SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = %s", (username,)).fetchone() is None:
        raise EngineError(f"role {username!r} does not exist on the instance",
                          hint="the username of an instance cannot change in place: replace the instance")
    conn.execute(sql.SQL("ALTER ROLE {} WITH LOGIN PASSWORD {}").format(
        sql.Identifier(username), sql.Literal(verifier(conn, username, password))))


def end_sessions(conn: psycopg.Connection[Any], username: str, keep_client_ports: Iterable[int] = ()) -> None:
    """End ``username``'s sessions, except TCP ones from ``keep_client_ports`` (the running apps bound to the
    instance, which hold the new password already: ending their sessions would fail their requests)."""
    conn.execute("SELECT pg_catalog.pg_terminate_backend(pid) FROM pg_catalog.pg_stat_activity WHERE usename = %s "
                 "AND pid <> pg_catalog.pg_backend_pid() AND (client_port IS NULL OR NOT client_port = ANY(%s))",
                 (username, sorted(keep_client_ports))).fetchall()


def credentials_work(hostname: str, port: int, username: str, password: str) -> bool:
    import psycopg
    try:
        with psycopg.connect(host=hostname, port=port, user=username, password=password, dbname="postgres",
                             connect_timeout=10):
            return True
    except psycopg.OperationalError:
        return False


def verify_connection(hostname: str, port: int, username: str, password: str, dbname: str = "postgres") -> None:
    """Connect or raise an EngineError saying why (the password masked)."""
    import psycopg
    try:
        with psycopg.connect(host=hostname, port=port, user=username, password=password, dbname=dbname,
                             connect_timeout=10, sslmode="prefer") as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        msg = str(exc).replace(password, "[secret]") if password else str(exc)
        raise EngineError(f"cannot connect to {hostname}:{port} as {username!r}: {msg.strip()}",
                          hint="check hostname, port, username and password, and that the server accepts TCP") from None
