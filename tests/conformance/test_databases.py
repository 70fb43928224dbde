"""`dbos-cloud db ...` against serve: each command's exit code and output, and its real effect on the instance
(checked through psycopg at the ``HostName``/``Port`` that ``db status --json`` reports)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg
import pytest

from pulumi_dbos.engine import LocalEngine
from tests.conformance.conftest import (
    ORG,
    POLLING,
    URL_RE,
    Conn,
    DbosCloud,
    Names,
    authenticates,
    connect,
)

PW = "Conf-pw-1"
PW2 = "Conf-pw-2"
#: DBOS Cloud's UserDBInstance fields (serve adds extensions, some of which move with time)
FIELDS = ("PostgresInstanceName", "Status", "HostName", "Port", "DatabaseUsername", "IsLinked", "SupabaseReference")
#: the tests that start from an instance of their own, provisioned (user conf_user, password PW) for them
ROLES = ("prov", "reset", "src", "ext", "gone")


@pytest.fixture(scope="module")
def provisioned(dbos_cloud: DbosCloud) -> Iterator[dict[str, dict[str, Any]]]:
    """``db provision NAME -U conf_user -W PW`` for each of ``ROLES``, all at once (each CLI call waits 5 s
    before its first status check), each checked (exit 0, ``Database successfully provisioned``); role ->
    ``db status NAME --json``. Removed at the end of the module."""
    names = Names(dbos_cloud)
    try:
        infos = dbos_cloud.provision_all([names(role) for role in ROLES], "conf_user", PW)
        yield dict(zip(ROLES, infos, strict=True))
    finally:
        names.cleanup()


def core(info: dict[str, object]) -> dict[str, object]:
    return {k: info[k] for k in FIELDS}


def assert_instance(info: dict[str, object], name: str, user: str) -> None:
    """A provisioned (not linked) instance as DBOS Cloud describes it."""
    assert info["PostgresInstanceName"] == name
    assert info["Status"] == "available"
    assert info["DatabaseUsername"] == user
    assert info["IsLinked"] is False
    assert "SupabaseReference" in info and info["SupabaseReference"] is None  # explicit null (§4 E3)
    assert isinstance(info["HostName"], str) and isinstance(info["Port"], int)


def test_provision_list_status_url(dbos_cloud: DbosCloud, provisioned: dict[str, dict[str, Any]]) -> None:
    info = provisioned["prov"]  # `db provision` exited 0 with `Database successfully provisioned`
    x = info["PostgresInstanceName"]
    assert_instance(info, x, "conf_user")
    with connect(info, "conf_user", PW) as conn:
        row = conn.execute("SELECT current_user").fetchone()
        assert row is not None and row[0] == "conf_user"

    listed = dbos_cloud.json("db", "list")
    assert isinstance(listed, list)
    mine = [d for d in listed if d["PostgresInstanceName"] == x]
    assert len(mine) == 1 and core(mine[0]) == core(info)

    text = dbos_cloud.ok("db", "list")
    assert f"Postgres Instance Name: {x}" in text
    assert "Database Username: conf_user" in text and f"Port: {info['Port']}" in text

    text = dbos_cloud.ok("db", "status", x)
    assert f"Postgres Instance Name: {x}" in text and "Status: available" in text

    # db url: the password is masked unless -S; with -S -W the URL connects as printed
    masked = URL_RE.findall(dbos_cloud.ok("db", "url", x, "-W", PW))
    assert masked == [f"postgresql://conf_user:***@{info['HostName']}:{info['Port']}/postgres"]
    urls = URL_RE.findall(dbos_cloud.ok("db", "url", x, "-S", "-W", PW))
    assert urls == [f"postgresql://conf_user:{PW}@{info['HostName']}:{info['Port']}/postgres"]
    with psycopg.connect(urls[0], connect_timeout=5) as conn:
        row = conn.execute("SELECT current_user, current_database()").fetchone()
        assert row == ("conf_user", "postgres")
    # db connect: the same command under its 2.x alias
    assert URL_RE.findall(dbos_cloud.ok("db", "connect", x, "-S", "-W", PW)) == urls


def test_reset_password(dbos_cloud: DbosCloud, provisioned: dict[str, dict[str, Any]]) -> None:
    info = provisioned["reset"]
    x = info["PostgresInstanceName"]
    assert authenticates(info, "conf_user", PW)

    out = dbos_cloud.ok("db", "reset-password", x, "-W", PW2)
    assert f"Successfully reset user password for database: {x}" in out
    assert authenticates(info, "conf_user", PW2)
    assert not authenticates(info, "conf_user", PW)
    assert core(dbos_cloud.status(x)) == core(info)  # same instance, same address

    # the CLI's own rule (§3), checked before any request that changes something
    dbos_cloud.fails("db", "reset-password", x, "-W", "short", expect="Invalid database password")
    assert authenticates(info, "conf_user", PW2)


def test_reset_password_of_a_missing_instance_provisions_it(dbos_cloud: DbosCloud, names: Names) -> None:
    # The official CLI's behaviour, not serve's choice (§6.3 chooseAppDBServer): a name missing from
    # `GET databases` is provisioned first (user dbos_user, a random password), the provision is polled
    # until available, and only then is the password reset. So a typo creates an instance, exit 0, and
    # the new instance's dbos_user has the password given with -W.
    ghost = names("ghost")
    out = dbos_cloud.ok("db", "reset-password", ghost, "-W", PW2, timeout=POLLING)
    assert f"Database instance {ghost} not found, provisioning a new one" in out
    assert "Database successfully provisioned" in out
    assert f"Successfully reset user password for database: {ghost}" in out

    info = dbos_cloud.status(ghost)
    assert_instance(info, ghost, "dbos_user")
    assert authenticates(info, "dbos_user", PW2)


def rfc3339_seconds(dt: datetime) -> str:
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")  # the CLI's help example format


def sleep_until(t: datetime, conn: Conn) -> None:
    while (now := server_now(conn)) < t:
        time.sleep(max(0.05, (t - now).total_seconds()))


def server_now(conn: Conn) -> datetime:
    row = conn.execute("SELECT clock_timestamp()").fetchone()
    assert row is not None and isinstance(row[0], datetime)
    return row[0]


def test_restore_to_a_point_in_time(dbos_cloud: DbosCloud, provisioned: dict[str, dict[str, Any]],
                                    names: Names) -> None:
    info, y = provisioned["src"], names("rest")
    x = info["PostgresInstanceName"]
    with connect(info, "conf_user", PW) as conn:
        conn.execute("CREATE TABLE t (x int)")
        conn.execute("INSERT INTO t VALUES (1)")
        # T: the server's next whole second (RFC3339 like the CLI's help), strictly between the inserts
        t = server_now(conn).replace(microsecond=0) + timedelta(seconds=1)
        sleep_until(t + timedelta(milliseconds=100), conn)
        conn.execute("INSERT INTO t VALUES (2)")
    # a reset after T: the restore's user still gets the source's *current* password
    dbos_cloud.ok("db", "reset-password", x, "-W", PW2)
    with connect(info, "conf_user", PW2) as conn:
        sleep_until(t + timedelta(seconds=1), conn)

    out = dbos_cloud.ok("db", "restore", x, "-t", rfc3339_seconds(t), "-n", y, timeout=POLLING)
    assert f"Successfully started restoring database: {x}" in out
    assert "Database successfully restored" in out

    rinfo = dbos_cloud.status(y)
    assert_instance(rinfo, y, "conf_user")
    assert rinfo["Port"] != info["Port"]
    with connect(rinfo, "conf_user", PW2) as conn:
        assert [r[0] for r in conn.execute("SELECT x FROM t ORDER BY x")] == [1]
    assert not authenticates(rinfo, "conf_user", PW)
    # the source is untouched
    with connect(info, "conf_user", PW2) as conn:
        assert [r[0] for r in conn.execute("SELECT x FROM t ORDER BY x")] == [1, 2]


def test_link_and_unlink(dbos_cloud: DbosCloud, provisioned: dict[str, dict[str, Any]], names: Names) -> None:
    # The "external" server is an instance provisioned through the CLI, with the dbosadmin user that
    # DBOS Cloud's `db link` logs in as.
    einfo, linked = provisioned["ext"], names("lnk")
    ext = einfo["PostgresInstanceName"]
    admin_pw = "Conf-admin-1"
    # the role as the server's superuser makes it (the instance's own user has no CREATEROLE on PostgreSQL < 16)
    with LocalEngine(dbos_cloud.serve.data_dir / "orgs" / ORG).server.admin(ext, einfo["Port"]) as su:
        su.execute(f"CREATE ROLE dbosadmin LOGIN CREATEDB PASSWORD '{admin_pw}'")
    with connect(einfo, "conf_user", PW) as conn:
        conn.execute("CREATE TABLE keep (x int)")
        conn.execute("INSERT INTO keep VALUES (42)")
        conn.execute("GRANT SELECT ON keep TO dbosadmin")

    out = dbos_cloud.ok("db", "link", linked, "-H", "127.0.0.1", "-p", str(einfo["Port"]), "-W", admin_pw)
    assert "Database successfully linked" in out

    info = dbos_cloud.status(linked)
    assert info["PostgresInstanceName"] == linked
    assert info["IsLinked"] is True
    assert info["SupabaseReference"] is None and "SupabaseReference" in info
    assert (info["HostName"], info["Port"]) == ("127.0.0.1", einfo["Port"])
    assert info["DatabaseUsername"] == "dbosadmin"
    assert info["Status"] == "available"
    assert linked in {d["PostgresInstanceName"] for d in dbos_cloud.json("db", "list")}
    assert authenticates(info, "dbosadmin", admin_pw)

    # the CLI refuses to reset a linked database's password itself (no request sent)
    dbos_cloud.fails("db", "reset-password", linked, "-W", PW2,
                     expect="You cannot reset the password of a linked database")
    urls = URL_RE.findall(dbos_cloud.ok("db", "url", linked, "-S", "-W", admin_pw))
    assert urls == [f"postgresql://dbosadmin:{admin_pw}@127.0.0.1:{einfo['Port']}/postgres"]
    with psycopg.connect(urls[0], connect_timeout=5) as conn:
        assert conn.execute("SELECT x FROM keep").fetchall() == [(42,)]

    out = dbos_cloud.ok("db", "unlink", linked)
    assert f"Database unlinked: {linked}" in out
    dbos_cloud.fails("db", "status", linked, expect=f"database {linked} not found")
    assert linked not in {d["PostgresInstanceName"] for d in dbos_cloud.json("db", "list")}

    # the external server is untouched: running, same users and data
    assert core(dbos_cloud.status(ext)) == core(einfo)
    assert authenticates(einfo, "dbosadmin", admin_pw)
    with connect(einfo, "conf_user", PW) as conn:
        assert conn.execute("SELECT x FROM keep").fetchall() == [(42,)]


def test_destroy(dbos_cloud: DbosCloud, provisioned: dict[str, dict[str, Any]]) -> None:
    info = provisioned["gone"]
    x = info["PostgresInstanceName"]
    assert authenticates(info, "conf_user", PW)

    out = dbos_cloud.ok("db", "destroy", x)
    assert f"Database deleted: {x}" in out
    dbos_cloud.fails("db", "status", x, expect=f"database {x} not found")
    assert x not in {d["PostgresInstanceName"] for d in dbos_cloud.json("db", "list")}
    with pytest.raises(psycopg.OperationalError):
        connect(info, "conf_user", PW).close()


def test_errors(dbos_cloud: DbosCloud) -> None:
    # the server's error body is recognised: `[requestID] <label>: <message>.`
    out = dbos_cloud.fails("db", "status", "nosuch", expect="database nosuch not found")
    assert "Failed to retrieve database record nosuch" in out
    dbos_cloud.fails("db", "destroy", "nosuch", expect="database nosuch not found")
    dbos_cloud.fails("db", "unlink", "nosuch", expect="not found")
    dbos_cloud.fails("app", "delete", "nosuch", expect="application nosuch not found")
    # nothing was created by the failures
    assert "nosuch" not in {d["PostgresInstanceName"] for d in dbos_cloud.json("db", "list")}
