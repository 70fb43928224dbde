"""The control-plane catalog: a small SQLite database in the engine's data dir, with typed records.

Thread-safe (a connection per call, a process-wide lock for writes) and process-safe (an
``fcntl`` lock file around read-modify-write sequences such as port allocation), because one
provider process serves up to 4 calls at once and several processes (CLI, tests, providers)
may share a data dir.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..contract import Kind

_SCHEMA = """
CREATE TABLE IF NOT EXISTS instances (
    name TEXT PRIMARY KEY,
    kind TEXT NOT NULL,              -- local | restored | linked (contract.Kind)
    status TEXT NOT NULL,            -- creating | restoring | available (lifecycle; running is read live)
    hostname TEXT NOT NULL,
    port INTEGER NOT NULL,
    username TEXT NOT NULL,
    retention_hours INTEGER NOT NULL DEFAULT 24,
    created_at TEXT,
    earliest TEXT,
    source TEXT,
    restored_to TEXT,
    pg_version TEXT,
    owner TEXT,                      -- the managing stack and resource (see resources/_base.owner)
    stanza TEXT,                     -- its incarnation in the backup repository (repo.py)
    repo_backup_at TEXT              -- when its newest repository backup finished (NULL: none yet)
);
CREATE TABLE IF NOT EXISTS backups (
    instance TEXT NOT NULL,
    backup_id TEXT NOT NULL,
    started_at TEXT NOT NULL,
    finished_at TEXT NOT NULL,
    path TEXT NOT NULL,
    start_wal TEXT NOT NULL,
    PRIMARY KEY (instance, backup_id)
);
CREATE TABLE IF NOT EXISTS apps (
    name TEXT PRIMARY KEY,
    instance TEXT NOT NULL,
    app_db_name TEXT NOT NULL,
    version TEXT,                    -- the version serving (NULL until the first deploy succeeds)
    port INTEGER NOT NULL,           -- the app's stable port (its proxy)
    backend_port INTEGER,            -- the serving process's own port
    backend_pid INTEGER,
    proxy_pid INTEGER,
    status TEXT NOT NULL,
    owner TEXT,
    created_at TEXT
);
CREATE TABLE IF NOT EXISTS drills (
    instance TEXT NOT NULL,
    at TEXT NOT NULL,
    result TEXT NOT NULL             -- contract.DrillResult as JSON
);
CREATE TABLE IF NOT EXISTS drill_checks (
    instance TEXT PRIMARY KEY,
    sql TEXT NOT NULL,               -- the user's check, run on every drill of the instance
    dbname TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS lost (
    name TEXT PRIMARY KEY,           -- an instance the repository holds (never destroyed) and this catalog did not
    record TEXT NOT NULL             -- its InstanceRecord as JSON, rebuilt from the repository's annotations
);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS app_versions (
    app TEXT NOT NULL,
    version TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (app, version)
);
"""

_thread_lock = threading.RLock()


@dataclass
class InstanceRecord:
    name: str
    kind: Kind
    status: str
    hostname: str
    port: int
    username: str
    retention_hours: int = 24
    created_at: str | None = None
    earliest: str | None = None
    source: str | None = None
    restored_to: str | None = None
    pg_version: str | None = None
    owner: str | None = None
    stanza: str | None = None
    repo_backup_at: str | None = None

    @property
    def linked(self) -> bool:
        return self.kind is Kind.LINKED

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> InstanceRecord:
        d = dict(row)
        d["kind"] = Kind(d["kind"])
        return cls(**d)

    def to_row(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["kind"] = self.kind.value
        return d


@dataclass(frozen=True)
class BackupRecord:
    instance: str
    backup_id: str
    started_at: str
    finished_at: str
    path: str
    start_wal: str


_COLUMNS = frozenset(f.name for f in dataclasses.fields(InstanceRecord))


class Catalog:
    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / "catalog.db"
        self.lock_path = data_dir / "catalog.lock"
        with self._connect() as db:
            db.executescript(_SCHEMA)
            have = {r[1] for r in db.execute("PRAGMA table_info(instances)")}
            for column in ("stanza", "repo_backup_at"):  # catalogs made before the backup repository
                if column not in have:
                    db.execute(f"ALTER TABLE instances ADD COLUMN {column} TEXT")

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=60, isolation_level=None)
        db.row_factory = sqlite3.Row
        try:
            db.execute("PRAGMA busy_timeout=60000")
            yield db
        finally:
            db.close()

    @contextlib.contextmanager
    def locked(self) -> Iterator[sqlite3.Connection]:
        """Exclusive section across threads and processes; yields a connection in a transaction."""
        with _thread_lock, open(self.lock_path, "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                with self._connect() as db:
                    db.execute("BEGIN IMMEDIATE")
                    try:
                        yield db
                        db.execute("COMMIT")
                    except BaseException:
                        db.execute("ROLLBACK")
                        raise
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def get(self, name: str) -> InstanceRecord | None:
        with self._connect() as db:
            row = db.execute("SELECT * FROM instances WHERE name = ?", (name,)).fetchone()
            return InstanceRecord.from_row(row) if row else None

    def all(self) -> list[InstanceRecord]:
        with self._connect() as db:
            return [InstanceRecord.from_row(r) for r in db.execute("SELECT * FROM instances ORDER BY name")]

    @staticmethod
    def used_ports(db: sqlite3.Connection) -> set[int]:
        return ({r[0] for r in db.execute("SELECT port FROM instances WHERE kind != ?", (Kind.LINKED.value,))}
                | {r[0] for r in db.execute("SELECT port FROM apps")})

    @staticmethod
    def exists(db: sqlite3.Connection, name: str) -> bool:
        return db.execute("SELECT 1 FROM instances WHERE name = ?", (name,)).fetchone() is not None

    @staticmethod
    def insert(db: sqlite3.Connection, rec: InstanceRecord) -> None:
        row = rec.to_row()
        cols = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        db.execute(f"INSERT INTO instances ({cols}) VALUES ({marks})", tuple(row.values()))  # noqa: S608

    def update(self, name: str, *, db: sqlite3.Connection | None = None, **fields: Any) -> None:
        unknown = set(fields) - _COLUMNS
        if unknown:
            raise KeyError(f"not catalog columns: {sorted(unknown)}")
        sets = ", ".join(f"{k} = ?" for k in fields)  # column names checked above
        values = (*(v.value if isinstance(v, Kind) else v for v in fields.values()), name)
        if db is not None:
            db.execute(f"UPDATE instances SET {sets} WHERE name = ?", values)  # noqa: S608
            return
        with _thread_lock, self._connect() as conn:
            conn.execute(f"UPDATE instances SET {sets} WHERE name = ?", values)  # noqa: S608

    def delete(self, name: str) -> None:
        with _thread_lock, self._connect() as db:
            db.execute("DELETE FROM backups WHERE instance = ?", (name,))
            db.execute("DELETE FROM drills WHERE instance = ?", (name,))
            db.execute("DELETE FROM drill_checks WHERE instance = ?", (name,))
            db.execute("DELETE FROM instances WHERE name = ?", (name,))

    # ---------------------------------------------------------------- lost instances (``durability``)
    def meta(self, key: str) -> str | None:
        with self._connect() as db:
            row = db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
            return str(row[0]) if row else None

    def set_meta(self, key: str, value: str) -> None:
        with _thread_lock, self._connect() as db:
            db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def add_lost(self, rec: InstanceRecord) -> None:
        row = rec.to_row()
        with _thread_lock, self._connect() as db:
            db.execute("INSERT OR REPLACE INTO lost VALUES (?, ?)", (rec.name, json.dumps(row)))

    def lost(self, name: str | None = None) -> list[InstanceRecord]:
        with self._connect() as db:
            rows = db.execute("SELECT record FROM lost WHERE name = ?", (name,)) if name else \
                db.execute("SELECT record FROM lost ORDER BY name")
            out = []
            for (text,) in rows:
                d = json.loads(text)
                d["kind"] = Kind(d["kind"])
                out.append(InstanceRecord(**{k: v for k, v in d.items() if k in _COLUMNS}))
            return out

    def forget_lost(self, name: str) -> None:
        with _thread_lock, self._connect() as db:
            db.execute("DELETE FROM lost WHERE name = ?", (name,))

    def add_backup(self, b: BackupRecord) -> None:
        with _thread_lock, self._connect() as db:
            db.execute("INSERT OR REPLACE INTO backups VALUES (?, ?, ?, ?, ?, ?)",
                       (b.instance, b.backup_id, b.started_at, b.finished_at, b.path, b.start_wal))

    def backups(self, instance: str) -> list[BackupRecord]:
        with self._connect() as db:
            return [BackupRecord(**dict(r)) for r in db.execute(
                "SELECT * FROM backups WHERE instance = ? ORDER BY finished_at", (instance,))]

    def delete_backup(self, instance: str, backup_id: str) -> None:
        with _thread_lock, self._connect() as db:
            db.execute("DELETE FROM backups WHERE instance = ? AND backup_id = ?", (instance, backup_id))


@dataclass
class AppRecord:
    name: str
    instance: str
    app_db_name: str
    port: int
    status: str
    version: str | None = None
    backend_port: int | None = None
    backend_pid: int | None = None
    proxy_pid: int | None = None
    owner: str | None = None
    created_at: str | None = None


_APP_COLUMNS = frozenset(f.name for f in dataclasses.fields(AppRecord))


class AppCatalog:
    """The apps' rows, in the same SQLite file and under the same locks as the instances'."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog

    def get(self, name: str) -> AppRecord | None:
        with self.catalog._connect() as db:
            row = db.execute("SELECT * FROM apps WHERE name = ?", (name,)).fetchone()
            return AppRecord(**dict(row)) if row else None

    def all(self) -> list[AppRecord]:
        with self.catalog._connect() as db:
            return [AppRecord(**dict(r)) for r in db.execute("SELECT * FROM apps ORDER BY name")]

    @staticmethod
    def insert(db: sqlite3.Connection, rec: AppRecord) -> None:
        row = dataclasses.asdict(rec)
        db.execute(f"INSERT INTO apps ({', '.join(row)}) VALUES ({', '.join('?' for _ in row)})",  # noqa: S608
                   tuple(row.values()))

    def update(self, name: str, **fields: Any) -> None:
        unknown = set(fields) - _APP_COLUMNS
        if unknown:
            raise KeyError(f"not app columns: {sorted(unknown)}")
        sets = ", ".join(f"{k} = ?" for k in fields)  # column names checked above
        with _thread_lock, self.catalog._connect() as db:
            db.execute(f"UPDATE apps SET {sets} WHERE name = ?", (*fields.values(), name))  # noqa: S608

    def delete(self, name: str) -> None:
        with _thread_lock, self.catalog._connect() as db:
            db.execute("DELETE FROM app_versions WHERE app = ?", (name,))
            db.execute("DELETE FROM apps WHERE name = ?", (name,))

    def add_version(self, app: str, version: str, created_at: str) -> None:
        with _thread_lock, self.catalog._connect() as db:
            db.execute("INSERT OR IGNORE INTO app_versions VALUES (?, ?, ?)", (app, version, created_at))

    def delete_version(self, app: str, version: str) -> None:
        with _thread_lock, self.catalog._connect() as db:
            db.execute("DELETE FROM app_versions WHERE app = ? AND version = ?", (app, version))

    def versions(self, app: str) -> list[tuple[str, str]]:
        with self.catalog._connect() as db:
            return [(r[0], r[1]) for r in db.execute(
                "SELECT version, created_at FROM app_versions WHERE app = ? ORDER BY created_at, version", (app,))]


class DrillCatalog:
    """Restore drills' results (the newest ``keep`` per instance) and the instances' check SQL, in the same
    SQLite file and under the same locks as the instances' rows."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog

    def add(self, instance: str, at: str, result: str, keep: int) -> None:
        with _thread_lock, self.catalog._connect() as db:
            db.execute("INSERT INTO drills VALUES (?, ?, ?)", (instance, at, result))
            db.execute("DELETE FROM drills WHERE instance = ? AND rowid NOT IN (SELECT rowid FROM drills "
                       "WHERE instance = ? ORDER BY at DESC, rowid DESC LIMIT ?)", (instance, instance, keep))

    def results(self, instance: str, limit: int = -1) -> list[str]:
        """Newest first (``limit``: at most that many; -1: all)."""
        with self.catalog._connect() as db:
            return [r[0] for r in db.execute(
                "SELECT result FROM drills WHERE instance = ? ORDER BY at DESC, rowid DESC LIMIT ?", (instance, limit))]

    def last_at(self, instance: str) -> str | None:
        with self.catalog._connect() as db:
            row = db.execute("SELECT max(at) FROM drills WHERE instance = ?", (instance,)).fetchone()
            return row[0] if row else None

    def set_check(self, instance: str, sql: str, dbname: str) -> None:
        with _thread_lock, self.catalog._connect() as db:
            db.execute("INSERT OR REPLACE INTO drill_checks VALUES (?, ?, ?)", (instance, sql, dbname))

    def delete_check(self, instance: str) -> None:
        with _thread_lock, self.catalog._connect() as db:
            db.execute("DELETE FROM drill_checks WHERE instance = ?", (instance,))

    def check(self, instance: str) -> tuple[str, str] | None:
        """(sql, database) of the instance's own check, if it has one."""
        with self.catalog._connect() as db:
            row = db.execute("SELECT sql, dbname FROM drill_checks WHERE instance = ?", (instance,)).fetchone()
            return (row[0], row[1]) if row else None
