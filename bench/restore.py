"""Restore benchmark: our point-in-time restore vs the same restore by hand with the raw tools.

Source: an instance holding ~1M rows written after its base backup (~100+ MB of WAL).
Raw: copy the base backup, write restore_command + recovery_target_time + recovery.signal,
``pg_ctl start -w``, wait until ``pg_is_in_recovery()`` is false (promotion).
Ours: ``LocalEngine.restore_to_new`` (includes forcing/archiving the source's last WAL and
the restored instance's own backup and archive). Same run, medians of BENCH_N (default 3).
Also: our restore after a fresh ``db backup`` (WAL replay bounded). Ends with ``ratio: X.XX``.

Fair conditions for both sides: backups by WAL volume are off here (``PULUMI_DBOS_WAL_BACKUP_MB=0``:
the source's ~170 MB of WAL would start a base backup in the background during the timed runs;
``restore_under_writes.py`` measures what they bring), and before each timed step the engine's warm
pool is given time to refill (ours takes an entry, as a provision does; ``pool_settled``).
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

import psycopg

os.environ["PULUMI_DBOS_WAL_BACKUP_MB"] = "0"  # before the engine is imported (its watcher reads it)
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import chown, cleanup_engine, free_port, median, pg, pool_settled, run_as, tmpdir  # noqa: E402
from pulumi_dbos.engine import LocalEngine, proc  # noqa: E402
from pulumi_dbos.timeutil import to_pg, to_rfc3339  # noqa: E402

N = int(os.environ.get("BENCH_N", "3"))
ROWS = int(os.environ.get("BENCH_ROWS", "1000000"))
PW = "Bench-passw0rd"


def wal_bytes(eng: LocalEngine, name: str) -> int:
    return sum(f.stat().st_size for f in (eng.inst_dir(name) / "archive").iterdir())


def raw_restore(eng: LocalEngine, root: Path, base: str, target: object) -> float:
    eng.pitr.archive_now("src", eng.info("src").port)  # type: ignore[union-attr]  # untimed: WAL in the archive
    d = root / f"raw{time.monotonic_ns()}"
    d.mkdir(mode=0o700)
    chown(d)
    port = free_port()
    ra = run_as()
    archive = eng.inst_dir("src") / "archive"
    t0 = time.perf_counter()
    proc.run(["cp", "-a", base, str(d / "data")], run_as=ra, timeout=600)
    conf = d / "data" / "instance.conf"
    conf.write_text(
        f"port = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{d}'\narchive_mode = off\n"
        f"restore_command = 'cp {archive}/%f %p'\nrecovery_target_time = '{to_pg(target)}'\n"  # type: ignore[arg-type]
        "recovery_target_action = 'promote'\n")
    chown(conf)
    (d / "data" / "recovery.signal").touch()
    chown(d / "data" / "recovery.signal")
    proc.run([pg("pg_ctl"), "start", "-D", str(d / "data"), "-w", "-t", "900", "-s", "-l", str(d / "log")],
             run_as=ra, timeout=960)
    while True:
        with psycopg.connect(host="127.0.0.1", port=port, user="bench_user", password=PW, dbname="postgres") as c:
            if not c.execute("SELECT pg_is_in_recovery()").fetchone()[0]:  # type: ignore[index]
                break
        time.sleep(0.01)
    elapsed = time.perf_counter() - t0
    proc.run([pg("pg_ctl"), "stop", "-D", str(d / "data"), "-m", "immediate", "-w", "-s"], run_as=ra, timeout=60)
    shutil.rmtree(d)
    return elapsed


def ours_restore(eng: LocalEngine, name: str, target: str) -> float:
    t0 = time.perf_counter()
    info = eng.restore_to_new("src", name, target, password=PW)
    with psycopg.connect(host="127.0.0.1", port=info.port, user="bench_user", password=PW, dbname="postgres") as c:
        c.execute("SELECT 1")
    elapsed = time.perf_counter() - t0
    eng.destroy(name)
    return elapsed


def main() -> None:
    root = tmpdir("br")
    eng = LocalEngine(root / "d")
    try:
        info = eng.provision("src", "bench_user", PW)
        with psycopg.connect(host="127.0.0.1", port=info.port, user="bench_user", password=PW,
                             dbname="postgres", autocommit=True) as c:
            c.execute("CREATE TABLE t (id int PRIMARY KEY, payload text)")
            c.execute("INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, %s) g", (ROWS,))
            target = c.execute("SELECT now()").fetchone()[0]  # type: ignore[index]
            c.execute("INSERT INTO t VALUES (-1, 'after the target')")
        base = eng.catalog.backups("src")[0].path
        eng.pitr.archive_now("src", info.port)
        print(f"source: {ROWS} rows, {wal_bytes(eng, 'src') / 1e6:.0f} MB of archived WAL since its base backup")
        raw, ours = [], []
        for i in range(N):
            pool_settled(eng)
            raw.append(raw_restore(eng, root, base, target))
            pool_settled(eng)
            ours.append(ours_restore(eng, f"rst_{i}", to_rfc3339(target)))
        print(f"raw restore (copy, replay, promote): median {median(raw):.2f} s  ("
              + ", ".join(f"{x:.2f}" for x in raw) + ")")
        print(f"engine restore_to_new:               median {median(ours):.2f} s  ("
              + ", ".join(f"{x:.2f}" for x in ours) + ")")
        eng.backup("src")
        after = []
        for i in range(N):
            pool_settled(eng)
            after.append(ours_restore(eng, f"rsb_{i}", "latest"))
        print(f"engine restore after a fresh db backup: median {median(after):.2f} s (WAL replay bounded)")
        print(f"ratio: {median(ours) / median(raw):.2f}")
    finally:
        cleanup_engine(root / "d")
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
