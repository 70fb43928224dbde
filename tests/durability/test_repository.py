"""Backups that survive the host, a destroy and a crash (issue 29): each test performs one loss on the local
engine, with real servers and the real pgBackRest repository, and counts the committed rows that come back."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from pulumi_dbos.engine import LocalEngine
from pulumi_dbos.engine.local.repo import RepoSettings, Repository
from pulumi_dbos.engine.waits import wait_until
from pulumi_dbos.errors import EngineError

PW = "Durable-pw-123"


def conn(port: int) -> psycopg.Connection:
    return psycopg.connect(host="127.0.0.1", port=port, user="app_user", password=PW, dbname="postgres",
                           autocommit=True, connect_timeout=10)


def insert(port: int, lo: int, hi: int) -> None:
    with conn(port) as c:
        c.execute("CREATE TABLE IF NOT EXISTS t (x int)")
        for x in range(lo, hi + 1):  # one commit each: every acknowledged commit is counted
            c.execute("INSERT INTO t VALUES (%s)", (x,))


def rows(port: int) -> list[int]:
    with conn(port) as c:
        return [r[0] for r in c.execute("SELECT x FROM t ORDER BY x")]


def first_repo_backup(engine: LocalEngine, name: str) -> None:
    """The watcher takes it seconds after the create; wait for it (the restorable window from the
    repository alone starts there)."""
    wait_until(lambda: (engine.catalog.get(name) or engine._require(name)).repo_backup_at is not None, 120,
               f"the first repository backup of {name}")


def lose_host(engine: LocalEngine, name: str) -> None:
    """The host is gone without warning: its server killed (kill -9), its whole data dir removed."""
    pid = engine.server.pid(name)
    assert pid
    os.kill(pid, signal.SIGKILL)
    time.sleep(0.5)
    shutil.rmtree(engine.data_dir)


@pytest.fixture
def durable(engine: LocalEngine) -> tuple[LocalEngine, int]:
    info = engine.provision("dur_db", "app_user", PW)
    first_repo_backup(engine, "dur_db")
    insert(info.port, 1, 200)
    return engine, info.port


def test_destroy_keeps_backups_and_the_instance_restores_by_name(durable: tuple[LocalEngine, int]) -> None:
    engine, port = durable
    engine.destroy("dur_db")
    assert engine.info("dur_db") is None  # gone from the engine ...
    earliest, latest = engine.restore_window("dur_db")  # ... but restorable from the repository
    assert earliest < latest
    back = engine.restore_to_new("dur_db", "dur_back", "latest", password=PW)
    assert rows(back.port) == list(range(1, 201))  # every acknowledged commit, nothing more
    assert back.source_instance == "dur_db" and back.status == "available"
    # the restore is an instance of its own: its own stanza and its own repository backup
    rec = engine.catalog.get("dur_back")
    assert rec is not None and rec.stanza
    first_repo_backup(engine, "dur_back")  # taken by the watcher, as after a provision


def test_destroyed_instance_expires_after_the_deleted_retention(engine: LocalEngine, data_dir: Path) -> None:
    info = engine.provision("exp_db", "app_user", PW)
    first_repo_backup(engine, "exp_db")
    insert(info.port, 1, 5)
    engine.destroy("exp_db")
    repo = engine.repo
    st = [s for s in repo.of_instance("exp_db")]
    assert len(st) == 1 and st[0].keep_until
    # a week later (retention 24 h: kept 168 h by default)
    from datetime import timedelta

    from pulumi_dbos.timeutil import parse_rfc3339
    assert parse_rfc3339(st[0].keep_until) - parse_rfc3339(st[0].destroyed_at or "") >= timedelta(hours=168)
    assert repo.expire_deleted(parse_rfc3339(st[0].keep_until) - timedelta(minutes=1)) == []
    assert repo.expire_deleted(parse_rfc3339(st[0].keep_until) + timedelta(minutes=1)) == [st[0].name]
    assert repo.of_instance("exp_db") == []
    with pytest.raises(EngineError, match="no restorable backup"):
        engine.restore_window("exp_db")


@pytest.mark.parametrize("running", [True, False], ids=["running", "stopped"])
def test_lost_cluster_dir_is_lost_never_half_made(durable: tuple[LocalEngine, int], running: bool) -> None:
    engine, port = durable
    engine.pitr.archive_now("dur_db", port)
    if not running:
        engine.stop("dur_db")
    else:
        pid = engine.server.pid("dur_db")
        assert pid
        os.kill(pid, signal.SIGKILL)  # the disk is gone: so is the server that wrote to it
        time.sleep(0.5)
    shutil.rmtree(engine.inst_dir("dur_db"))
    info = engine.info("dur_db")
    assert info is not None and info.status == "lost"
    assert info.earliest_restorable_time and info.latest_restorable_time  # the window stays
    # a create of the same name (what `pulumi up` does after a refresh) never re-creates it empty
    with pytest.raises(EngineError, match="is lost"):
        engine.takeover("dur_db", None, adopt=True)
    with pytest.raises(EngineError, match="is lost"):
        engine.ensure_running("dur_db")
    repo_stanzas = engine.repo.of_instance("dur_db")
    assert repo_stanzas and repo_stanzas[0].backups  # nothing deleted
    back = engine.recover("dur_db")
    assert back.status == "available" and back.port == port  # where it was
    assert rows(back.port) == list(range(1, 201))


def test_lost_catalog_with_a_running_server_is_registered_not_removed(durable: tuple[LocalEngine, int],
                                                                       data_dir: Path) -> None:
    engine, port = durable
    pid = engine.server.pid("dur_db")
    (data_dir / "catalog.db").unlink()
    fresh = LocalEngine(data_dir)
    info = fresh.info("dur_db")
    assert info is not None and info.status == "lost"
    with pytest.raises(EngineError, match="lost"):  # a provision of that name neither deletes nor re-creates
        fresh.provision("dur_db", "app_user", PW)
    assert engine.server.pid("dur_db") == pid and (engine.pgdata("dur_db") / "PG_VERSION").exists()
    back = fresh.recover("dur_db")
    assert back.status == "available" and fresh.server.pid("dur_db") == pid  # the same server, not a copy
    assert rows(back.port) == list(range(1, 201))


def test_whole_data_dir_lost_restores_from_another_repository(tmp_root: Path) -> None:
    """The data dir and everything in it is gone; the repository (here a posix one on another path: the
    S3 variant is test_s3.py) and the settings are all that is left."""
    repo_dir = tmp_root / "elsewhere"
    settings = RepoSettings(path=repo_dir)
    first = LocalEngine(tmp_root / "d1", repo=settings)
    info = first.provision("dd_db", "app_user", PW)
    first_repo_backup(first, "dd_db")
    insert(info.port, 1, 300)
    acknowledged = 300
    first.pitr.archive_now("dd_db", info.port)
    lose_host(first, "dd_db")
    # a new machine: an empty data dir, only the repository settings
    second = LocalEngine(tmp_root / "d2", repo=settings)
    listed = {i.name: i.status for i in second.list()}
    assert listed == {"dd_db": "lost"}
    back = second.recover("dd_db")
    assert rows(back.port) == list(range(1, acknowledged + 1))
    assert back.username == "app_user"


def test_archived_wal_and_backups_are_fsynced(durable: tuple[LocalEngine, int]) -> None:
    """strace the archiver: every segment pushed into the repository is fsynced (file and directory)."""
    engine, port = durable
    if shutil.which("strace") is None:
        pytest.skip("strace is not installed")
    with conn(port) as c:
        archiver = c.execute("SELECT pid FROM pg_stat_activity WHERE backend_type = 'archiver'").fetchone()
    assert archiver
    out = Path(engine.inst_dir("dur_db")) / "strace.out"
    tracer = subprocess.Popen(["strace", "-f", "-e", "trace=fsync,fdatasync,rename,renameat,renameat2",  # noqa: S603
                               "-o", str(out), "-p", str(archiver[0])])
    try:
        time.sleep(1)
        for _ in range(3):
            engine.pitr.archive_now("dur_db", port)
    finally:
        tracer.terminate()
        tracer.wait(10)
    text = out.read_text()
    assert text.count("fsync(") >= 3, text[-2000:]


def test_repository_settings_stay_out_of_argv_and_environment(durable: tuple[LocalEngine, int],
                                                               tmp_root: Path) -> None:
    engine, port = durable
    repo = Repository(engine.layout, RepoSettings(cipher_pass="Cipher-secret-42"))
    text = repo.render()
    assert "Cipher-secret-42" in text
    cmd = engine.repo.archive_command("x-20260101T0000000000", engine.pgdata("dur_db"))
    assert "secret" not in cmd and "pass" not in cmd
    mode = os.stat(engine.repo.conf).st_mode & 0o777
    assert mode == 0o600


def test_a_port_taken_between_choice_and_bind_is_retried(engine: LocalEngine,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Another process binds the port the engine chose, after the engine checked it was free and before the
    server binds it (the check says free: that is the race): the provision goes on on another port."""
    import socket

    from pulumi_dbos.engine.local import ports

    lo, hi = ports.port_range()
    lo = next(p for p in range(lo, hi - 20) if all(ports.port_free(q) for q in range(p, p + 20)))
    monkeypatch.setenv("PULUMI_DBOS_PORT_RANGE", f"{lo}-{lo + 19}")  # the engine's choice: lo, first free
    thief = socket.socket()
    thief.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as PostgreSQL binds (TIME_WAIT allowed)
    thief.bind(("127.0.0.1", lo))
    thief.listen()
    real_free = ports.port_free
    monkeypatch.setattr(ports, "port_free", lambda p: True if p == lo else real_free(p))
    try:
        info = engine.provision("race_db", "app_user", PW)
    finally:
        thief.close()
    assert info.status == "available" and info.port != lo
    assert rows_or_empty(info.port) == []


def test_default_port_ranges_avoid_the_ephemeral_range(monkeypatch: pytest.MonkeyPatch) -> None:
    """The kernel hands ports of its ephemeral range to outgoing connections at any moment: the engine's
    default ranges (instances, app backends) lie outside it, also when a kernel's range covers them."""
    from pulumi_dbos.engine.local import ports

    monkeypatch.delenv("PULUMI_DBOS_PORT_RANGE", raising=False)
    monkeypatch.delenv("PULUMI_DBOS_APP_BACKEND_PORTS", raising=False)
    elo, ehi = ports.ephemeral_range()
    for lo, hi in (ports.port_range(), ports.backend_ports()):
        assert lo <= hi and (hi < elo or lo > ehi)
    monkeypatch.setattr(ports, "ephemeral_range", lambda: (17000, 60999))  # a kernel tuned wide: narrowed
    assert ports.port_range() == (ports.DEFAULT_PORT_RANGE[0], 16999)
    monkeypatch.setattr(ports, "ephemeral_range", lambda: (1024, 65535))  # nothing left: said, not guessed
    with pytest.raises(EngineError, match="PULUMI_DBOS_PORT_RANGE"):
        ports.port_range()


def rows_or_empty(port: int) -> list[int]:
    with conn(port) as c:
        c.execute("CREATE TABLE IF NOT EXISTS t (x int)")
    return rows(port)


def test_a_killed_backup_leaves_nothing_behind(durable: tuple[LocalEngine, int]) -> None:
    """`pulumi-dbos db backup` killed mid-copy (SIGKILL: no clean-up ran) left its base-… directory; the next
    backup, or the watcher's next round, removes it."""
    engine, port = durable
    cp = subprocess.Popen([sys.executable, "-m", "pulumi_dbos.cli", "db", "backup", "dur_db",  # noqa: S603
                           "--data-dir", str(engine.data_dir)])
    wait_until(lambda: any(d.name.startswith("base-2") for d in engine.layout.backups("dur_db").iterdir()), 60,
               "the backup's directory")
    cp.kill()
    cp.wait()
    proc_children_killed(engine)
    listed = {Path(b.path).name for b in engine.catalog.backups("dur_db")}
    debris = [d.name for d in engine.layout.backups("dur_db").iterdir() if d.name not in listed]
    if not debris:  # it finished before the kill: plant what a kill leaves, to the same effect
        debris = ["base-20260101T000000000000"]
        (engine.layout.backups("dur_db") / debris[0] / "base").mkdir(parents=True)
    wait_until(lambda: not any((engine.layout.backups("dur_db") / d).exists() for d in debris), 30,
               "the watcher removing the killed backup's directory")
    engine.backup("dur_db")  # and backups go on
    assert all(Path(b.path).exists() for b in engine.catalog.backups("dur_db"))


def proc_children_killed(engine: LocalEngine) -> None:
    """The killed CLI's pg_basebackup (its child, now an orphan) ends on its own once its parent is gone; wait."""
    import psutil

    def gone() -> bool:
        return not any("pg_basebackup" in " ".join(p.info["cmdline"] or []) and str(engine.data_dir) in
                       " ".join(p.info["cmdline"] or []) for p in psutil.process_iter(["cmdline"]))

    wait_until(gone, 60, "the killed backup's pg_basebackup exiting", raise_on_timeout=False)
    for p in psutil.process_iter(["cmdline"]):
        if "pg_basebackup" in " ".join(p.info["cmdline"] or []) and str(engine.data_dir) in " ".join(p.info["cmdline"] or []):
            p.kill()


def test_a_dead_watcher_is_started_again_by_a_refresh(durable: tuple[LocalEngine, int]) -> None:
    """The WAL-volume/first-backup watcher killed (OOM, an operator): the next look at the instance (what
    `pulumi refresh` and `pulumi up --refresh` do) starts a new one."""
    import psutil

    engine, _port = durable
    lock = engine.data_dir / "wal-watch.lock"
    wait_until(lambda: lock.exists() and lock.read_text().strip() != "", 30, "a watcher")
    pid = int(lock.read_text().strip())
    os.killpg(pid, signal.SIGKILL)
    wait_until(lambda: not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE, 10,
               "the watcher dying")
    engine.info("dur_db")  # a refresh
    wait_until(lambda: lock.read_text().strip() not in ("", str(pid)) and psutil.pid_exists(int(lock.read_text())),
               30, "a new watcher")


def test_rpo_when_the_host_is_lost_is_bounded_by_archive_timeout(tmp_root: Path) -> None:
    """Commits every 50 ms; the host (server and data dir) is lost without warning; recovered from the
    repository alone, the newest commit back is at most archive_timeout (+ the push's own latency) old."""
    timeout = 5
    settings = RepoSettings(path=tmp_root / "elsewhere", archive_timeout=timeout)
    first = LocalEngine(tmp_root / "d1", repo=settings)
    info = first.provision("rpo_db", "app_user", PW)
    first_repo_backup(first, "rpo_db")
    with conn(info.port) as c:
        c.execute("CREATE TABLE t (x int, at timestamptz DEFAULT clock_timestamp())")
        started = time.monotonic()
        n = 0
        while time.monotonic() - started < 3 * timeout:
            n += 1
            c.execute("INSERT INTO t (x) VALUES (%s)", (n,))
            time.sleep(0.05)
        lost_at = c.execute("SELECT clock_timestamp()").fetchone()[0]
    lose_host(first, "rpo_db")
    second = LocalEngine(tmp_root / "d2", repo=settings)
    back = second.recover("rpo_db")
    with conn(back.port) as c:
        got, newest = c.execute("SELECT count(*), max(at) FROM t").fetchone()
    lag = (lost_at - newest).total_seconds()
    print(f"RPO with archive_timeout={timeout}s: {n - got} of {n} commits lost, the newest back {lag:.1f}s old")
    assert lag <= timeout + 3, f"{n - got} commits lost, the newest back is {lag:.1f}s old"
    rows_back = list(range(1, got + 1))  # a prefix: nothing in the middle is missing
    with conn(back.port) as c:
        assert [r[0] for r in c.execute("SELECT x FROM t ORDER BY x")] == rows_back


def test_a_base_backup_is_fsynced_before_it_is_recorded(durable: tuple[LocalEngine, int]) -> None:
    """`pulumi-dbos db backup` under strace: pg_basebackup syncs the local base (no --no-sync) and pgBackRest
    syncs what it writes into the repository, before the backup is recorded as complete."""
    engine, _port = durable
    if shutil.which("strace") is None:
        pytest.skip("strace is not installed")
    out = engine.data_dir / "strace-backup.out"
    subprocess.run(["strace", "-f", "-qq", "-e", "trace=execve,fsync,fdatasync,syncfs", "-o", str(out),  # noqa: S603,S607
                    sys.executable, "-m", "pulumi_dbos.cli", "db", "backup", "dur_db", "--data-dir",
                    str(engine.data_dir)], check=True, timeout=600, capture_output=True)
    exe: dict[str, str] = {}
    synced: dict[str, int] = {}
    for line in out.read_text().splitlines():
        pid, _, call = line.partition(" ")
        call = call.strip()
        if call.startswith("execve("):
            exe[pid] = call.split('"')[1].rsplit("/", 1)[-1] if '"' in call else "?"
        elif call.startswith(("fsync(", "fdatasync(", "syncfs(")) and "= 0" in call:
            synced[exe.get(pid, "?")] = synced.get(exe.get(pid, "?"), 0) + 1
    assert synced.get("pg_basebackup", 0) >= 1, synced
    assert synced.get("pgbackrest", 0) >= 1, synced


def test_cli_restores_a_destroyed_instance_by_name(durable: tuple[LocalEngine, int]) -> None:
    """`pulumi-dbos db restore SOURCE NEW` of a destroyed instance (its password from $PGPASSWORD), and
    `db list` / `db recover` on a data dir with nothing lost."""
    engine, _port = durable
    engine.destroy("dur_db")
    env = {**os.environ, "PGPASSWORD": PW}
    cp = subprocess.run([sys.executable, "-m", "pulumi_dbos.cli", "db", "restore", "dur_db", "dur_cli",  # noqa: S603
                         "--data-dir", str(engine.data_dir)], capture_output=True, text=True, env=env, timeout=600)
    assert cp.returncode == 0, cp.stderr
    assert "restored from dur_db" in cp.stdout
    assert rows(engine.info("dur_cli").port) == list(range(1, 201))
    cp = subprocess.run([sys.executable, "-m", "pulumi_dbos.cli", "db", "recover", "--data-dir",  # noqa: S603
                         str(engine.data_dir)], capture_output=True, text=True, timeout=600)
    assert cp.returncode == 0 and "no lost instance" in cp.stdout, cp.stdout + cp.stderr
