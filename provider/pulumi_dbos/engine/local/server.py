"""Server control: ``pg_ctl`` start/stop, readiness, kill, crash leftovers, the admin connection.

Administration goes through the instance's Unix socket as the internal bootstrap superuser
``postgres`` with ``peer`` authentication, mapped only from the OS user running the cluster and
from root; ``postgres`` is rejected over TCP.

A server listens on 127.0.0.1, and with a ``listen_host`` (``pulumi-dbos serve --advertise-host``) on
that host too, its pg_hba.conf then also accepting scram-sha-256 from any address. Every start applies
the setting of the engine starting it, so existing instances pick a change up at their next start.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

from ...errors import DbosError, EngineError
from .. import pgbin, proc
from ..files import write_atomic
from ..settings import EngineSettings
from ..waits import wait_until
from .paths import Layout
from .ports import check_listen_host, listen_hosts
from .repo import RepoSettings, Repository

if TYPE_CHECKING:  # psycopg loads on first use: a preview's checks never connect
    import psycopg

ADMIN_ROLE = "postgres"
#: the options of every session the engine opens as the superuser: a search path of ``pg_catalog`` alone.
#: The instance's user owns database ``postgres`` (and the databases it makes) and may ``ALTER DATABASE ...
#: SET search_path`` to a schema of its own holding functions, relations or operators named like the
#: catalog's; a superuser session resolving a name through that path would run them as the superuser.
#: A connection's options override every ``ALTER DATABASE/ROLE ... SET``. The SQL the engine runs as the
#: superuser also names catalog functions and relations with their schema (operators resolve through this path).
#: The same database settings could make the session another role (``SET role``: the tenant's own, so that
#: role repair runs without the rights to repair), read-only, or time out every statement: pinned too.
ADMIN_OPTIONS = ("-c search_path=pg_catalog -c role=none -c default_transaction_read_only=off "
                 "-c statement_timeout=0")
_TRANSIENT = ("starting up", "recovery", "shutting down")
_LISTEN_LINE = re.compile(r"^listen_addresses = .*$", re.MULTILINE)
#: appended to pg_hba.conf while the server listens beyond 127.0.0.1; the template's earlier
#: ``host all postgres all reject`` line still refuses the internal superuser over TCP (first match wins)
REMOTE_HBA = (
    "# pulumi-dbos: listening beyond 127.0.0.1 (serve --advertise-host): TCP from any address, scram only\n"
    "host    all          all       0.0.0.0/0     scram-sha-256\n"
    "host    all          all       ::/0          scram-sha-256\n"
)


def alive(pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False


#: ``PF_EXITING`` in the flags of ``/proc/<pid>/stat`` (include/linux/sched.h): the process is in ``do_exit``
_PF_EXITING = 0x4


def dying(pid: int) -> bool:
    """``pid`` is being killed: a SIGKILL is pending (sent, not yet acted on) or it is already in its exit
    (``PF_EXITING``), before it becomes a zombie. For a moment after ``kill -9`` a postmaster still looks like a
    running ``postgres`` (its status, its command line): a server in that state is not running, and its pid
    file may not be cleared yet (Linux's ``/proc``; elsewhere: never dying)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        flags = int(Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()[6])
    except (OSError, ValueError, IndexError):
        return False
    kill_bit = 1 << (9 - 1)  # SIGKILL
    for line in status.splitlines():
        if line.startswith(("SigPnd:", "ShdPnd:")) and int(line.split()[1], 16) & kill_bit:
            return True
    return bool(flags & _PF_EXITING)


def _shm_attached(shmid: int) -> int:
    """How many processes are attached to System V shared memory segment ``shmid`` (0: none, or gone)."""
    try:
        rows = Path("/proc/sysvipc/shm").read_text().splitlines()
    except OSError:
        return 0
    for row in rows[1:]:
        f = row.split()
        if len(f) > 6 and f[1].isdigit() and int(f[1]) == shmid:  # key shmid perms size cpid lpid nattch ...
            return int(f[6])
    return 0


class Server:
    """Start, stop and reach the cluster of one instance at a time (stateless apart from the layout)."""

    def __init__(self, layout: Layout, listen_host: str | None = None, repo: RepoSettings | None = None,
                 settings: EngineSettings | None = None) -> None:
        self.layout = layout
        self.settings = settings or EngineSettings.from_env()
        self.repo_settings = repo
        self.listen_host = check_listen_host(listen_host) if listen_host else None

    @property
    def listen_line(self) -> str:
        return f"listen_addresses = '{','.join(listen_hosts(self.listen_host))}'"

    def write_conf(self, name: str, port: int, extra: str = "") -> None:
        """``instance.conf``, included by the template's postgresql.conf: port, socket, archiving.

        ``archive_command`` keeps the engine's local fast-path cache (``archive/``, hard-linked by restores)
        and, once the instance has a stanza (``repo``), pushes each segment into the backup repository:
        PostgreSQL recycles a segment only after both succeeded (a failed push is retried, the cached copy
        is not made twice). ``archive_timeout`` bounds the commits lost with the host (``RepoSettings``)."""
        data, archive = self.layout.pgdata(name), self.layout.archive(name)
        cache = f"{{ test -f {archive}/%f || {{ cp %p {archive}/%f.part && mv {archive}/%f.part {archive}/%f; }}; }}"
        stanza = self.layout.stanza(name)
        repo = Repository(self.layout, self.repo_settings)
        command = (cache + (f" && {repo.archive_command(stanza, data)}" if stanza else "")).replace("'", "''")
        text = ("# written by pulumi-dbos; do not edit\n"
                f"port = {port}\n"
                f"{self.listen_line}\n"
                f"unix_socket_directories = '{self.layout.sockdir(name)}'\n"
                "unix_socket_permissions = 0700\n"
                f"cluster_name = 'dbos-{name}'\n"
                f"archive_command = '{command}'\n"
                f"archive_timeout = {repo.settings.archive_timeout}\n"
                # the data dir synced at a recovery's start with one syncfs, not an fsync per file (a restore's
                # ~1,000 files; on copy-on-write filesystems seconds)
                "recovery_init_sync_method = syncfs\n"
                + ("wal_recycle = off\n" if self.shares_wal(name) else "")
                + extra)
        write_atomic(data / "instance.conf", text, 0o600, uid=self._uid(), gid=self._gid())

    def _uid(self) -> int | None:
        return self.layout.run_as.uid if os.geteuid() == 0 and self.layout.run_as.user else None

    def _gid(self) -> int | None:
        return self.layout.run_as.gid if os.geteuid() == 0 and self.layout.run_as.user else None

    def shares_wal(self, name: str) -> bool:
        """Some segment in ``name``'s ``pg_wal`` is still a hard link into an archive (a restore links the
        source's archived segments, ``pitr.recover``). Recycling such a segment would rename it and write
        the next WAL *into the archive's file*, so :meth:`write_conf` says ``wal_recycle = off`` while one
        remains: a checkpoint then deletes old segments (the link, never the archive's copy) instead of
        reusing them, and the links are gone after the first checkpoints of the new timeline."""
        try:
            with os.scandir(self.layout.pgdata(name) / "pg_wal") as it:
                return any(e.is_file(follow_symlinks=False) and e.stat(follow_symlinks=False).st_nlink > 1
                           for e in it)
        except OSError:
            return False

    def _rewrite(self, path: Path, text: str) -> None:
        """Replace ``path`` by a new file (never writing through a hard link into a backup)."""
        write_atomic(path, text, 0o600, uid=self._uid(), gid=self._gid())

    def apply_listen(self, name: str) -> None:
        """Make ``instance.conf`` and ``pg_hba.conf`` say this engine's listen setting (rewritten only on a change)."""
        data = self.layout.pgdata(name)
        for path, edit in ((data / "instance.conf", self._listen_conf), (data / "pg_hba.conf", self._listen_hba)):
            try:
                text = path.read_text()
            except OSError:
                continue  # none yet (written before the first start) or not ours to read: pg_ctl will say
            new = edit(text)
            if new != text:
                self._rewrite(path, new)

    def _listen_conf(self, text: str) -> str:
        return _LISTEN_LINE.sub(self.listen_line, text, count=1)

    def _listen_hba(self, text: str) -> str:
        remote = len(listen_hosts(self.listen_host)) > 1
        return text.replace(REMOTE_HBA, "") + (REMOTE_HBA if remote else "")

    def pid(self, name: str) -> int | None:
        """The postmaster's pid when it runs (its pid file names a live postgres process)."""
        try:
            pid = int((self.layout.pgdata(name) / "postmaster.pid").read_text().split("\n", 1)[0])
            proc_ = psutil.Process(pid)
            running = proc_.status() != psutil.STATUS_ZOMBIE and "postgres" in " ".join(proc_.cmdline())
        except (OSError, ValueError, psutil.Error):
            return None
        return pid if running and not dying(pid) else None

    def running(self, name: str) -> bool:
        return self.pid(name) is not None

    def _failed(self, name: str, timeout: float) -> EngineError:
        return EngineError(
            f"the server of instance {name!r} failed to start (deadline {timeout:.0f}s)\n"
            f"server log:\n{self.layout.log_tail(name)}",
            hint="see the server log above; if the port is taken by another process, set a different port")

    def start(self, name: str, port: int, timeout: float | None = None) -> None:
        """Start the server; wait (polling its socket every 10 ms; pg_ctl -w polls every 100 ms) until ready
        (``timeout``: default the settings' ``start_timeout``)."""
        deadline: float = self.settings.start_timeout if timeout is None else timeout
        self.apply_listen(name)
        try:
            proc.run([pgbin.tool("pg_ctl"), "start", "-D", str(self.layout.pgdata(name)), "-W", "-s",
                      "-l", str(self.layout.server_log(name))], run_as=self.layout.run_as, timeout=60)
        except EngineError as exc:
            raise EngineError(f"the server of instance {name!r} failed to start: {exc.message}\n"
                              f"server log:\n{self.layout.log_tail(name)}", hint="see the server log above") from None
        sockdir = self.layout.sockdir(name)
        sock = sockdir / f".s.PGSQL.{port}"
        waited = 0

        def ready() -> bool:
            import psycopg
            nonlocal waited
            waited += 1
            if sock.exists():
                try:
                    with psycopg.connect(host=str(sockdir), port=port, user=ADMIN_ROLE, dbname="postgres",
                                         connect_timeout=5, sslmode="disable", options=ADMIN_OPTIONS):
                        return True
                except psycopg.OperationalError as exc:
                    transient = any(t in str(exc) for t in _TRANSIENT)
                    if not transient and waited > 100 and not self.running(name):
                        raise self._failed(name, deadline) from None
            elif waited > 50 and not self.running(name):
                raise self._failed(name, deadline)
            return False

        try:
            wait_until(ready, deadline, f"the server of instance {name!r} did not accept connections",
                       hint="set PULUMI_DBOS_START_TIMEOUT to wait longer", interval=0.01)
        except DbosError as exc:
            if "server log:" in exc.message:
                raise
            raise type(exc)(f"{exc.message}\nserver log:\n{self.layout.log_tail(name)}", hint=exc.hint) from None

    def stop(self, name: str, mode: str = "fast", timeout: float = 60) -> None:
        pid = self.pid(name)
        proc.run([pgbin.tool("pg_ctl"), "stop", "-D", str(self.layout.pgdata(name)), "-m", mode, "-w",
                  "-t", str(int(timeout)), "-s"], run_as=self.layout.run_as, timeout=timeout + 15)
        if pid:  # pg_ctl returns once the pid file is gone; wait for the process itself too
            wait_until(lambda: not alive(pid), 10, f"postmaster {pid} exiting", interval=0.02,
                       raise_on_timeout=False)

    def kill(self, name: str) -> None:
        """Stop the server if one runs, however it is (used in clean-ups)."""
        if not self.running(name):
            return
        try:
            self.stop(name, "immediate", 30)
        except DbosError:
            pid = self.pid(name)
            if pid:
                with contextlib.suppress(psutil.Error):
                    psutil.Process(pid).kill()

    def stop_or_kill(self, name: str) -> None:
        if not self.running(name):
            return
        try:
            self.stop(name, "fast", 30)
        except DbosError:
            self.kill(name)

    @contextlib.contextmanager
    def admin(self, name: str, port: int, dbname: str = "postgres") -> Iterator[psycopg.Connection[Any]]:
        """An admin connection over the instance's private Unix socket (peer auth, no password); its search path
        is ``pg_catalog`` alone, whatever the database says (:data:`ADMIN_OPTIONS`)."""
        import psycopg
        try:
            conn = psycopg.connect(host=str(self.layout.sockdir(name)), port=port, user=ADMIN_ROLE,
                                   dbname=dbname, connect_timeout=10, autocommit=True, sslmode="disable",
                                   options=ADMIN_OPTIONS)
        except psycopg.Error as exc:
            raise EngineError(f"cannot reach instance {name!r} over its admin socket: {exc}",
                              hint="is it running? `pulumi-dbos db status NAME`; `pulumi up` starts it") from None
        try:
            yield conn
        finally:
            conn.close()

    def clear_after_crash(self, name: str) -> None:
        """After a postmaster was killed: wait until it has exited, then for its orphaned children (or kill
        them) and for its shared memory to be released, and remove the stale pid file and socket lock, as
        ``pg_ctl start`` expects to find them.

        A postmaster just sent SIGKILL still exists for a moment (:func:`dying`), then lingers as a zombie
        until its parent, usually init, reaps it. PostgreSQL refuses to start while the pid in its pid file
        exists (``kill(pid, 0)`` succeeds for a zombie too: "lock file postmaster.pid already exists"), and
        while a process is still attached to the old shared memory segment named in the pid file ("pre-existing
        shared memory block is still in use"); removing the pid file *before* the killed postmaster and its
        children are gone would start a second set of processes on the same data directory.

        Postgres processes run with the data dir as their working directory, which identifies them
        without confusing instances of the same name in other data dirs.
        """
        if self.running(name):
            return
        pidfile = self.layout.pgdata(name) / "postmaster.pid"
        try:
            lines = pidfile.read_text().split("\n")
            pid = int(lines[0])
        except (OSError, ValueError):
            lines, pid = [], 0
        try:  # line 7: "<shm key> <shm id>"
            shmid = int(lines[6].split()[1])
        except (IndexError, ValueError):
            shmid = -1
        if pid:  # a process still exiting: its memory, and the lock its pid stands for, are not released yet
            wait_until(lambda: not alive(pid), 10, f"postmaster {pid} of {name!r} exiting", interval=0.01,
                       raise_on_timeout=False)
        pgdata = str(self.layout.pgdata(name).resolve())

        def orphans() -> list[psutil.Process]:
            found = []
            for p in psutil.process_iter(["cwd"]):
                with contextlib.suppress(psutil.Error):
                    if p.info["cwd"] == pgdata and p.status() != psutil.STATUS_ZOMBIE:
                        found.append(p)
            return found

        wait_until(lambda: not orphans(), 10, f"orphans of {name!r} exiting", interval=0.01, raise_on_timeout=False)
        for p in orphans():
            with contextlib.suppress(psutil.Error):
                p.kill()
        if shmid >= 0:
            wait_until(lambda: _shm_attached(shmid) == 0, 10, f"the shared memory of {name!r} released",
                       interval=0.01, raise_on_timeout=False)
        with contextlib.suppress(FileNotFoundError):
            pidfile.unlink()
        for stale in self.layout.sockdir(name).glob(".s.PGSQL.*"):
            with contextlib.suppress(FileNotFoundError):
                stale.unlink()
