"""Restore-under-writes benchmark: a point-in-time restore near the end of a steady write load on the
embedded ``local`` engine (no serve, no scheduled backups: only the engine's own base backups by WAL
volume, ``PULUMI_DBOS_WAL_BACKUP_MB``, default 128), against the same restore by hand from one base
backup and all the WAL.

Set-up: an instance provisioned by ``LocalEngine``, a table ``hot`` (BENCH_HOT_ROWS rows, default
200k) and an append-only table ``log``. The raw side's base backup is taken with ``pg_basebackup`` (as
the cluster user, over the instance's private socket) before any write: untimed. Then a steady write
load (BENCH_TPS transactions a second, default 5, each updating BENCH_SLICE rows of ``hot``, default
5000, ~1.5 MB of WAL, and appending one ``log`` row) runs for BENCH_SECONDS (default 90); BENCH_TAIL
seconds (default 5) before its end the target time is noted with the number of ``log`` rows committed
by then. Before timing, the engine's WAL watcher is let finish a backup it may have started.

- ours: ``restore_to_new`` (the newest base backup before the target, linked WAL, replay, promote, the
  restored instance's own set-up) until an authenticated query answers; includes forcing the
  source's last WAL into the archive.
- raw: the base backup copied into a scratch dir (untimed), ``restore_command`` copying from the
  instance's WAL archive, ``recovery_target_time``, ``recovery.signal``; timed from ``pg_ctl start -w``
  until promoted and an authenticated query answers (replays ALL the WAL since the load began).

Both restored clusters must hold exactly the ``log`` rows committed before the target (a mismatch
aborts). Medians of BENCH_N (default 3), ours before raw in each round. Ends with ``ratio: X.XX``
(ours / raw; target <= 0.3).
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import cleanup_engine, median, pool_settled, tmpdir  # noqa: E402
from pulumi_dbos.engine import LocalEngine  # noqa: E402
from pulumi_dbos.engine.local import autobackup  # noqa: E402
from pulumi_dbos.engine.local.pitr import instance_lock  # noqa: E402
from pulumi_dbos.timeutil import to_rfc3339  # noqa: E402
from restore_window import (  # noqa: E402
    HOT_ROWS,
    PW,
    USER,
    connect,
    ours_restore,
    raw_base_backup,
    raw_restore,
    workload,
)

N = int(os.environ.get("BENCH_N", "3"))
SECONDS = float(os.environ.get("BENCH_SECONDS", "90"))
TAIL = float(os.environ.get("BENCH_TAIL", "5"))
SRC = "uw_src"


def settle(eng: LocalEngine) -> None:
    """Until no WAL-volume backup is due or running (none may run during a timed restore), by the
    watcher's own rule (``autobackup.limit_for``: the threshold, or the newest backup's size if larger),
    and the warm pool is full again (``pool_settled``)."""
    t0 = time.monotonic()
    while time.monotonic() < t0 + 120:
        if autobackup.wal_since_backup(eng.layout, eng.catalog, SRC) < autobackup.limit_for(eng.catalog, SRC):
            with instance_lock(eng.layout, SRC, 60) as free:
                if free:
                    break
        time.sleep(0.5)
    else:
        print("  (settle: a backup by WAL volume still looked due after 120 s)")
    pool_settled(eng)


def main() -> None:
    root = tmpdir("bu")
    eng = LocalEngine(root / "d")
    try:
        info = eng.provision(SRC, USER, PW)
        inst = eng.inst_dir(SRC)
        with connect(info.hostname, info.port, autocommit=True) as c:
            c.execute("CREATE TABLE hot (id int PRIMARY KEY, v int NOT NULL, pad text NOT NULL)")
            c.execute("INSERT INTO hot SELECT g, 0, md5(g::text) FROM generate_series(1, %s) g", (HOT_ROWS,))
            c.execute("CREATE TABLE log (id bigserial PRIMARY KEY, at timestamptz NOT NULL)")
        base = root / "base" / "data"
        raw_base_backup(inst, info.port, base)
        backups_before = len(eng.catalog.backups(SRC))
        t0 = time.monotonic()
        target, expected, txns = workload(info.hostname, info.port, SECONDS, TAIL)
        took = time.monotonic() - t0
        settle(eng)
        backups = eng.catalog.backups(SRC)
        archived = sum(f.stat().st_size for f in (inst / "archive").iterdir() if f.is_file())
        newest = eng.pitr.base_for(SRC, target)
        print(f"workload: {took:.0f} s, {txns} transactions, {archived / 1e6:.0f} MB of WAL archived; "
              f"base backups by WAL volume (every {autobackup.threshold_mb()} MB): {len(backups) - backups_before}")
        print(f"target {to_rfc3339(target)}: {expected} log rows committed before it; "
              f"ours restores from {newest.backup_id} (started {newest.started_at}), raw from before the load")
        ours, raw = [], []
        for i in range(N):
            settle(eng)
            t, rows_ours = ours_restore(eng, f"uw_r{i}", target, SRC)
            ours.append(t)
            settle(eng)
            t, rows_raw = raw_restore(root, base, inst / "archive", target, i)
            raw.append(t)
            print(f"round {i + 1}: ours {ours[-1]:.2f} s ({rows_ours} rows), raw {raw[-1]:.2f} s ({rows_raw} rows)")
            if rows_ours != expected or rows_raw != expected:
                raise SystemExit(f"row counts differ at the target: expected {expected}, ours {rows_ours}, "
                                 f"raw {rows_raw}")
        print(f"raw (one base backup + all WAL, replay, promote): median {median(raw):.2f} s  ("
              + ", ".join(f"{x:.2f}" for x in raw) + ")")
        print(f"ours (local engine, base backups by WAL volume): median {median(ours):.2f} s  ("
              + ", ".join(f"{x:.2f}" for x in ours) + ")")
        print(f"ratio: {median(ours) / median(raw):.2f}")
    finally:
        cleanup_engine(root / "d")
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
