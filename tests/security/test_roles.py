"""Issue 18, item 4: a tenant's database user never becomes the OS user that runs the clusters.

On PostgreSQL < 16 a CREATEROLE user may grant itself any non-superuser role, built-in ones included:
``GRANT pg_execute_server_program TO <itself>`` then ``COPY t FROM PROGRAM 'id'`` ran as ``postgres``,
which reads and writes every organization's data directory. Each test performs the attack (as alpha's
instance user from outside, or from inside alpha's app) and reads back what happened; owner roles
(``AppDatabase(owner_role=True)``), the feature that needed CREATEROLE, keep working.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

from pulumi_dbos import apps
from pulumi_dbos.engine import LocalEngine
from pulumi_dbos.engine.local import roles
from pulumi_dbos.errors import DbosError
from tests.security.conftest import PW, Tenants

SERVER_ROLES = ("pg_execute_server_program", "pg_read_server_files", "pg_write_server_files")
REFUSED = "42501"  # insufficient_privilege


def _connect(t: Tenants, user: str = "tenant_u", password: str = PW, dbname: str = "postgres") -> psycopg.Connection[Any]:
    db = t.alpha_db
    return psycopg.connect(host=db["HostName"], port=int(db["Port"]), user=user, password=password, dbname=dbname,
                           autocommit=True, connect_timeout=10)


@pytest.fixture
def tenant(tenants: Tenants) -> Iterator[psycopg.Connection[Any]]:
    """Alpha's instance user, connected as any client of the instance (an app, psql) would be."""
    with _connect(tenants) as conn:
        yield conn


def attempt(conn: psycopg.Connection[Any], statement: sql.Composed | str) -> str:
    """``refused`` when the server says permission denied, else what happened (success or another error)."""
    try:
        cur = conn.execute(statement)
        rows = cur.fetchall() if cur.description else []
    except psycopg.errors.InsufficientPrivilege:
        return "refused"
    except psycopg.Error as exc:
        return f"error {exc.sqlstate}: {str(exc).strip()}"
    return f"succeeded: {rows}"


def memberships(conn: psycopg.Connection[Any], user: str) -> dict[str, bool]:
    return {role: bool(conn.execute("SELECT pg_has_role(%s, %s, 'MEMBER')", (user, role)).fetchone()[0])  # type: ignore[index]
            for role in SERVER_ROLES}


def _undo(conn: psycopg.Connection[Any], user: str, made: list[str]) -> None:
    """Before the fix the attack works: undo it so that the session's other tests see a clean instance."""
    for role in SERVER_ROLES:
        with contextlib.suppress(psycopg.Error):
            conn.execute(sql.SQL("REVOKE {} FROM {}").format(sql.Identifier(role), sql.Identifier(user)))
    for role in made:
        with contextlib.suppress(psycopg.Error):
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


@pytest.mark.parametrize("server_role", SERVER_ROLES)
def test_instance_user_cannot_gain_server_roles(tenant: psycopg.Connection[Any], server_role: str) -> None:
    """GRANT to itself, a new role IN ROLE, a new role granted then SET ROLE: all refused."""
    other = f"x_{secrets.token_hex(3)}"
    try:
        outcomes = {
            "grant to itself": attempt(tenant, sql.SQL("GRANT {} TO tenant_u").format(sql.Identifier(server_role))),
            "create role in role": attempt(tenant, sql.SQL("CREATE ROLE {} IN ROLE {}").format(
                sql.Identifier(other), sql.Identifier(server_role))),
            "take CREATEROLE back": attempt(tenant, "ALTER ROLE tenant_u CREATEROLE"),
        }
        assert outcomes == dict.fromkeys(outcomes, "refused"), outcomes
        assert memberships(tenant, "tenant_u") == dict.fromkeys(SERVER_ROLES, False)
        if tenant.info.server_version < 160000:
            # < 16: CREATEROLE may grant any non-superuser role; the instance user has none
            row = tenant.execute("SELECT rolcreaterole FROM pg_roles WHERE rolname = current_user").fetchone()
            assert row == (False,)
    finally:
        _undo(tenant, "tenant_u", [other])


def test_copy_from_program_and_server_files_are_refused(tenant: psycopg.Connection[Any]) -> None:
    """The whole attack: grant the three roles to itself (whatever that answers), then run a program and read
    and write server files: every step refused, and no program ran as the clusters' OS user."""
    try:
        for role in SERVER_ROLES:
            attempt(tenant, sql.SQL("GRANT {} TO tenant_u").format(sql.Identifier(role)))
        tenant.execute("CREATE TEMP TABLE loot (line text)")
        outcomes = {
            "program": attempt(tenant, "COPY loot FROM PROGRAM 'id'"),
            "read file": attempt(tenant, "COPY loot FROM '/etc/passwd'"),
            "write file": attempt(tenant, "COPY (SELECT 'pwned') TO '/tmp/pulumi-dbos-pwned'"),
            "pg_read_file": attempt(tenant, "SELECT pg_read_file('pg_hba.conf')"),
        }
        loot = tenant.execute("SELECT string_agg(line, ' | ') FROM loot").fetchone()
        assert outcomes == dict.fromkeys(outcomes, "refused"), (outcomes, loot)
        assert loot == (None,)
    finally:
        _undo(tenant, "tenant_u", [])


def test_attacker_app_cannot_run_programs_as_postgres(tenants: Tenants) -> None:
    """From inside alpha's app, with the database URL it is given: GRANT, then COPY FROM PROGRAM."""
    out = tenants.run_json('''
import json, os
import psycopg

res = {}
with psycopg.connect(os.environ["DBOS_DATABASE_URL"], autocommit=True, connect_timeout=10) as c:
    res["user"] = c.execute("SELECT current_user").fetchone()[0]
    steps = [
        ("grant", 'GRANT pg_execute_server_program TO "%s"' % res["user"]),
        ("table", "CREATE TEMP TABLE loot (line text)"),
        ("copy", "COPY loot FROM PROGRAM 'id'"),
        ("loot", "SELECT string_agg(line, ' ') FROM loot"),
    ]
    for key, stmt in steps:
        try:
            cur = c.execute(stmt)
            res[key] = "ok" + (": %s" % (cur.fetchone()[0],) if cur.description else "")
        except psycopg.Error as exc:
            res[key] = "refused %s: %s" % (exc.sqlstate, str(exc).strip())
print(json.dumps(res))
''')
    try:
        assert out["grant"].startswith(f"refused {REFUSED}"), out
        assert out["copy"].startswith(f"refused {REFUSED}"), out
        assert "uid=" not in out["loot"], out
    finally:
        with _connect(tenants) as conn:
            _undo(conn, str(out.get("user") or "tenant_u"), [])


def test_owner_role_still_works_without_createrole(tenants: Tenants, tenant: psycopg.Connection[Any]) -> None:
    """``AppDatabase(owner_role=True)`` on serve's clusters (PG 15, no CREATEROLE): made, used, rotated, released,
    dropped by the instance's user; the owner role can gain nothing either."""
    app = f"own{secrets.token_hex(3)}"
    admin = apps.Conn(tenants.alpha_db["HostName"], int(tenants.alpha_db["Port"]), "tenant_u", PW)
    apps.ensure_database(admin, app)
    try:
        owner = apps.ensure_owner_role(admin, app, app)
        with owner.connect(autocommit=True) as c:
            c.execute("CREATE TABLE kept (x int)")
            c.execute("INSERT INTO kept VALUES (1)")
            assert attempt(c, "GRANT pg_execute_server_program TO CURRENT_USER") == "refused"
            assert attempt(c, "COPY kept FROM PROGRAM 'echo 2'") == "refused"
        again = apps.ensure_owner_role(admin, app, app)  # a new password (the update path)
        assert again.password != owner.password
        with again.connect() as c:
            assert c.execute("SELECT x FROM kept").fetchone() == (1,)
        with pytest.raises(DbosError, match="password authentication failed"):
            owner.connect()
        apps.release_owner_role(admin, app, app)
        assert tenant.execute("SELECT 1 FROM pg_roles WHERE rolname = %s",
                              (apps.owner_role_name(app),)).fetchone() is None
        with admin.with_db(app).connect() as c:  # back to the instance's user, data kept
            assert c.execute("SELECT x FROM kept").fetchone() == (1,)
    finally:
        apps.drop_database(admin, app)
        with contextlib.suppress(DbosError, psycopg.Error):
            apps.drop_owner_role(admin, app)


def test_owner_role_door_reaches_only_its_own_roles(tenant: psycopg.Connection[Any]) -> None:
    """The superuser's functions that make owner roles for the instance user touch no other role: not a
    built-in one (``pg_database_owner`` is ``<pg_database>_owner``), not the instance user, not a bad name."""
    ensure, drop = roles.OWNER_FUNCTIONS
    for app in ("pg_database", "pg_execute_server_program", 'x"; DROP ROLE tenant_u; --', "a" * 60, ""):
        for fn, args in ((ensure, (app, "SCRAM-SHA-256$4096:x")), (drop, (app,))):
            outcome = attempt(tenant, sql.SQL("SELECT {}({})").format(
                sql.SQL(fn), sql.SQL(", ").join(sql.Literal(a) for a in args)))
            assert outcome.startswith("error") or outcome == "refused", (fn, app, outcome)
    row = tenant.execute("SELECT rolsuper, rolcreaterole FROM pg_roles WHERE rolname = 'pg_database_owner'").fetchone()
    assert row == (False, False)
    assert tenant.execute("SELECT rolcanlogin FROM pg_roles WHERE rolname = 'pg_database_owner'").fetchone() == (False,)


def test_existing_instance_loses_createrole_and_server_roles(engine: LocalEngine) -> None:
    """An instance made before the fix (its user with CREATEROLE, perhaps already escalated, a role of its own
    with CREATEROLE) is repaired when the engine next touches it: started again, or only listed."""
    info = engine.provision("old_inst", "old_user", PW)
    with engine.server.admin("old_inst", info.port) as su:
        su.execute("ALTER ROLE old_user CREATEROLE")
        su.execute("GRANT pg_execute_server_program, pg_read_server_files TO old_user")
        su.execute("CREATE ROLE helper CREATEROLE")
        su.execute("GRANT pg_write_server_files TO helper")
        su.execute("GRANT helper TO old_user")
        su.execute("CREATE ROLE shop_owner LOGIN")  # an owner role made the old way
        su.execute("GRANT shop_owner TO old_user")
    roles.forget_hardened(engine.layout.inst_dir("old_inst"))  # as an instance of the old code is
    engine.stop("old_inst")
    engine.ensure_running("old_inst")
    with engine.server.admin("old_inst", info.port) as su:
        if su.info.server_version < 160000:
            assert su.execute("SELECT rolname FROM pg_roles WHERE rolcreaterole AND NOT rolsuper").fetchall() == []
        assert memberships(su, "old_user") == dict.fromkeys(SERVER_ROLES, False)
        assert memberships(su, "helper") == dict.fromkeys(SERVER_ROLES, False)
    admin = apps.Conn("127.0.0.1", info.port, "old_user", PW)
    apps.ensure_database(admin, "shop")
    owner = apps.ensure_owner_role(admin, "shop", "shop")  # the old owner role is still managed
    with owner.connect() as c:
        assert c.execute("SELECT current_user").fetchone() == ("shop_owner",)

    # a running instance of the old code: the next list() repairs it
    with engine.server.admin("old_inst", info.port) as su:
        su.execute("ALTER ROLE old_user CREATEROLE")
        su.execute("GRANT pg_execute_server_program TO old_user")
    roles.forget_hardened(engine.layout.inst_dir("old_inst"))
    assert [i.status for i in engine.list()] == ["available"]
    with engine.server.admin("old_inst", info.port) as su:
        if su.info.server_version < 160000:
            assert su.execute("SELECT rolcreaterole FROM pg_roles WHERE rolname = 'old_user'").fetchone() == (False,)
        assert memberships(su, "old_user") == dict.fromkeys(SERVER_ROLES, False)
    engine.destroy("old_inst")
