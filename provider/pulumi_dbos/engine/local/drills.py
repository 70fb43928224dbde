"""Restore drills: a backup nobody has restored is a hope.

A drill of instance NAME restores its newest restorable point into a *scratch* instance through the one
restore there is (``LocalEngine.restore_to_new`` with ``latest``: the source archives its current WAL,
the newest base backup is copied and the archive replayed to that moment), then checks it, then removes
it, and keeps the result (the newest ``PULUMI_DBOS_DRILLS_KEPT``, default 20, per instance, in the catalog).

What is checked, and how the source's counts "as of that moment" are known:

- the scratch instance answers a login as the instance's user (the restore's own password): the time from
  asking for the restore until then is the **RTO**;
- every user table (every ``relkind = 'r'`` permanent table outside the system schemas, in every database
  that takes connections) is counted on the source before the restore and on the scratch instance after it.
  The counts are **compared** only when the source provably did not change in between: its transaction
  snapshot is read before the counts and after the restore, and the comparison holds only if no transaction
  but the restore's own two (``pitr.ARCHIVE_NOW_XIDS``, the commit records stamped at the restore point)
  was given a transaction id in between, and none in progress before had ended. Every row change needs a
  transaction id, so the counts taken in that interval are the source's state at the restore point. When
  the source was written meanwhile, the counts are not compared (``counts_compared`` False, the reason
  says so): the restored tables are still all read, so a page the restore could not replay fails the drill.
  Unlogged tables are not counted (PostgreSQL restores them empty, by design);
- the instance's check SQL, if it has one (``pulumi-dbos db drill NAME --sql FILE`` keeps it): run on the
  scratch instance as the instance's user in its database (default ``postgres``); it must succeed, and if
  its last statement returns rows, the first column of the first row must be true.

**RPO**: how old the newest point the backups held was when the drill started: the age of the newest
archived WAL segment or base backup, whichever is newer (an upper bound: on an instance nobody wrote
since, nothing would be lost).

The source is only read (and asked to archive its current WAL, as any restore does); the scratch
instance's archive holds hard links to the source's files, which a removal only unlinks. Scratch instances
are owned by :data:`DRILL_OWNER`: no list shows them, no quota counts them, and one left by a killed drill
is removed by the next drill on the data dir (and by ``pulumi-dbos serve`` at its start).

Bounded: one drill at a time per host and OS user (a lock file in ``PULUMI_DBOS_LOCK_DIR``, as the
WAL-volume backups' lock). Scheduled drills (serve) also skip a round while the host is busy
(:func:`busy_reason`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...errors import DbosError, EngineError
from ...timeutil import parse_rfc3339, to_rfc3339, utcnow
from .. import settings
from ..contract import AppStatus, DrillResult, Status
from ..ha import restores as ha_restores
from ..ha.members import enabled as ha_enabled
from ..waits import wait_until
from . import roles
from .autobackup import host_lock_path as backup_lock_path
from .catalog import AppCatalog, DrillCatalog, InstanceRecord
from .pitr import ARCHIVE_NOW_XIDS
from .ports import HOST
from .server import Server
from .workers import try_lock

if TYPE_CHECKING:
    import psycopg

    from .facade import LocalEngine

log = logging.getLogger("pulumi_dbos.engine")

#: the owner of every scratch instance (no stack's owner looks like this)
DRILL_OWNER = "pulumi-dbos:restore-drill"
#: the check SQL's statements are cancelled after this long
CHECK_TIMEOUT_MS = 300_000

_USER_TABLES = (
    "SELECT n.nspname, c.relname FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
    "WHERE c.relkind = 'r' AND c.relpersistence = 'p' AND n.nspname <> 'information_schema' "
    "AND n.nspname NOT LIKE 'pg\\_%' ORDER BY 1, 2")


#: a superuser connection to a database (by name) of one instance: a single server's, or an HA instance's leader
Admin = Callable[[str], AbstractContextManager["psycopg.Connection[Any]"]]


def single_admin(server: Server, name: str, port: int) -> Admin:
    return lambda db: server.admin(name, port, db)


class DrillBusyError(EngineError):
    """Another drill holds the host's drill lock."""


def kept() -> int:
    """How many results are kept per instance."""
    return settings.from_env().drills_kept


def last_drill(db: DrillCatalog, name: str) -> dict[str, Any] | None:
    """The newest result's summary (what ``InstanceInfo.last_drill`` shows)."""
    newest = db.results(name, limit=1)
    return DrillResult(**json.loads(newest[0])).summary() if newest else None


def is_scratch(owner: str | None) -> bool:
    return owner == DRILL_OWNER


def host_lock_path() -> Path:
    return backup_lock_path().with_name(f"pulumi-dbos-{os.geteuid()}-drill.lock")


def busy_reason(eng: LocalEngine) -> str | None:
    """Why a scheduled drill should not start now on ``eng``'s host, or None: an instance of the data dir being
    created or restored, an app being deployed, a base backup running on the host (the WAL-volume backups'
    host lock), or a 1-minute load average above ``PULUMI_DBOS_DRILL_MAX_LOAD`` per CPU (default 1.0)."""
    making = [r.name for r in eng.catalog.all()
              if r.status in (Status.CREATING.value, Status.RESTORING.value) and not is_scratch(r.owner)]
    if making:
        return f"instance {making[0]} is being created or restored"
    deploying = [a.name for a in AppCatalog(eng.catalog).all() if a.status == AppStatus.DEPLOYING.value]
    if deploying:
        return f"app {deploying[0]} is being deployed"
    with try_lock(backup_lock_path()) as free:
        if not free:
            return "a base backup is running on this host"
    limit = settings.from_env().drill_max_load
    load = os.getloadavg()[0] / (os.cpu_count() or 1)
    if load > limit:
        return f"the load average is {load:.2f} per CPU (over {limit:g}, PULUMI_DBOS_DRILL_MAX_LOAD)"
    return None


@dataclass(frozen=True)
class Fence:
    """The source's transaction snapshot: the first unassigned transaction id, and those in progress."""

    xmax: int
    running: frozenset[int]

    @classmethod
    def read(cls, admin: Admin) -> Fence:
        with admin("postgres") as conn:
            text = str(conn.execute("SELECT pg_catalog.pg_current_snapshot()::text").fetchone()[0])  # type: ignore[index]
        _xmin, xmax, xip = text.split(":")
        return cls(int(xmax), frozenset(int(x) for x in xip.split(",") if x))

    def writes_until(self, later: Fence, own: int) -> int:
        """Transactions other than the ``own`` ones that got an id or ended between the two snapshots."""
        return max(0, later.xmax - self.xmax - own) + len(self.running - later.running)


def count_tables(admin: Admin) -> dict[str, int]:
    """``database/schema.table`` -> rows, for every user table of every database taking connections."""
    from psycopg import sql

    counts: dict[str, int] = {}
    with admin("postgres") as conn:
        dbs = [r[0] for r in conn.execute(
            "SELECT datname FROM pg_catalog.pg_database WHERE datallowconn AND NOT datistemplate ORDER BY 1")]
    for db in dbs:
        with admin(db) as conn:
            for schema, table in conn.execute(_USER_TABLES).fetchall():
                n = conn.execute(sql.SQL("SELECT pg_catalog.count(*) FROM {}.{}").format(
                    sql.Identifier(schema), sql.Identifier(table))).fetchone()[0]  # type: ignore[index]
                counts[f"{db}/{schema}.{table}"] = int(n)
    return counts


def compare(source: dict[str, int], restored: dict[str, int]) -> str | None:
    """What differs (None: the same tables with the same counts)."""
    problems = [f"{t} missing" for t in source if t not in restored]
    problems += [f"{t}: {restored[t]} rows restored, {n} in the source" for t, n in source.items()
                 if t in restored and restored[t] != n]
    problems += [f"{t} not in the source" for t in restored if t not in source]
    if not problems:
        return None
    more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
    return "the restored tables differ from the source's: " + "; ".join(problems[:5]) + more


def run_check(port: int, username: str, password: str, dbname: str, text: str) -> str | None:
    """Run the user's check SQL; None when it passed, else why not."""
    import psycopg

    try:
        with psycopg.connect(host=HOST, port=port, user=username, password=password, dbname=dbname,
                             connect_timeout=10, autocommit=True,
                             options=f"-c statement_timeout={CHECK_TIMEOUT_MS}") as conn:
            cur = conn.execute(text.encode())  # the user's own SQL, run as their role on a throwaway copy
            returned, last = False, None  # whether a statement returned rows; the last such one's first row
            while True:
                if cur.description is not None:
                    returned, last = True, cur.fetchone()
                if not cur.nextset():
                    break
    except psycopg.Error as exc:
        return f"the check SQL failed: {str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}"
    if not returned:
        return None
    if last is None:
        return "the check SQL's last statement returned no row (it must return true)"
    if last[0] is not True:
        return f"the check SQL returned {last[0]!r} (it must return true)"
    return None


class Drills:
    """The drills of one local engine's instances."""

    def __init__(self, eng: LocalEngine) -> None:
        self.eng = eng

    @property
    def db(self) -> DrillCatalog:
        return DrillCatalog(self.eng.catalog)

    def history(self, name: str) -> list[DrillResult]:
        self.eng._require_local(name, "its backups are up to its own server")
        return [DrillResult(**json.loads(r)) for r in self.db.results(name)]

    def last_at(self, name: str) -> str | None:
        return self.db.last_at(name)

    def last(self, name: str) -> dict[str, Any] | None:
        return last_drill(self.db, name)

    @contextlib.contextmanager
    def host_lock(self, wait: float) -> Iterator[bool]:
        deadline = time.monotonic() + wait
        while True:
            with try_lock(host_lock_path()) as mine:
                if mine or time.monotonic() >= deadline:
                    yield mine
                    return
            time.sleep(0.2)

    def clean_leftovers(self) -> list[str]:
        """Remove scratch instances a killed drill left (call holding the host's drill lock)."""
        gone = []
        for rec in self.eng.catalog.all():
            if is_scratch(rec.owner):
                log.warning("removing scratch instance %r left by an interrupted restore drill", rec.name)
                self.eng.destroy(rec.name)
                gone.append(rec.name)
        return gone

    def run(self, name: str, check_sql: str | None, check_database: str | None, *, wait: float) -> DrillResult:
        rec = self.eng._require_local(name, "its backups are up to its own server: there is nothing here to drill")
        if is_scratch(rec.owner):
            raise EngineError(f"{name!r} is a restore drill's scratch instance")
        if rec.status != Status.AVAILABLE.value or not self._running(rec):
            raise EngineError(f"cannot drill {name!r}: its server is not running (status {self.eng._info(rec).status})",
                              hint="a drill restores the newest point, which the running source archives; "
                                   "start it with `pulumi up` and retry")
        if check_sql is not None and check_sql.strip():
            self.db.set_check(name, check_sql, check_database or "postgres")
        elif check_sql is not None:
            self.db.delete_check(name)  # an empty check SQL: none any more
        with self.host_lock(wait) as mine:
            if not mine:
                raise DrillBusyError("another restore drill is running on this host",
                                     hint="drills run one at a time; try again when it is done")
            self.clean_leftovers()
            result = self._run(rec)
        self.db.add(name, result.at, json.dumps(result.to_dict()), kept())
        if result.ok:
            log.info("restore drill of %s passed: RTO %.1fs, RPO %s%s", name, result.rto_seconds or 0.0,
                     "unknown" if result.rpo_seconds is None else f"{result.rpo_seconds:.0f}s",
                     "" if result.counts_compared else f" ({result.reason})")
        else:
            log.error("RESTORE DRILL FAILED for instance %s: %s", name, result.reason)
        return result

    def _run(self, rec: InstanceRecord) -> DrillResult:
        eng, name = self.eng, rec.name
        at = utcnow()
        newest = self._newest(rec)
        rpo = round(max(0.0, (at - max(parse_rfc3339(t) for t in newest)).total_seconds()), 3) if newest else None
        base: dict[str, Any] = {"instance": name, "at": to_rfc3339(at), "rpo_seconds": rpo}
        chain = self._chain(rec)
        if chain is not None and not chain[0]:
            return DrillResult(ok=False, reason=chain[1], **base)
        admin = ha_restores.admin_of(eng, name) if ha_enabled(eng, name) else single_admin(eng.server, name, rec.port)
        before = Fence.read(admin)
        source = count_tables(admin)
        scratch = self._scratch_name()
        password = secrets.token_urlsafe(24)
        started = time.monotonic()
        try:
            try:
                info = eng.restore_to_new(name, scratch, "latest", password=password, owner=DRILL_OWNER)
                wait_until(lambda: roles.credentials_work(HOST, info.port, info.username, password),
                           eng.settings.start_timeout,
                           f"the restored scratch instance of {name!r} did not accept its user's login")
            except DbosError as exc:
                return DrillResult(ok=False, reason=f"the restore failed: {exc.message}", **base)
            base.update(rto_seconds=round(time.monotonic() - started, 3), restored_to=info.restored_to)
            writes = before.writes_until(Fence.read(admin), ARCHIVE_NOW_XIDS)
            try:
                restored = count_tables(single_admin(eng.server, scratch, info.port))
            except DbosError as exc:
                return DrillResult(ok=False, reason=f"reading the restored tables failed: {exc.message}", **base)
            except Exception as exc:  # psycopg.Error: a page the replay left unreadable
                return DrillResult(ok=False, reason=f"reading the restored tables failed: {exc}", **base)
            base["tables"] = len(restored)
            note = None
            if writes:
                note = (f"row counts not compared: the source committed or began {writes} transaction(s) while the "
                        "drill ran, so its counts as of the restore point are unknown; all restored tables were read")
            else:
                differs = compare(source, restored)
                if differs:
                    return DrillResult(ok=False, reason=differs, **base)
            check = self.db.check(name)
            if check is not None:
                failed = run_check(info.port, info.username, password, check[1], check[0])
                if failed:
                    return DrillResult(ok=False, counts_compared=not writes, reason=failed, **base)
            if chain is not None:  # whole from the newest backup on, but a gap before it: the window starts later
                note = chain[1] if note is None else f"{chain[1]}; {note}"
            return DrillResult(ok=True, counts_compared=not writes, sql_checked=check is not None, reason=note,
                               **base)
        finally:
            try:
                if eng.catalog.get(scratch) is not None:
                    eng.destroy(scratch)
            except (DbosError, OSError) as exc:  # removed by the next drill, or serve's next start
                log.error("could not remove the drill's scratch instance %r yet: %s", scratch, exc)

    def _running(self, rec: InstanceRecord) -> bool:
        """The source can archive its current WAL: its server runs (an HA instance: it has a leader)."""
        if ha_enabled(self.eng, rec.name):
            return ha_restores.has_leader(self.eng, rec.name)
        return self.eng.server.running(rec.name)

    def _newest(self, rec: InstanceRecord) -> list[str]:
        """When the newest points the backups alone reach were made: the newest archived segment, and base backup
        (an HA instance's: its leader's archiver and the repository, which is its only archive)."""
        if ha_enabled(self.eng, rec.name):
            return ha_restores.newest_archived(self.eng, rec.name)
        return [t for t in (self.eng.pitr.last_archived_time(rec.name),
                            *(b.finished_at for b in self.eng.catalog.backups(rec.name))) if t]

    def _chain(self, rec: InstanceRecord) -> tuple[bool, str] | None:
        """The backups themselves, before any restore: the WAL chain over the whole window (a segment missing
        from the local cache and from the repository), then ``pgbackrest verify`` (every backup and WAL file
        read back against its checksum). None: all whole; (False, why): the newest point cannot be restored;
        (True, note): it can, but the window starts after a gap (``earliest_restorable_time`` says where)."""
        eng = self.eng
        # an HA instance has no local WAL cache: its chain is the repository's, which ``verify`` reads whole
        gaps = [] if ha_enabled(eng, rec.name) else eng.pitr.gaps(rec)
        backups = eng.catalog.backups(rec.name)
        newest = backups[-1].start_wal[8:] if backups else ""
        after = [g for g in gaps if g[8:] > newest]
        if after:
            return False, (f"WAL segment {after[0]} is missing from the archive and from the backup repository "
                           f"({len(after)} missing after the newest base backup): nothing after it can be restored; "
                           f"take a new base backup now (`pulumi-dbos db backup {rec.name}`) to start a whole chain")
        stanza = rec.stanza or eng.layout.stanza(rec.name)
        if stanza and rec.repo_backup_at:
            problem = eng.repo.verify(stanza)
            if problem:
                return False, f"the backup repository failed verification (pgbackrest verify): {problem}"
        if gaps:
            return True, (f"WAL segment {gaps[0]} is missing ({len(gaps)} in all, before the newest base backup): "
                          f"the restorable window starts at {eng.pitr.earliest(rec)}")
        return None

    def _scratch_name(self) -> str:
        while True:
            name = f"drill_{secrets.token_hex(4)}"
            if self.eng.catalog.get(name) is None and not self.eng.inst_dir(name).exists():
                return name
