"""Issue 31, item 2: a tenant's admin role never becomes superuser through the engine's superuser sessions.

The tenant's admin role owns database ``postgres`` (and the databases it makes). It creates a schema of
trojans, each named like a catalog function, relation or operator the engine uses, and puts that schema
first in the database's ``search_path`` (``ALTER DATABASE ... SET search_path``). Any superuser session
that resolves an unqualified name through that path runs the trojan as the superuser: the trojan then
writes a file as the clusters' OS user (``COPY ... TO``, superuser only: the witness) and makes the tenant's
role SUPERUSER (the escalation, from which ``COPY ... FROM PROGRAM`` reaches every organization's cluster).

The names are generated from the code: every identifier followed by ``(`` in the SQL strings of
``provider/`` that names a function of ``pg_catalog``, every ``pg_*`` relation after FROM/JOIN, every
operator symbol; each gets a trojan of the same signature that forwards to the real one (so the engine's
paths go on working while the trojan runs, as an attacker would want). Then every superuser path runs
through serve's API or its schedule: backup, scheduled backup, restore, drill, reset password, role repair,
stop and start. Afterwards: no witness file, the role is no superuser, in the source and the restored copy.
"""

from __future__ import annotations

import ast
import contextlib
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from psycopg import sql

from tests.security.conftest import PW, client, provision
from tests.support.serve import Serve, running_serve

PROVIDER = Path(__file__).resolve().parents[2] / "provider"
#: a string of the code is SQL if it holds one of these statements' keywords
_SQL_WORD = re.compile(r"\b(SELECT|INSERT|UPDATE|DELETE|ALTER|CREATE|GRANT|REVOKE|DROP|COPY|REASSIGN|CHECKPOINT)\b")
_CALL = re.compile(r"\b([A-Za-z_][A-Za-z0-9_]*)\s*\(")
_RELATION = re.compile(r"\b(?:FROM|JOIN)\s+(?:pg_catalog\.)?(pg_[a-z_]+)\b")
_OPERATOR = re.compile(r"(?<=[\s\w)])(=|<>|!=|<=|>=|<|>|-|\+|~|!~|~~)(?=[\s\w(%'])")
#: databases of the tenant the trojans go into: its own ``postgres`` and one it makes
DATABASES = ("postgres", "trapdb")
ORG = "mallet"
DB = "sp_db"
BACKUP_INTERVAL = 3.0


def sql_strings() -> list[str]:
    """Every string constant of ``provider/`` that looks like SQL (f-strings' literal parts included)."""
    out = []
    for path in PROVIDER.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and _SQL_WORD.search(node.value):
                out.append(node.value)
    return out


@dataclass(frozen=True)
class Names:
    functions: frozenset[str]
    relations: frozenset[str]
    operators: frozenset[str]


def names_in_code() -> Names:
    texts = sql_strings()
    ops = {m for t in texts for m in _OPERATOR.findall(t)}
    if any(re.search(r"\bLIKE\b", t) for t in texts):
        ops.add("~~")
    return Names(frozenset(n.lower() for t in texts for n in _CALL.findall(t)),
                 frozenset(r for t in texts for r in _RELATION.findall(t)), frozenset(ops))


_PWN = """
CREATE FUNCTION trojan.pwn(what text) RETURNS boolean LANGUAGE plpgsql SET search_path = pg_catalog AS $fn$
BEGIN
    -- run by a superuser other than the tenant (the engine): leave a witness (once a session)
    -- and escalate
    IF current_user <> 'tenant_u' AND (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user) THEN
        IF pg_catalog.current_setting('trojan.x' || pg_catalog.md5(what), true) IS DISTINCT FROM 'yes' THEN
            PERFORM pg_catalog.set_config('trojan.x' || pg_catalog.md5(what), 'yes', false);
            EXECUTE pg_catalog.format('COPY (SELECT %L) TO %L', current_user, {witness} || '/' || what);
            EXECUTE 'ALTER ROLE tenant_u SUPERUSER';
        END IF;
    ELSE
        INSERT INTO trojan.reached VALUES (what);
    END IF;
    RETURN true;
END
$fn$
"""


def plant(conn: psycopg.Connection[Any], names: Names, witness: Path) -> set[str]:
    """The trojans, in the database ``conn`` is on (as the tenant's role); the labels of those planted."""
    conn.execute("CREATE SCHEMA trojan")
    conn.execute("CREATE TABLE trojan.reached (what text)")
    conn.execute("GRANT USAGE ON SCHEMA trojan TO PUBLIC")
    conn.execute("GRANT INSERT ON trojan.reached TO PUBLIC")
    conn.execute(sql.SQL(_PWN).format(witness=sql.Literal(str(witness))))
    planted: set[str] = set()

    def make(label: str, *statements: sql.Composable) -> None:
        try:
            with conn.transaction():
                for s in statements:
                    conn.execute(s)
        except psycopg.Error:
            return  # a signature plpgsql cannot take ("any", internal...): another overload of the name may
        planted.add(label)

    procs = conn.execute(
        "SELECT p.oid, p.proname, pg_catalog.pg_get_function_identity_arguments(p.oid), "
        "pg_catalog.pg_get_function_result(p.oid), p.prokind, p.proretset, p.pronargs, p.provariadic <> 0 "
        "FROM pg_catalog.pg_proc p WHERE p.pronamespace = 'pg_catalog'::regnamespace AND p.proname = ANY(%s)",
        (sorted(names.functions),)).fetchall()
    for oid, fname, args, result, kind, retset, nargs, variadic in procs:
        label = f"fn_{fname}"
        if kind == "a":
            if nargs == 0:  # count(*)
                step = sql.Identifier("trojan", f"step_{oid}")
                make(label,
                     sql.SQL("CREATE FUNCTION {}(bigint) RETURNS bigint LANGUAGE plpgsql AS $fn$ BEGIN "
                             "PERFORM trojan.pwn({}); RETURN $1 + 1; END $fn$").format(step, sql.Literal(label)),
                     sql.SQL("CREATE AGGREGATE {}(*) (SFUNC = {}, STYPE = bigint, INITCOND = '0')").format(
                         sql.Identifier("trojan", fname), step))
            continue
        if kind != "f":
            continue
        params = [f"${i}" for i in range(1, nargs + 1)]
        if variadic and params:
            params[-1] = "VARIADIC " + params[-1]
        call = sql.SQL("{}({})").format(sql.Identifier("pg_catalog", fname), sql.SQL(", ".join(params)))
        body = (sql.SQL("RETURN QUERY SELECT * FROM {};").format(call) if retset
                else sql.SQL("PERFORM {}; RETURN;").format(call) if result == "void"
                else sql.SQL("RETURN {};").format(call))
        make(label, sql.SQL("CREATE FUNCTION {}({}) RETURNS {} LANGUAGE plpgsql AS $fn$ BEGIN "
                            "PERFORM trojan.pwn({}); {} END $fn$").format(
            sql.Identifier("trojan", fname), sql.SQL(args), sql.SQL(result), sql.Literal(label), body))

    rels = conn.execute("SELECT relname FROM pg_catalog.pg_class WHERE relnamespace = 'pg_catalog'::regnamespace "
                        "AND relkind IN ('r', 'v') AND relname = ANY(%s)", (sorted(names.relations),)).fetchall()
    for (rel,) in rels:
        label = f"rel_{rel}"
        make(label, sql.SQL("CREATE VIEW {} AS SELECT * FROM {} WHERE trojan.pwn({})").format(
            sql.Identifier("trojan", rel), sql.Identifier("pg_catalog", rel), sql.Literal(label)))

    opers = conn.execute(
        "SELECT o.oid, o.oprname, o.oprleft::regtype::text, o.oprright::regtype::text, "
        "o.oprresult::regtype::text, o.oprcode::regproc::text "
        "FROM pg_catalog.pg_operator o JOIN pg_catalog.pg_type l ON l.oid = o.oprleft "
        "JOIN pg_catalog.pg_type r ON r.oid = o.oprright "
        "WHERE o.oprnamespace = 'pg_catalog'::regnamespace AND o.oprname = ANY(%s) "
        "AND l.typtype <> 'p' AND r.typtype <> 'p'", (sorted(names.operators),)).fetchall()
    for oid, op, left, right, result, code in opers:
        label, fn = f"op_{op}", sql.Identifier("trojan", f"op_{oid}")
        make(label,
             sql.SQL("CREATE FUNCTION {}({}, {}) RETURNS {} LANGUAGE plpgsql AS $fn$ BEGIN "
                     "PERFORM trojan.pwn({}); RETURN pg_catalog.{}($1, $2); END $fn$").format(
                 fn, sql.SQL(left), sql.SQL(right), sql.SQL(result), sql.Literal(label), sql.SQL(code)),
             sql.SQL("CREATE OPERATOR trojan.{} (LEFTARG = {}, RIGHTARG = {}, FUNCTION = {})").format(
                 sql.SQL(op), sql.SQL(left), sql.SQL(right), fn))
    return planted


@dataclass
class Trap:
    serve: Serve
    api: httpx.Client
    db: dict[str, Any]
    witness: Path
    planted: set[str]


def tenant_conn(db: dict[str, Any], dbname: str = "postgres", password: str = PW,
                options: str = "") -> psycopg.Connection[Any]:
    return psycopg.connect(host=db["HostName"], port=int(db["Port"]), user="tenant_u", password=password,
                           dbname=dbname, autocommit=True, connect_timeout=10, options=options)


@pytest.fixture(scope="module")
def trap() -> Iterator[Trap]:
    """A serve of its own (scheduled backups every few seconds, no scheduled drills), one organization whose
    instance holds the trojans in two databases, each database's search_path leading to them."""
    witness = Path(tempfile.mkdtemp(prefix="trojan-witness-"))
    os.chmod(witness, 0o1777)  # the clusters' OS user writes here, if ever a trojan runs as the superuser
    names = names_in_code()
    try:
        with running_serve(backup_interval=BACKUP_INTERVAL, extra_args=("--drill-interval", "0")) as serve, \
                client(serve, serve.token(ORG, "mallory")) as api:
            db = provision(api, ORG, DB)
            with tenant_conn(db) as conn:
                conn.execute("CREATE DATABASE trapdb")
            planted: set[str] = set()
            for dbname in DATABASES:
                with tenant_conn(db, dbname) as conn:
                    planted |= plant(conn, names, witness)
                    conn.execute("CREATE TABLE public.rows (x int)")  # a user table: a drill counts its rows
                    conn.execute("INSERT INTO public.rows SELECT generate_series(1, 10)")
                    conn.execute(sql.SQL("ALTER DATABASE {} SET search_path = trojan, pg_catalog, public").format(
                        sql.Identifier(dbname)))
            yield Trap(serve, api, db, witness, planted)
    finally:
        shutil.rmtree(witness, ignore_errors=True)


def superuser(db: dict[str, Any], password: str = PW) -> bool:
    with tenant_conn(db, password=password) as conn:
        row = conn.execute("SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = 'tenant_u'").fetchone()
    return bool(row and row[0])


def test_every_name_the_engine_calls_has_a_trojan_the_tenant_reaches(trap: Trap) -> None:
    """The plant works: each function the code's SQL names has a trojan, and an ordinary session of the
    database (which follows the database's search_path) runs the trojan, not the catalog's function."""
    names = names_in_code()
    with tenant_conn(trap.db) as conn:
        catalog = {r[0] for r in conn.execute(
            "SELECT DISTINCT proname FROM pg_catalog.pg_proc WHERE pronamespace = 'pg_catalog'::regnamespace "
            "AND proname = ANY(%s) AND (prokind = 'f' OR (prokind = 'a' AND pronargs = 0))",
            (sorted(names.functions),))}
        # the engine's calls, as the generator sees them (a sample: the list is the code's, not this one)
        assert {"clock_timestamp", "pg_current_xact_id", "pg_switch_wal", "pg_current_snapshot", "count"} <= catalog
        missing = {f"fn_{f}" for f in catalog} - trap.planted
        assert not missing, f"no trojan could be made for {sorted(missing)}"
        assert {f"rel_{r}" for r in names.relations} <= trap.planted
        conn.execute("SELECT clock_timestamp(), pg_current_snapshot(), count(*) FROM pg_roles")
        reached = {r[0] for r in conn.execute("SELECT DISTINCT what FROM trojan.reached")}
    assert {"fn_clock_timestamp", "fn_pg_current_snapshot", "fn_count", "rel_pg_roles"} <= reached
    assert not list(trap.witness.iterdir())  # as the tenant itself, a trojan does nothing


def _wait_for_scheduled_backup(serve: Serve, after: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if re.search(rf"base backup \S+ of {DB}\b", serve.log()[after:]):
            return
        time.sleep(0.5)
    raise AssertionError(f"no scheduled backup of {DB} within {timeout:.0f}s:\n{serve.log()[after:][-3000:]}")


def test_no_superuser_path_runs_a_trojan(trap: Trap) -> None:
    api, base = trap.api, f"/v1alpha1/{ORG}/databases/userdb/{DB}"
    results: dict[str, int] = {}
    log_start = len(trap.serve.log())
    restored = f"{DB}_r"
    try:
        results["backup"] = api.post(f"{base}/backup").status_code
        _wait_for_scheduled_backup(trap.serve, log_start)
        results["scheduled backup"] = 201
        r = api.post(f"{base}/restore", json={"RestoreName": restored, "RestoreTimestamp": "latest"})
        results["restore"] = r.status_code
        r = api.post(f"{base}/drills", json={"CheckSql": "SELECT count(*) > 0 FROM public.rows"})
        results["drill"] = r.status_code if r.status_code != 201 or r.json()["Ok"] else 500
        results["reset password"] = api.post(f"{base}/credentials", json={"Password": PW}).status_code
        # role repair: the engine checks an instance's roles once (a marker); without it, the next look does
        for marker in trap.serve.data_dir.glob(f"orgs/{ORG}/**/{DB}/roles-hardened"):
            marker.unlink()
        results["role repair"] = api.get(f"/v1alpha1/{ORG}/databases").status_code
        results["stop"] = api.post(f"{base}/stop").status_code
        results["start"] = api.post(f"{base}/start").status_code
        ran = sorted(p.name for p in trap.witness.iterdir())
        assert not ran, f"trojans ran as the superuser: {ran}"
        assert not superuser(trap.db), "the tenant's role became a superuser"
        if results["restore"] == 201:
            info = api.get(f"/v1alpha1/{ORG}/databases/userdb/info/{restored}").json()
            assert not superuser(info), "the tenant's role is a superuser in the restored instance"
        assert results == {"backup": 201, "scheduled backup": 201, "restore": 201, "drill": 201,
                           "reset password": 200, "role repair": 200, "stop": 200, "start": 200}, results
    finally:
        with contextlib.suppress(Exception), tenant_conn(trap.db, "postgres") as conn:
            conn.execute("ALTER ROLE tenant_u NOSUPERUSER")


#: database settings the tenant's role may make that would change who the engine's superuser session is
#: (its own role, through ``role``) or what it may do
SETTINGS = {"role": "tenant_u", "default_transaction_read_only": "on", "statement_timeout": "1"}


def test_database_settings_do_not_change_the_engines_session(trap: Trap) -> None:
    """``ALTER DATABASE postgres SET role = <the tenant>`` (and read-only, a 1 ms statement timeout): the engine's
    superuser sessions stay the superuser's, so a backup, a password reset and role repair still work (before:
    they ran as the tenant's role, and role repair could not repair)."""
    api, base = trap.api, f"/v1alpha1/{ORG}/databases/userdb/{DB}"
    try:
        with tenant_conn(trap.db) as conn:
            for k, v in SETTINGS.items():
                conn.execute(sql.SQL("ALTER DATABASE postgres SET {} = {}").format(sql.Identifier(k), sql.Literal(v)))
        assert api.post(f"{base}/backup").status_code == 201
        assert api.post(f"{base}/credentials", json={"Password": PW}).status_code == 200
        markers = list(trap.serve.data_dir.glob(f"orgs/{ORG}/**/{DB}/roles-hardened"))
        assert markers
        for m in markers:
            m.unlink()
        assert api.get(f"/v1alpha1/{ORG}/databases").status_code == 200
        assert all(m.exists() for m in markers), "role repair did not run as the superuser"
        assert not list(trap.witness.iterdir())
    finally:
        with tenant_conn(trap.db, options="-c statement_timeout=0 -c default_transaction_read_only=off") as conn:
            for k in SETTINGS:
                with contextlib.suppress(psycopg.Error):
                    conn.execute(sql.SQL("ALTER DATABASE postgres RESET {}").format(sql.Identifier(k)))
