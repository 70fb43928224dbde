"""``dbos-config.yaml``: the one place that reads, edits and points it at a database.

Three readers once had three sets of checks (a deploy's, an AppDatabase's, serve's upload); now each asks
this module for the view it needs and every problem names the file and the key:

- :func:`read_app`: what a deploy needs (``name``, ``language``, ``runtimeConfig.start``,
  ``database.migrate``/``app_db_name``; a Python app's ``requirements.txt`` lists ``dbos``);
- :func:`read_binding`: what an ``AppDatabase`` takes from it (``app_db_name``, ``migrate``, ``rollback``,
  and which of DBOS's two layouts the file uses);
- :func:`from_archive`: the root config of an uploaded archive (serve);
- :func:`edit`: the text with ``name`` / ``database.app_db_name`` set, comments kept (a preview's copy, a
  deploy to DBOS Cloud under another database name);
- :func:`point_at`: the file pointed at a database (``pulumi-dbos db connect``), comments kept, the
  password never written.

Nothing here imports pulumi or psycopg.
"""

from __future__ import annotations

import io
import re
import shlex
import urllib.parse
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .engine.files import write_atomic
from .errors import DbosError, ValidationError

CONFIG = "dbos-config.yaml"
_APP_NAME = re.compile(r"^[a-z0-9_]{3,16}$")
_DB_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


# ------------------------------------------------------------------------------------------------ parsing
def parse(text: str | bytes, where: str, key: str) -> dict[str, Any]:
    """``text`` as a YAML mapping (an empty file is an empty one); ValidationError on input ``key`` naming
    ``where`` otherwise."""
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    try:
        doc: Any = YAML(typ="safe").load(text)
    except YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" at line {mark.line + 1}" if mark is not None else ""
        raise ValidationError([(key, f"{where}: YAML syntax error{line}")]) from None
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise ValidationError([(key, f"{where}: the top level must be a mapping")])
    return doc


@dataclass
class _Database:
    app_db_name: str | None = None
    migrate: list[str] | None = None
    rollback: list[str] | None = None


def _database(doc: dict[str, Any], where: str, key: str, problems: list[tuple[str, str]]) -> _Database:
    """The ``database:`` section's keys both readers need, each checked the same way."""
    out = _Database()
    db = doc.get("database")
    if db is not None and not isinstance(db, dict):
        problems.append((key, f"{where}: key 'database' must be a mapping"))
        return out
    db = db or {}
    if "app_db_name" in db and db["app_db_name"] is not None:
        v = db["app_db_name"]
        if not isinstance(v, str) or not _DB_NAME.match(v):
            problems.append((key, f"{where}: key 'database.app_db_name' must be a database name ([a-z0-9_], "
                             f"1-63 chars), got {v!r}"))
        else:
            out.app_db_name = v
    for name in ("migrate", "rollback"):
        if name in db:
            v = db[name] if db[name] is not None else []
            if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
                problems.append((key, f"{where}: key 'database.{name}' must be a list of commands"))
            else:
                setattr(out, name, [str(x) for x in v])
    return out


# ------------------------------------------------------------------------------------------------ a deploy's view
@dataclass
class AppConfig:
    """What a deploy needs from dbos-config.yaml (DBOS Transact 3.x's keys)."""

    name: str
    language: str
    start: list[str]
    migrate: list[str] = field(default_factory=list)
    app_db_name: str | None = None


def read_app(root: Path, app_name: str | None = None) -> AppConfig:
    """Read and check app directory ``root``'s dbos-config.yaml; every problem is reported with the file named
    (input ``source``, or ``app_name`` when the config names another app)."""
    path = root / CONFIG
    if not root.is_dir():
        raise ValidationError([("source", f"source {root} is not a directory")])
    if not path.is_file():
        raise ValidationError([("source", f"source {root} has no {CONFIG} (an app directory needs one)")])
    doc = parse(path.read_text(), str(path), "source")
    problems: list[tuple[str, str]] = []
    name = doc.get("name")
    if not isinstance(name, str) or not _APP_NAME.match(name):
        problems.append(("source", f"{path}: `name` must be an app name ([a-z0-9_]{{3,16}}), got {name!r}"))
    elif app_name is not None and name != app_name:
        problems.append(("app_name", f"app_name {app_name!r} differs from `name: {name}` in {path}; "
                         "they must match (DBOS Cloud deploys by the config's name)"))
    language = doc.get("language") or "python"
    runtime = doc.get("runtimeConfig") or {}
    start = runtime.get("start") if isinstance(runtime, dict) else None
    if not isinstance(start, list) or len(start) != 1 or not isinstance(start[0], str) or not shlex.split(start[0]):
        problems.append(("source", f"{path}: `runtimeConfig.start` must be a list of one command, got {start!r}"))
        start = []
    db = _database(doc, str(path), "source", problems)
    if language == "python":
        req = root / "requirements.txt"
        pkgs = [re.split(r"[<>=!~\[; ]", line.strip(), maxsplit=1)[0].lower()
                for line in (req.read_text().splitlines() if req.is_file() else [])
                if line.strip() and not line.strip().startswith("#")]
        if "dbos" not in pkgs:
            problems.append(("source", f"{root}/requirements.txt must list `dbos` (DBOS Cloud refuses a Python "
                             "app without it)"))
    if problems:
        raise ValidationError(problems)
    return AppConfig(name=str(name), language=str(language), start=list(start), migrate=list(db.migrate or []),
                     app_db_name=db.app_db_name)


# ------------------------------------------------------------------------------------------------ an AppDatabase's
@dataclass
class DbosConfig:
    path: Path
    app_db_name: str | None = None
    migrate: list[str] | None = None
    rollback: list[str] | None = None
    layout: str = "database"  # "database" (older) or "database_url" (newer)


def read_binding(path: str | Path) -> DbosConfig:
    """app_db_name/migrate/rollback for an AppDatabase (input ``dbos_config``); a malformed file raises
    ValidationError naming the file and key."""
    p = Path(path)
    where = str(p)
    if not p.is_file():
        raise ValidationError([("dbos_config", f"{where}: file not found")])
    doc = parse(p.read_text(), where, "dbos_config")
    cfg = DbosConfig(path=p)
    problems: list[tuple[str, str]] = []
    if "database_url" in doc:
        cfg.layout = "database_url"
        url = doc.get("database_url")
        if url is not None and not isinstance(url, str):
            problems.append(("dbos_config", f"{where}: key 'database_url' must be a string"))
        elif isinstance(url, str) and "${" not in url:
            name = urllib.parse.unquote(urllib.parse.urlsplit(url).path.lstrip("/"))
            cfg.app_db_name = name or None
    db = _database(doc, where, "dbos_config", problems)
    if problems:
        raise ValidationError(problems)
    cfg.app_db_name = db.app_db_name or cfg.app_db_name
    cfg.migrate, cfg.rollback = db.migrate, db.rollback
    return cfg


# ------------------------------------------------------------------------------------------------ serve's upload
def from_archive(archive: bytes) -> dict[str, Any]:
    """An uploaded archive's root dbos-config.yaml as a mapping; ValidationError (input ``source``) when the
    archive is no zip or holds no such mapping."""
    try:
        with zipfile.ZipFile(io.BytesIO(archive)) as zf:
            text = zf.read(CONFIG)
    except KeyError:
        raise ValidationError([("source", f"the application archive has no {CONFIG} at its root")]) from None
    except (zipfile.BadZipFile, OSError, ValueError):
        raise ValidationError([("source", "application_archive is not a zip archive")]) from None
    return parse(text, f"the archive's {CONFIG}", "source")


# ------------------------------------------------------------------------------------------------ editing
def _round_trip() -> Any:
    from ruamel.yaml import YAML

    y = YAML()  # round-trip: comments and key order kept
    y.preserve_quotes = True
    return y


def edit(text: str, *, name: str | None = None, app_db_name: str | None = None) -> str | None:
    """A dbos-config.yaml's ``text`` with ``name`` and ``database.app_db_name`` set (comments and the other keys
    kept); None when it says them already, or is no YAML mapping (then whoever reads it says so)."""
    from ruamel.yaml.error import YAMLError

    yaml = _round_trip()
    try:
        doc: Any = yaml.load(text) or {}
    except YAMLError:
        return None
    if not isinstance(doc, dict):
        return None
    db = doc.get("database")
    if (name is None or doc.get("name") == name) and (
            app_db_name is None or (isinstance(db, dict) and db.get("app_db_name") == app_db_name)):
        return None
    if name is not None:
        doc["name"] = name
    if app_db_name is not None:
        if not isinstance(db, dict):
            doc["database"] = db = {}
        db["app_db_name"] = app_db_name
    out = io.StringIO()
    yaml.dump(doc, out)
    return out.getvalue()


def point_at(path: str | Path, hostname: str, port: int, username: str, dbname: str, *,
             password: str | None = None, url_safe: bool | None = None) -> bool:
    """Point a dbos-config.yaml at a database, keeping its other keys and comments.

    The password itself is never written. Two layouts:

    - DBOS Transact 3.x (a top-level ``system_database_url``, or no ``database:`` section with
      connection keys): sets ``system_database_url`` (database ``<dbname>_dbos_sys``); 3.x rejects a
      top-level ``database_url``, so one is only updated when the file already has it (2.x). DBOS substitutes
      environment variables into the file's text before it parses the URL, so ``${PGPASSWORD}`` goes into the
      URLs only when the password needs no percent-escaping there (``url_safe``; else decided from
      ``password``; neither given: assumed safe). Otherwise the URLs carry no password and libpq (DBOS
      connects through psycopg) reads ``PGPASSWORD`` from the environment.
    - older (``database.hostname``/``port``/...): ``database.password: "${PGPASSWORD}"``, quoted so that
      any allowed password (none has ``"`` or ``\\``) is still one YAML string once expanded.

    Returns True when the file refers to ``${PGPASSWORD}``, False when its URLs carry no password.
    """
    from ruamel.yaml.comments import CommentedMap
    from ruamel.yaml.error import YAMLError
    from ruamel.yaml.scalarstring import DoubleQuotedScalarString

    p = Path(path)
    y = _round_trip()
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
