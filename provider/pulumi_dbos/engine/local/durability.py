"""What the backup repository (``repo``) gives the local engine: lost instances, keeping a destroyed instance's
backups, restores from the repository alone, and bringing a lost instance back.

The rules (docs/guarantees.md):

- **Nothing in a cleanup path deletes backups.** A create that never finished has no repository backup
  (the first is taken once it is available); its empty stanza is the only thing removed.
- **Lost is a state.** An instance whose cluster directory, instance directory, catalog row or whole data
  dir is gone, but whose repository stanza holds backups and was never destroyed, is ``lost``: listed,
  refreshed with its restorable window, refused by ``up`` (no silent empty re-create), brought back at
  its newest archived point by :func:`recover` (``pulumi-dbos db recover NAME``), or restored into a new
  instance (``RestoredInstance(source=NAME)``).
- **Destroy keeps the repository.** The final WAL is archived, the newest backup is annotated with
  ``destroyed-at`` and ``keep-until`` (``RepoSettings.keep_deleted``), and until then the instance can be
  restored by name; the repository's expiry (``Repository.expire_deleted``) removes it afterwards.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING

from ...errors import EngineError
from ...timeutil import parse_rfc3339, to_rfc3339, utcnow
from ..contract import Kind, Status
from ..files import write_atomic
from .catalog import Catalog, InstanceRecord
from .repo import Stanza

if TYPE_CHECKING:
    from .context import LocalContext

log = logging.getLogger("pulumi_dbos.engine")


def live_stanza(eng: LocalContext, name: str) -> Stanza | None:
    """``name``'s newest incarnation in the repository that holds a backup and was not destroyed."""
    found = [s for s in eng.repo.of_instance(name) if not s.destroyed_at]
    return found[-1] if found else None


def kept_stanza(eng: LocalContext, name: str) -> Stanza | None:
    """``name``'s newest restorable incarnation: the live one, else a destroyed one still kept."""
    now = to_rfc3339(utcnow())
    found = [s for s in eng.repo.of_instance(name) if not s.keep_until or s.keep_until > now]
    return found[-1] if found else None


def lost_record(eng: LocalContext, name: str) -> InstanceRecord | None:
    """The record of an instance the catalog does not know but the repository does (catalog row or data dir
    lost): rebuilt from its backups' annotations. None when the repository has no live incarnation."""
    st = live_stanza(eng, name)
    if st is None:
        return None
    notes = st.annotations
    return InstanceRecord(
        name=name, kind=Kind(notes.get("kind", Kind.PROVISIONED.value)), status=Status.AVAILABLE.value,
        hostname="127.0.0.1", port=int(notes.get("port") or 0), username=notes.get("username", ""),
        retention_hours=int(notes.get("retention-hours") or 24), created_at=notes.get("created-at") or None,
        earliest=st.earliest, source=notes.get("source"), stanza=st.name,
        repo_backup_at=to_rfc3339(st.backups[-1].stopped))


RECONCILED = "repository-reconciled"


def reconcile(eng: LocalContext, catalog: Catalog) -> None:
    """Once per catalog (a new data dir, a catalog that was lost and made anew): every live instance the
    repository holds that the catalog has no row of is recorded as lost (``Catalog.lost``). Later rows and
    destroys keep the two in step, so no look at an instance asks pgBackRest again."""
    if catalog.meta(RECONCILED) is not None or not eng.repo.exists():
        return
    known = {r.name for r in catalog.all()}
    for st in eng.repo.stanzas():
        if st.instance not in known and not st.destroyed_at and st.backups:
            rec = lost_record(eng, st.instance)
            if rec is not None:
                catalog.add_lost(rec)
                log.warning("instance %r is in the backup repository but not in this catalog: lost "
                            "(`pulumi-dbos db recover %s` brings it back)", st.instance, st.instance)
    catalog.set_meta(RECONCILED, to_rfc3339(utcnow()))


def lost_error(rec: InstanceRecord) -> EngineError:
    return EngineError(
        f"instance {rec.name!r} is lost: its data is gone from this machine (a removed directory, a lost "
        "disk or catalog); its backups are safe in the backup repository, and it is not re-created empty",
        hint=f"bring it back at its newest archived point with `pulumi-dbos db recover {rec.name}` (then "
             f"`pulumi up --refresh`), or restore it into a new instance: RestoredInstance(source={rec.name!r}, "
             "restore_time='latest')")


def repo_window(eng: LocalContext, name: str, live: InstanceRecord | None = None) -> tuple[datetime, datetime] | None:
    """The restorable window of ``name`` from the repository alone: its oldest backup's end to its newest
    archived point (``destroyed-at`` for a destroyed instance; a lost one's newest backup or cached WAL;
    ``live``, a running instance: now, its WAL just archived)."""
    st = eng.repo.stanza(live.stanza) if live is not None and live.stanza else kept_stanza(eng, name)
    if st is None or not st.backups:
        return None
    earliest = st.backups[0].stopped
    if live is not None:
        return earliest, utcnow()
    latest = parse_rfc3339(st.destroyed_at) if st.destroyed_at else st.backups[-1].stopped
    cached = eng.pitr.last_archived_time(name)
    if not st.destroyed_at and cached and parse_rfc3339(cached) > latest:
        latest = parse_rfc3339(cached)
    return earliest, latest


def retire(eng: LocalContext, rec: InstanceRecord) -> None:
    """Before a destroy: archive the last WAL and mark the stanza destroyed (kept until ``keep-until``).
    Without a repository backup there is nothing to keep: the empty stanza goes."""
    stanza = rec.stanza or eng.layout.stanza(rec.name)
    if not stanza:
        return
    st = eng.repo.stanza(stanza)
    if st is None:
        eng.repo.remove_empty(stanza)
        return
    at = utcnow()
    if eng.server.running(rec.name):
        with contextlib.suppress(EngineError):
            at = eng.pitr.archive_now(rec.name, rec.port)
    keep = at + eng.repo.settings.keep_deleted(rec.retention_hours)
    eng.repo.annotate(stanza, st.backups[-1].label, {"destroyed-at": to_rfc3339(at), "keep-until": to_rfc3339(keep)})
    log.info("instance %r destroyed; its backups stay restorable until %s", rec.name, to_rfc3339(keep))


def restore_from_repo(eng: LocalContext, source: str, rec: InstanceRecord, target: datetime | None,
                      before_start: Callable[[], None]) -> bool:
    """``rec``'s cluster (a new instance, its catalog row reserved) from ``source``'s repository backups alone,
    recovered to ``target`` (None: the end of the archive) and promoted; ``before_start`` (its own stanza)
    runs once the files are in place. True when the backup was an HA member's (``engine/ha``; the source HA
    now or then, live, lost or destroyed): its files are made a single server's before it starts, and the
    caller drops what else it brought (``ha.members.drop_member_leftovers``)."""

    src = eng.catalog.get(source)
    st = eng.repo.stanza(src.stanza) if src is not None and src.stanza else kept_stanza(eng, source)
    if st is None:
        raise EngineError(f"the backup repository has no restorable backup of {source!r}",
                          hint="`pulumi-dbos db list` shows the instances; destroyed ones are kept for "
                               "dbos:backupRepo.deletedRetentionHours")
    name = rec.name
    eng.layout.make_instance_dirs(name)
    eng.layout.mkdir(eng.pgdata(name))
    eng.repo.restore(st.name, eng.pgdata(name), target)
    member = _single_server(eng, name)
    before_start()
    _start_recovered(eng, rec)
    return member


def _single_server(eng: LocalContext, name: str) -> bool:
    """A restored HA member's files made a single server's (Patroni's configuration set aside); whether they were."""
    from ..ha.members import is_member_data, single_server  # ha -> local: imported when used
    if not is_member_data(eng.pgdata(name)):
        return False
    single_server(eng, eng.pgdata(name))
    return True


def _start_recovered(eng: LocalContext, rec: InstanceRecord) -> None:
    """Start a cluster pgBackRest restored (its recovery settings in postgresql.auto.conf), wait for the
    promotion, drop the recovery settings, then give it a stanza of its own."""
    name = rec.name
    pgdata = eng.pgdata(name)
    for stale in ("postmaster.pid", "postmaster.opts"):
        with contextlib.suppress(FileNotFoundError):
            (pgdata / stale).unlink()
    eng.server.write_conf(name, rec.port)
    eng.server.start(name, rec.port, eng.settings.recovery_timeout)
    eng.pitr.wait_promoted(name, rec.port)
    auto = pgdata / "postgresql.auto.conf"
    with contextlib.suppress(OSError):
        kept = [ln for ln in auto.read_text().splitlines(keepends=True)
                if not ln.lstrip().startswith(("restore_command", "recovery_target"))]
        write_atomic(auto, "".join(kept), 0o600, uid=eng.server._uid(), gid=eng.server._gid())


def recover(eng: LocalContext, name: str) -> None:
    """Bring a lost instance back where it was (its name, its port when free), at its newest archived point,
    from the repository; its history continues in the same stanza (a new timeline). An instance whose
    catalog row alone was lost while its cluster is intact is registered again, nothing restored."""
    from . import creates  # creates -> context -> durability: imported when used
    rec = eng.catalog.get(name)
    if rec is not None and not rec.linked and eng.has_data(name):
        raise EngineError(f"instance {name!r} is not lost", hint="`pulumi-dbos db status NAME`")
    if rec is None:
        rec = eng._lost_record(name) or lost_record(eng, name)
        if rec is None:
            raise EngineError(f"the backup repository has no live instance named {name!r}",
                              hint="a destroyed instance is restored into a new one: RestoredInstance(source=...)")
    stanza = rec.stanza or ""
    inst_dir = eng.inst_dir(name)
    if eng.catalog.get(name) is None and eng.layout.stanza(name) == stanza and (eng.pgdata(name) / "PG_VERSION").exists():
        # the catalog row alone is gone: the cluster is there (perhaps still running)
        creates.register_lost(eng, rec)
        return
    if inst_dir.exists():  # what is left of it is set aside, never deleted
        aside = inst_dir.with_name(f"{name}.lost-{utcnow().strftime('%Y%m%dT%H%M%S')}")
        eng.server.kill(name)
        inst_dir.rename(aside)
        log.warning("instance %r: the remains of its directory are kept in %s", name, aside)
    creates.register_lost(eng, rec)
    try:
        eng.layout.make_instance_dirs(name)
        eng.layout.mkdir(eng.pgdata(name))
        eng.repo.restore(stanza, eng.pgdata(name), None)
        _single_server(eng, name)  # a lost HA instance comes back a single server (`highAvailability` turns it on)
        # on a new machine a posix repository (if any) may be new: the stanza is made there too (idempotent; an
        # S3 store alone holds it already: that is where it was found)
        if eng.repo.has_posix:
            eng.repo.create_stanza(stanza, eng.pgdata(name))
        write_atomic(eng.layout.stanza_file(name), stanza + "\n", 0o600)
        _start_recovered(eng, rec)
    except BaseException:
        eng.server.kill(name)
        shutil.rmtree(inst_dir, ignore_errors=True)  # only what this recovery made; the repository is untouched
        raise
