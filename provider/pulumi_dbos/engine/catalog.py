"""The control-plane catalog: a small SQLite database in the engine's data dir.

Thread-safe (a connection per call, a process-wide lock for writes) and
process-safe (an ``fcntl`` lock file around read-modify-write sequences such as
port allocation), because one provider process serves up to 4 calls at once and
several processes (CLI, tests, providers) may share a data dir.
"""

from __future__ import annotations

import contextlib
import fcntl
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

_SCHEMA = """
CREATE TABLE IF NOT EXISTS instances (
    name TEXT PRIMARY KEY,
    kind TEXT NOT NULL,              -- local | restored | linked
    status TEXT NOT NULL,
    hostname TEXT NOT NULL,
    port INTEGER NOT NULL,
    username TEXT NOT NULL,
    retention_hours INTEGER NOT NULL DEFAULT 24,
    created_at TEXT,
    earliest TEXT,
    source TEXT,
    restored_to TEXT,
    pg_version TEXT,
    owner TEXT                       -- who manages it (e.g. project/stack/resource), informative
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
"""

_thread_lock = threading.RLock()


class Catalog:
    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / "catalog.db"
        self.lock_path = data_dir / "catalog.lock"
        with self._connect() as db:
            db.executescript(_SCHEMA)
            cols = {r[1] for r in db.execute("PRAGMA table_info(instances)")}
            if "owner" not in cols:
                db.execute("ALTER TABLE instances ADD COLUMN owner TEXT")

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

    def get(self, name: str) -> dict[str, Any] | None:
        with self._connect() as db:
            row = db.execute("SELECT * FROM instances WHERE name = ?", (name,)).fetchone()
            return dict(row) if row else None

    def all(self) -> list[dict[str, Any]]:
        with self._connect() as db:
            return [dict(r) for r in db.execute("SELECT * FROM instances ORDER BY name")]

    def used_ports(self, db: sqlite3.Connection) -> set[int]:
        return {r[0] for r in db.execute("SELECT port FROM instances WHERE kind != 'linked'")}

    def insert(self, db: sqlite3.Connection, row: dict[str, Any]) -> None:
        cols = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        db.execute(f"INSERT INTO instances ({cols}) VALUES ({marks})", tuple(row.values()))  # noqa: S608

    def update(self, name: str, **fields: Any) -> None:
        sets = ", ".join(f"{k} = ?" for k in fields)
        with _thread_lock, self._connect() as db:
            db.execute(f"UPDATE instances SET {sets} WHERE name = ?", (*fields.values(), name))  # noqa: S608

    def delete(self, name: str) -> None:
        with _thread_lock, self._connect() as db:
            db.execute("DELETE FROM backups WHERE instance = ?", (name,))
            db.execute("DELETE FROM instances WHERE name = ?", (name,))

    def add_backup(self, instance: str, backup_id: str, started_at: str, finished_at: str, path: str,
                   start_wal: str) -> None:
        with _thread_lock, self._connect() as db:
            db.execute("INSERT OR REPLACE INTO backups VALUES (?, ?, ?, ?, ?, ?)",
                       (instance, backup_id, started_at, finished_at, path, start_wal))

    def backups(self, instance: str) -> list[dict[str, Any]]:
        with self._connect() as db:
            return [dict(r) for r in db.execute(
                "SELECT * FROM backups WHERE instance = ? ORDER BY finished_at", (instance,))]

    def delete_backup(self, instance: str, backup_id: str) -> None:
        with _thread_lock, self._connect() as db:
            db.execute("DELETE FROM backups WHERE instance = ? AND backup_id = ?", (instance, backup_id))
