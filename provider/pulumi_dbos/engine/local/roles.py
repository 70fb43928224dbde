"""The user's role on a local instance: created like RDS's master user, passwords as SCRAM verifiers.

Passwords never appear in argv or SQL text: the verifier is computed client-side
(``PGconn.encrypt_password``) and sent instead.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ...errors import EngineError

if TYPE_CHECKING:  # psycopg loads on first use: a preview's checks never connect
    import psycopg


def verifier(conn: psycopg.Connection[Any], username: str, password: str) -> str:
    return conn.pgconn.encrypt_password(password.encode(), username.encode(), b"scram-sha-256").decode()


def create_user(conn: psycopg.Connection[Any], username: str, password: str) -> None:
    """LOGIN, CREATEDB, CREATEROLE, owner of database ``postgres``; not a superuser."""
    from psycopg import sql
    conn.execute(sql.SQL("CREATE ROLE {} WITH LOGIN CREATEDB CREATEROLE PASSWORD {}").format(
        sql.Identifier(username), sql.Literal(verifier(conn, username, password))))
    conn.execute(sql.SQL("GRANT pg_monitor, pg_signal_backend TO {}").format(sql.Identifier(username)))
    conn.execute(sql.SQL("ALTER DATABASE postgres OWNER TO {}").format(sql.Identifier(username)))


def set_password(conn: psycopg.Connection[Any], username: str, password: str) -> None:
    from psycopg import sql
    if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (username,)).fetchone() is None:
        raise EngineError(f"role {username!r} does not exist on the instance",
                          hint="the username of an instance cannot change in place: replace the instance")
    conn.execute(sql.SQL("ALTER ROLE {} WITH LOGIN PASSWORD {}").format(
        sql.Identifier(username), sql.Literal(verifier(conn, username, password))))


def end_sessions(conn: psycopg.Connection[Any], username: str) -> None:
    from psycopg import sql
    conn.execute(sql.SQL("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = {} "
                         "AND pid <> pg_backend_pid()").format(sql.Literal(username))).fetchall()


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
