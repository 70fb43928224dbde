"""Creating an instance (provision, restore, recover): its catalog row and port, the steps' reverts, the port
retried when another process took it, its stanza in the backup repository.

Every create runs inside :func:`creating`: a failure removes what it made (server, directory, port claim,
catalog row, its stanza when that holds no backup) and says it was rolled back; a create that failed has
no repository backup, so nothing kept is lost (``durability``).
"""

from __future__ import annotations

import contextlib
import logging
import re
import shutil
import sqlite3
from collections.abc import Callable, Iterator

from ...errors import AlreadyExistsError, DbosError, EngineError
from ...timeutil import to_rfc3339, utcnow
from .. import pgbin
from ..contract import Kind, Status
from ..files import write_atomic
from ..undo import Undo, revert_all, undoing
from . import ports
from .catalog import Catalog, InstanceRecord
from .context import LocalContext
from .ports import HOST
from .repo import new_stanza as stanza_name

log = logging.getLogger("pulumi_dbos.engine")


def reserve(ctx: LocalContext, rec: InstanceRecord, wanted_port: int | None) -> InstanceRecord:
    """Register ``rec`` (status creating/restoring) with a claimed port, or raise AlreadyExistsError."""
    # defence in depth: names become paths and SQL identifiers (the resources validate them too)
    if not re.match(r"^[a-z0-9_]{3,16}$", rec.name) or not re.match(r"^[a-z0-9_]{1,63}$", rec.username):
        raise EngineError(f"invalid instance name or username: {rec.name!r}, {rec.username!r}",
                          hint="names are 3-16 characters of [a-z0-9_]")
    with ctx.catalog.locked() as db:
        if Catalog.exists(db, rec.name):
            raise AlreadyExistsError(f"an instance named {rec.name!r} already exists in {ctx.describe()}",
                                     hint="choose another instance_name, or set adopt=True to take it over")
        if ctx.inst_dir(rec.name).exists():
            if (ctx.pgdata(rec.name) / "PG_VERSION").exists() or ctx.layout.stanza(rec.name):
                # a cluster without a catalog row: the catalog was lost, not a create that failed
                raise EngineError(
                    f"instance {rec.name!r} has a cluster in {ctx.inst_dir(rec.name)} but no catalog row "
                    "(a lost catalog): it is not removed nor re-created",
                    hint=f"`pulumi-dbos db recover {rec.name}` registers it again")
            # an empty directory (no cluster, no stanza) left by a crashed create: debris, ours to remove
            log.warning("removing leftover directory %s of a failed create (it holds no cluster)",
                        ctx.inst_dir(rec.name))
            shutil.rmtree(ctx.inst_dir(rec.name))
        if not rec.linked:
            rec.port = ports.allocate(db, ctx.data_dir, wanted_port, rec.name)
            rec.pg_version = pgbin.server_version()
        Catalog.insert(db, rec)
    return rec


def abort(ctx: LocalContext, name: str) -> None:
    """Unmake a create that a crash cut short (its steps are known, not which of them ran): every revert of
    :func:`creating` and its steps, best effort. A create that never finished has no repository backup, so
    its stanza goes only when it holds none."""
    rec = ctx.catalog.get(name)
    stanza = (rec.stanza if rec else None) or ctx.layout.stanza(name)
    revert_all((ctx.catalog.delete, (name,)),
               *([(ports.release, (rec.port, ctx.data_dir, name))] if rec is not None and not rec.linked else []),
               (shutil.rmtree, (ctx.inst_dir(name), True)),
               *([(ctx.repo.remove_empty, (stanza,))] if stanza else []),
               (ctx.server.kill, (name,)))


@contextlib.contextmanager
def creating(ctx: LocalContext, rec: InstanceRecord, what: str) -> Iterator[Undo]:
    """Around the steps after :func:`reserve`: an undo stack that starts with the reserved row and port; each
    step pushes its own revert (``undo.push``). Any failure unmakes everything made, newest first, then says
    it was rolled back."""
    name = rec.name
    try:
        with undoing() as undo:
            undo.push(ctx.catalog.delete, name)
            if not rec.linked:
                undo.push(lambda: ports.release(rec.port, ctx.data_dir, name))  # the port it has by then
            yield undo
    except DbosError as exc:
        raise EngineError(f"{what} {name!r} failed and was rolled back: {exc.message}", hint=exc.hint) from None
    except (OSError, sqlite3.Error) as exc:
        raise EngineError(f"{what} {name!r} failed and was rolled back: {exc}",
                          hint="is the data dir's file system writable and not full?") from None


def on_free_port(ctx: LocalContext, rec: InstanceRecord, wanted: int | None, start: Callable[[int], None]) -> None:
    """``start(rec.port)``; when the port was chosen here (``wanted`` None) and another process took it
    between the choice and the server's bind, again on another port (``ports.BIND_ATTEMPTS`` in all)."""
    for attempt in range(1, ports.BIND_ATTEMPTS + 1):
        try:
            start(rec.port)
            return
        except EngineError as exc:
            if wanted is not None or attempt == ports.BIND_ATTEMPTS or not ports.bind_failed(exc.message):
                raise
            ctx.server.kill(rec.name)
            taken = rec.port
            try:
                with ctx.catalog.locked() as db:  # the row still names the taken port: never chosen again
                    rec.port = ports.allocate(db, ctx.data_dir, None, rec.name)
                    ctx.catalog.update(rec.name, db=db, port=rec.port)
            except EngineError:
                raise exc from None  # no other port: the start's own failure says the most
            ports.release(taken, ctx.data_dir, rec.name)
            log.warning("instance %r: port %d was taken before its server bound it; trying port %d",
                        rec.name, taken, rec.port)


def new_record(ctx: LocalContext, name: str, kind: Kind, username: str, status: Status, retention_hours: int,
                owner: str | None, **fields: str | None) -> InstanceRecord:
    return InstanceRecord(name=name, kind=kind, status=status.value, hostname=fields.pop("hostname", None) or HOST,
                          port=0, username=username, retention_hours=retention_hours,
                          created_at=to_rfc3339(utcnow()), owner=owner, **fields)


def register_lost(ctx: LocalContext, rec: InstanceRecord) -> None:
    """(``durability.recover``) the catalog row of a lost instance again, on its old port when free."""
    with ctx.catalog.locked() as db:
        if Catalog.exists(db, rec.name):
            ctx.catalog.update(rec.name, db=db, status=Status.AVAILABLE.value)
            return
        if ctx.server.running(rec.name):  # its server never stopped: it keeps the port it listens on
            ports.claim(rec.port, ctx.data_dir, rec.name)
        else:
            try:
                rec.port = ports.allocate(db, ctx.data_dir, rec.port or None, rec.name)
            except EngineError:
                rec.port = ports.allocate(db, ctx.data_dir, None, rec.name)
        rec.status = Status.AVAILABLE.value
        Catalog.insert(db, rec)
    ctx.catalog.forget_lost(rec.name)


def new_stanza(ctx: LocalContext, name: str, undo: Undo | None = None) -> str:
    """Give ``name``'s cluster (placed, not started) a stanza of its own in the repository (``undo``: a failed
    create removes it again, while it holds no backup)."""
    stanza = stanza_name(name)
    ctx.repo.create_stanza(stanza, ctx.pgdata(name))
    if undo is not None:
        undo.push(ctx.repo.remove_empty, stanza)
    write_atomic(ctx.layout.stanza_file(name), stanza + "\n", 0o600)
    ctx.catalog.update(name, stanza=stanza, repo_backup_at=None)
    return stanza

