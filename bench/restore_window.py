"""Restore-window benchmark: a point-in-time restore of an instance with N "hours" of WAL under scheduled
backups, against the same restore by hand from one base backup and all that WAL.

Set-up: ``pulumi-dbos serve --backup-interval I`` (I seconds, BENCH_INTERVAL, default 8, stands for an
hour), an instance provisioned through the ``dbos-cloud`` engine, a table ``hot`` (BENCH_HOT_ROWS rows,
default 200k) and an append-only table ``log``. The raw side's base backup is taken with
``pg_basebackup`` (as the cluster user, over the instance's private socket) before any write: untimed.
Then a steady write workload (BENCH_TPS transactions a second, default 5, each updating BENCH_SLICE
rows of ``hot``, default 5000, and appending one ``log`` row) runs for N intervals (BENCH_INTERVALS, default 6) while serve takes its scheduled base backups;
half an interval before the end the target time is noted with the number of ``log`` rows committed
by then. The schedule is then paused (serve restarted with its default hourly interval) so that no
background copy skews either side's timing.

- ours: ``restore_to_new`` through the dbos-cloud engine (HTTPS API, serve's newest base backup
  before the target, WAL replay, promote, the restored instance's own set-up), until an
  authenticated query answers; includes forcing the source's last WAL into the archive.
- raw: the base backup copied into a scratch dir (untimed), ``restore_command`` copying from the
  instance's WAL archive, ``recovery_target_time``, ``recovery.signal``; timed from ``pg_ctl start -w``
  until promoted and an authenticated query answers (replays ALL the WAL since the workload began).

Both restored clusters must hold exactly the ``log`` rows committed before the target (printed; a
mismatch aborts). Same run, medians of BENCH_N (default 3), ours before raw in each round (ours
archives the WAL up to the target). Ends with ``ratio: X.XX`` (ours / raw; target <= 0.5).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT))  # tests.support.serve
from tests.conftest import kill_servers_under  # noqa: E402
from tests.support.serve import Serve, running_serve  # noqa: E402

from _util import chown, free_port, median, pg, run_as, tmpdir  # noqa: E402
from pulumi_dbos.engine import Engine, get_engine, proc  # noqa: E402
from pulumi_dbos.timeutil import to_pg, to_rfc3339  # noqa: E402

N = int(os.environ.get("BENCH_N", "3"))
INTERVALS = int(os.environ.get("BENCH_INTERVALS", "6"))
INTERVAL = float(os.environ.get("BENCH_INTERVAL", "8"))
HOT_ROWS = int(os.environ.get("BENCH_HOT_ROWS", "200000"))
SLICE = int(os.environ.get("BENCH_SLICE", "5000"))  # rows of `hot` updated per transaction (~1.5 MB of WAL)
TPS = float(os.environ.get("BENCH_TPS", "5"))  # the workload's pace: transactions per second
PW = "Bench-passw0rd"
USER = "bench_user"
SRC = "rw_src"


def connect(host: str, port: int, **kw: Any) -> psycopg.Connection[Any]:
    return psycopg.connect(host=host, port=port, user=USER, password=PW, dbname="postgres", connect_timeout=10,
                           **kw)


def instance_dir(serve: Serve, name: str) -> Path:
    found = sorted(serve.data_dir.glob(f"orgs/*/instances/{name}"))
    if len(found) != 1:
        raise SystemExit(f"cannot find instance {name!r} under {serve.data_dir / 'orgs'}: {found}")
    return found[0]


def log_rows(host: str, port: int) -> int:
    with connect(host, port) as c:
        return int(c.execute("SELECT count(*) FROM log").fetchone()[0])  # type: ignore[index]


def wal_bytes(archive: Path) -> int:
    return sum(f.stat().st_size for f in archive.iterdir() if f.is_file())


def raw_base_backup(inst: Path, port: int, dest: Path) -> None:
    """One base backup of the instance before the workload (untimed), as the cluster user."""
    dest.parent.mkdir(mode=0o700, exist_ok=True)
    chown(dest.parent)
    proc.run([pg("pg_basebackup"), "-h", str(inst / "s"), "-p", str(port), "-U", "postgres", "-D", str(dest),
              "-Fp", "-X", "stream", "-c", "fast"], run_as=run_as(), timeout=600)


def workload(host: str, port: int, seconds: float, tail: float | None = None) -> tuple[datetime, int, int]:
    """Steady writes for ``seconds``; returns (target time — ``tail`` seconds before the end, half an
    interval by default —, log rows committed before it, transactions)."""
    target: datetime | None = None
    expected = done = 0
    lo = 0
    with connect(host, port, autocommit=True) as c:
        t_start = time.monotonic()
        t_end = t_start + seconds
        t_target = t_end - (INTERVAL / 2 if tail is None else tail)
        while time.monotonic() < t_end:
            time.sleep(max(0.0, t_start + done / TPS - time.monotonic()))  # steady: TPS, whatever a round took
            with c.transaction():
                c.execute("UPDATE hot SET v = v + 1 WHERE id > %s AND id <= %s", (lo, lo + SLICE))
                c.execute("INSERT INTO log (at) VALUES (clock_timestamp())")
            done += 1
            lo = (lo + SLICE) % HOT_ROWS
            if target is None and time.monotonic() >= t_target:
                # between two commits: every log row up to here is before it, none after
                target = c.execute("SELECT clock_timestamp()").fetchone()[0]  # type: ignore[index]
                expected = done
    if target is None:
        raise SystemExit("the workload ended before its target time")
    return target, expected, done


def ours_restore(eng: Engine, name: str, target: datetime, src: str = SRC) -> tuple[float, int]:
    t0 = time.perf_counter()
    info = eng.restore_to_new(src, name, to_rfc3339(target), password=PW)
    rows = log_rows(info.hostname, info.port)
    elapsed = time.perf_counter() - t0
    eng.destroy(name)
    return elapsed, rows


def raw_restore(root: Path, base: Path, archive: Path, target: datetime, i: int) -> tuple[float, int]:
    d = root / f"raw{i}"
    d.mkdir(mode=0o700)
    chown(d)
    port, ra, data = free_port(), run_as(), d / "data"
    proc.run(["cp", "-a", str(base), str(data)], run_as=ra, timeout=600)  # untimed: the base backup at hand
    conf = data / "instance.conf"  # included by the cluster's postgresql.conf; replaces the instance's own
    conf.write_text(
        f"port = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{d}'\narchive_mode = off\n"
        f"restore_command = 'cp {archive}/%f %p'\nrecovery_target_time = '{to_pg(target)}'\n"
        "recovery_target_action = 'promote'\n")
    chown(conf)
    (data / "recovery.signal").touch()
    chown(data / "recovery.signal")
    try:
        t0 = time.perf_counter()
        proc.run([pg("pg_ctl"), "start", "-D", str(data), "-w", "-t", "900", "-s", "-l", str(d / "log")],
                 run_as=ra, timeout=960)
        while True:
            with connect("127.0.0.1", port) as c:
                if not c.execute("SELECT pg_is_in_recovery()").fetchone()[0]:  # type: ignore[index]
                    rows = int(c.execute("SELECT count(*) FROM log").fetchone()[0])  # type: ignore[index]
                    break
            time.sleep(0.01)
        elapsed = time.perf_counter() - t0
    finally:
        with contextlib.suppress(Exception):
            proc.run([pg("pg_ctl"), "stop", "-D", str(data), "-m", "immediate", "-w", "-s"], run_as=ra, timeout=60)
    shutil.rmtree(d)
    return elapsed, rows


def main() -> None:
    root = tmpdir("bw")
    eng: Engine | None = None
    try:
        with running_serve(backup_interval=INTERVAL) as serve:
            eng = get_engine("dbos-cloud", domain=serve.domain, token=serve.token("bench", "bench"),
                             ca_cert=str(serve.ca_cert))
            info = eng.provision(SRC, USER, PW)
            inst = instance_dir(serve, SRC)
            with connect(info.hostname, info.port, autocommit=True) as c:
                c.execute("CREATE TABLE hot (id int PRIMARY KEY, v int NOT NULL, pad text NOT NULL)")
                c.execute("INSERT INTO hot SELECT g, 0, md5(g::text) FROM generate_series(1, %s) g", (HOT_ROWS,))
                c.execute("CREATE TABLE log (id bigserial PRIMARY KEY, at timestamptz NOT NULL)")
            base = root / "base" / "data"
            raw_base_at = datetime.now(timezone.utc)
            raw_base_backup(inst, info.port, base)
            wal_before = wal_bytes(inst / "archive")
            t0 = time.monotonic()
            target, expected, txns = workload(info.hostname, info.port, INTERVALS * INTERVAL)
            took = time.monotonic() - t0
            backups = sorted((inst / "backups").iterdir())
            starts = [datetime.strptime(b.name, "base-%Y%m%dT%H%M%S%f").replace(tzinfo=timezone.utc)
                      for b in backups if b.name != "base-000"]  # base-000: the template's, at provision
            newest = max((t for t in starts if t < target), default=None)
            # pause the schedule: no background base backup during the timed restores
            serve.stop()
            serve.backup_interval = None
            serve.start()
            print(f"workload: {INTERVALS} intervals of {INTERVAL:g} s (an interval stands for an hour), "
                  f"{took:.0f} s, {txns} transactions, "
                  f"{(wal_bytes(inst / 'archive') - wal_before) / 1e6:.0f} MB of WAL archived; "
                  f"serve's base backups: {len(backups)} (incl. the one at provision)")
            print(f"target {to_rfc3339(target)}: {expected} log rows committed before it")
            print(f"WAL to replay: raw from its base backup {(target - raw_base_at).total_seconds():.0f} s before the "
                  "target; ours from serve's newest base backup before it, started "
                  + (f"{(target - newest).total_seconds():.1f} s before" if newest else "(none scheduled)"))
            ours, raw = [], []
            for i in range(N):
                t, rows_ours = ours_restore(eng, f"rw_r{i}", target)
                ours.append(t)
                t, rows_raw = raw_restore(root, base, inst / "archive", target, i)
                raw.append(t)
                print(f"round {i + 1}: ours {ours[-1]:.2f} s ({rows_ours} rows), raw {raw[-1]:.2f} s "
                      f"({rows_raw} rows)")
                if rows_ours != expected or rows_raw != expected:
                    raise SystemExit(f"row counts differ at the target: expected {expected}, ours {rows_ours}, "
                                     f"raw {rows_raw}")
            print(f"raw (one base backup + all WAL, replay, promote): median {median(raw):.2f} s  ("
                  + ", ".join(f"{x:.2f}" for x in raw) + ")")
            print(f"ours (dbos-cloud engine -> serve, scheduled backups): median {median(ours):.2f} s  ("
                  + ", ".join(f"{x:.2f}" for x in ours) + ")")
            print(f"ratio: {median(ours) / median(raw):.2f}")
    finally:
        close = getattr(eng, "close", None)
        if close is not None:
            with contextlib.suppress(Exception):
                close()  # the engine's HTTP client
        kill_servers_under(root)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
