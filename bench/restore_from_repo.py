"""Restore from the backup repository alone: the data dir wiped (a lost host), the instance comes back from an
S3 repository (SeaweedFS over TLS on 127.0.0.1, as in the tests) — ours vs the same restore by hand with
pgBackRest in the same run.

Source: an instance with BENCH_ROWS rows (default 300k) written after its first repository backup, so the
restore replays that WAL. Then its server is killed and its data dir removed.
Raw: ``pgbackrest restore`` (the same configuration file, into an empty directory) + ``pg_ctl start`` + wait
until ``pg_is_in_recovery()`` is false (promoted at the end of the archive).
Ours: ``LocalEngine.recover`` on a new, empty data dir given only the repository settings (it learns what
the repository holds, restores, starts, waits for the promotion, registers the instance).
Medians of BENCH_N (default 3), alternating. Ends with ``ratio: X.XX`` (target ≤ 1.1: only our overhead).
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import time
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT))
from tests.support.s3 import seaweedfs  # noqa: E402

from _util import chown, free_port, median, pg, run_as, tmpdir  # noqa: E402
from pulumi_dbos.engine import LocalEngine, proc  # noqa: E402
from pulumi_dbos.engine.local.repo import RepoSettings  # noqa: E402
from pulumi_dbos.engine.waits import wait_until  # noqa: E402

N = int(os.environ.get("BENCH_N", "3"))
ROWS = int(os.environ.get("BENCH_ROWS", "300000"))
PW = "Bench-passw0rd"


def raw_restore(conf: Path, stanza: str, root: Path) -> float:
    d = root / f"raw{time.monotonic_ns()}"
    d.mkdir(mode=0o700)
    chown(d)
    (d / "data").mkdir(mode=0o700)
    chown(d / "data")
    port = free_port()
    ra = run_as()
    t0 = time.perf_counter()
    proc.run(["pgbackrest", f"--config={conf}", f"--stanza={stanza}", f"--pg1-path={d / 'data'}", "restore"],
             run_as=ra, timeout=900)
    inst = d / "data" / "instance.conf"  # the restored postgresql.conf includes it: port, socket, no archiving
    inst.write_text(f"port = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{d}'\n"
                    "archive_mode = off\n")
    chown(inst)
    try:
        proc.run([pg("pg_ctl"), "start", "-D", str(d / "data"), "-w", "-t", "900", "-s", "-l", str(d / "log")],
                 run_as=ra, timeout=960)
    except Exception:
        print((d / "log").read_text()[-3000:])
        raise
    while True:
        try:
            with psycopg.connect(host="127.0.0.1", port=port, user="bench_user", password=PW,
                                 dbname="postgres") as c:
                if not c.execute("SELECT pg_is_in_recovery()").fetchone()[0]:  # type: ignore[index]
                    break
        except psycopg.OperationalError:
            pass
        time.sleep(0.01)
    elapsed = time.perf_counter() - t0
    proc.run([pg("pg_ctl"), "stop", "-D", str(d / "data"), "-m", "immediate", "-w", "-s"], run_as=ra, timeout=60)
    shutil.rmtree(d)
    return elapsed


def ours_restore(settings: RepoSettings, root: Path, i: int) -> float:
    data_dir = root / f"new{i}"
    t0 = time.perf_counter()
    eng = LocalEngine(data_dir, repo=settings)
    info = eng.recover("src")
    with psycopg.connect(host="127.0.0.1", port=info.port, user="bench_user", password=PW, dbname="postgres") as c:
        c.execute("SELECT 1")
    elapsed = time.perf_counter() - t0
    # the next round restores the same point again: this one must not archive into the stanza meanwhile
    pid = eng.server.pid("src")
    if pid:
        os.kill(pid, signal.SIGKILL)
    time.sleep(0.3)
    shutil.rmtree(data_dir, ignore_errors=True)
    return elapsed


def main() -> None:
    root = tmpdir("brr")
    try:
        with seaweedfs(root / "s3") as s3:
            settings = RepoSettings.from_mapping({"s3": s3.settings("/bench")})
            first = LocalEngine(root / "d", repo=settings)
            info = first.provision("src", "bench_user", PW)
            wait_until(lambda: first.catalog.get("src").repo_backup_at is not None, 300,  # type: ignore[union-attr]
                       "the first repository backup")
            with psycopg.connect(host="127.0.0.1", port=info.port, user="bench_user", password=PW,
                                 dbname="postgres", autocommit=True) as c:
                c.execute("CREATE TABLE t (id int PRIMARY KEY, payload text)")
                c.execute("INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, %s) g", (ROWS,))
            first.pitr.archive_now("src", info.port)
            stanza = first.catalog.get("src").stanza  # type: ignore[union-attr]
            conf = root / "pgbackrest.conf"
            rawpb = root / "rawpb"  # the raw side's spool, lock and log dirs (the engine's go with its data dir)
            rawpb.mkdir()
            chown(rawpb)
            # the raw side's configuration: the same repository
            conf.write_text(first.repo.conf.read_text().replace(str(first.repo.dir), str(rawpb)))
            conf.chmod(0o600)
            chown(conf)
            # the host is lost: server killed, data dir gone; the watcher stops with it
            os.kill(first.server.pid("src") or 0, signal.SIGKILL)
            time.sleep(0.5)
            shutil.rmtree(root / "d")
            print(f"source: {ROWS} rows written after its repository backup; data dir wiped; S3 at {s3.endpoint}")
            raw, ours = [], []
            for i in range(N):
                raw.append(raw_restore(conf, str(stanza), root))
                ours.append(ours_restore(settings, root, i))
            print(f"raw pgbackrest restore + start + promotion: median {median(raw):.2f} s  ("
                  + ", ".join(f"{x:.2f}" for x in raw) + ")")
            print(f"engine recover (repository alone):         median {median(ours):.2f} s  ("
                  + ", ".join(f"{x:.2f}" for x in ours) + ")")
            print(f"ratio: {median(ours) / median(raw):.2f}")
    finally:
        from _util import cleanup_engine

        for d in sorted(root.glob("new*")) + [root / "d"]:
            cleanup_engine(d)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
