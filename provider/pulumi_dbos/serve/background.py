"""What serve does on its own: crash recovery before it listens, then (a daemon thread) a restart of the
organizations' instances and apps, scheduled base backups with retention pruning, and restore drills.

Crash recovery: a create or restore cut short by a killed server is removed (never left half-made),
with the credentials stored for it; an app whose first deploy was cut short is removed from the
engine (its registration stays). Restart: every stopped instance is started, every deployed app whose
process is not running is redeployed at its current version with the credentials serve holds.
Restore drills (``engine/local/drills.py``): every ``drill_interval`` seconds each available instance is
drilled once, one drill at a time on the host, holding the instance's lock (its other requests wait); a
round stops while the host is busy (``drills.busy_reason``: a create, restore or deploy under way, a base
backup running, a high load average) and goes on at the next check. A scratch instance a killed server
left is removed at start, as any half-made instance.
Nothing logged here carries a secret.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING

from ..engine.contract import AppDatabaseAccess, AppDeploy, AppStatus, Status
from ..engine.local.drills import DrillBusyError, Drills, busy_reason
from ..errors import DbosError
from ..timeutil import parse_rfc3339, utcnow
from .state import ServeState

if TYPE_CHECKING:
    pass

log = logging.getLogger("pulumi_dbos.serve")

_HALF_MADE = (Status.CREATING.value, Status.RESTORING.value)
DEFAULT_DRILL_INTERVAL = 86400.0
#: how often the thread looks whether drills are due (at most)
DRILL_CHECK_SECONDS = 300.0


def recover(state: ServeState) -> None:
    """Remove what a killed server left half-made (run before serving: nothing else is in flight)."""
    for org in state.orgs():
        try:
            _recover_org(state, org)
        except Exception:  # one organization's trouble does not keep the others from being served
            log.exception("org %s: crash recovery failed", org)
    for org in state.credentials_store.orgs():
        eng = state.engine(org) if state.has_catalog(org) else None
        for name in state.credentials_store.items(org):
            if eng is None or eng.info(name) is None:
                state.forget_credentials(org, name)


def _recover_org(state: ServeState, org: str) -> None:
    for name in state.engine(org).recover_interrupted():
        state.forget_credentials(org, name)


class Background:
    """The daemon thread: restart once, then every ``interval`` seconds a backup and prune of every
    available, non-linked instance of every organization, and every ``drill_interval`` seconds (0: never)
    a restore drill of each."""

    def __init__(self, state: ServeState, interval: float, drill_interval: float = DEFAULT_DRILL_INTERVAL) -> None:
        self.state = state
        self.interval = interval
        self.drill_interval = drill_interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="serve-background", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 60) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("background work did not finish within %.0fs", timeout)

    def _run(self) -> None:
        try:
            self.restart()
        except Exception:
            log.exception("restart of instances and apps failed")
        tick = min(self.interval, self.drill_interval or self.interval, DRILL_CHECK_SECONDS)
        next_backup = time.monotonic() + self.interval
        while not self._stop.wait(tick):
            if time.monotonic() >= next_backup:
                next_backup = time.monotonic() + self.interval
                try:
                    self.backup_all()
                except Exception:
                    log.exception("scheduled backups failed")
            if self.drill_interval:
                try:
                    self.drill_due()
                except Exception:
                    log.exception("scheduled restore drills failed")

    # ---------------------------------------------------------------- restart (after a reboot or a crash)
    def restart(self) -> None:
        for org in self.state.orgs():
            eng = self.state.engine(org)
            for info in eng.list():
                if self._stop.is_set():
                    return
                if info.is_linked or info.status != Status.STOPPED.value:
                    if info.status == Status.LOST.value:
                        log.warning("org %s: %s is lost (its data is gone): `pulumi-dbos db recover` brings it back from the backup repository", org, info.name)
                    continue
                with self.state.locked("db", org, info.name):
                    try:
                        eng.ensure_running(info.name)
                        log.info("org %s: started %s", org, info.name)
                    except DbosError as exc:
                        log.error("org %s: could not start %s: %s", org, info.name, exc.message)
            for app in eng.apps.all():
                if self._stop.is_set():
                    return
                if app.version and app.status != AppStatus.AVAILABLE.value:
                    self._restart_app(org, app.name)

    def _restart_app(self, org: str, name: str) -> None:
        eng = self.state.engine(org)
        with self.state.locked("app", org, name):
            app = eng.apps.info(name)
            if app is None or not app.version or app.status == AppStatus.AVAILABLE.value:
                return
            inst = eng.info(app.instance_name)
            creds = self.state.credentials(org, app.instance_name)
            if inst is None or creds is None:
                log.error("org %s: cannot restart app %s: %s", org, name,
                          f"database {app.instance_name} is gone" if inst is None
                          else f"no credentials held for {app.instance_name}")
                return
            env = {k: str(v) for k, v in (self.state.secrets.get(org, name) or {}).items()}
            access = AppDatabaseAccess(inst.name, inst.hostname, inst.port, creds.username, creds.password)
            try:
                memory = (self.state.apps.get(org, name) or {}).get("ExecutorsMemoryMib")
                eng.apps.deploy(AppDeploy(name, app.version, None, access, app.app_db_name, env, owner=app.owner,
                                         memory_mib=int(memory) if memory else None))
                log.info("org %s: restarted app %s version %s", org, name, app.version)
            except DbosError as exc:
                log.error("org %s: could not restart app %s: %s", org, name, exc.message.splitlines()[0])

    # ---------------------------------------------------------------- scheduled backups
    def backup_all(self) -> None:
        for org in self.state.orgs():
            eng = self.state.engine(org)
            for info in eng.list():
                if self._stop.is_set():
                    return
                if info.is_linked or info.status != Status.AVAILABLE.value:
                    continue
                lock = self.state.lock("db", org, info.name)
                if not lock.acquire(blocking=False):
                    continue  # being changed right now: next round
                try:
                    b = eng.backup(info.name)
                    eng.prune(info.name)
                    log.info("org %s: base backup %s of %s", org, b.backup_id, info.name)
                except DbosError as exc:
                    log.warning("org %s: scheduled backup of %s failed: %s", org, info.name, exc.message)
                finally:
                    lock.release()

    # ---------------------------------------------------------------- scheduled restore drills
    def drill_due(self) -> int:
        """Drill, one after the other, every available instance whose newest drill (or, without one, its
        creation) is older than ``drill_interval``; stop at the first sign of a busy host. Returns how many ran."""
        ran = 0
        for org in self.state.orgs():
            if not self.state.has_catalog(org):
                continue
            eng = self.state.engine(org)
            for info in eng.list():
                if self._stop.is_set():
                    return ran
                if info.is_linked or info.status != Status.AVAILABLE.value:
                    continue
                last = Drills(eng).last_at(info.name) or info.created_at  # a new instance: one interval on
                if last and (utcnow() - parse_rfc3339(last)).total_seconds() < self.drill_interval:
                    continue
                busy = busy_reason(eng)
                if busy:
                    log.info("restore drills wait: %s", busy)
                    return ran
                lock = self.state.lock("db", org, info.name)
                if not lock.acquire(blocking=False):
                    continue  # being changed right now: next round
                try:
                    result = eng.drill(info.name, wait=0)
                    ran += 1
                    if not result.ok:
                        log.error("org %s: RESTORE DRILL FAILED for %s: %s", org, info.name, result.reason)
                except DrillBusyError:
                    return ran
                except DbosError as exc:
                    log.warning("org %s: restore drill of %s could not run: %s", org, info.name, exc.message)
                finally:
                    lock.release()
        return ran
