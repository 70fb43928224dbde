"""PostgreSQL connection URLs as the engines hand them out (outputs, ``db connect``, an app's
``DBOS_DATABASE_URL``): ``postgresql://user[:password]@host:port/dbname``, each part percent-encoded.

Built here rather than with psycopg's ``make_conninfo``, which gives ``key=value`` strings, not the URLs
DBOS Transact and SQLAlchemy take.
"""

from __future__ import annotations

import urllib.parse


def url_for(username: str, password: str | None, host: str, port: int, dbname: str = "postgres") -> str:
    user = urllib.parse.quote(username, safe="")
    auth = f"{user}:{urllib.parse.quote(password, safe='')}" if password else user
    return f"postgresql://{auth}@{host}:{port}/{urllib.parse.quote(dbname, safe='')}"
