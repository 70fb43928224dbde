"""Provision benchmark: our engine vs raw ``initdb`` + ``pg_ctl start`` + first connection.

Both end when an authenticated TCP connection with the user's password succeeds.
The engine's one-time template (made once per data dir and Postgres version) is
built before timing starts, and before each timed step (ours or raw) the engine's warm pool is given
time to refill (``PULUMI_DBOS_POOL_SIZE``; its copies, made in the background, would otherwise slow
whichever side runs next): ours is a provision from a full pool, the steady state of provisions a few
seconds apart (a burst larger than the pool copies the template, as with no pool). Also reports `pulumi up` wall time for 5 instances.
Ends with ``ratio: X.XX`` (ours / raw, medians).
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import chown, cleanup_engine, free_port, median, pg, pool_settled, run_as, tmpdir  # noqa: E402
from pulumi_dbos.engine import LocalEngine, proc  # noqa: E402

N = int(os.environ.get("BENCH_N", "7"))
PW = "Bench-passw0rd"


def raw_once(root: Path) -> float:
    d = root / f"raw{time.monotonic_ns()}"
    d.mkdir(mode=0o700)
    chown(d)
    pwfile = d / "pw"
    pwfile.write_text(PW)
    os.chmod(pwfile, 0o600)
    chown(pwfile)
    port = free_port()
    ra = run_as()
    t0 = time.perf_counter()
    proc.run([pg("initdb"), "-D", str(d / "data"), "-U", "bench_user", "--pwfile", str(pwfile),
              "-A", "scram-sha-256", "-E", "UTF8", "--no-locale", "--no-instructions"], run_as=ra, timeout=300)
    proc.run([pg("pg_ctl"), "start", "-D", str(d / "data"), "-w", "-s", "-l", str(d / "log"),
              "-o", f"-p {port} -k {d} -c listen_addresses=127.0.0.1"], run_as=ra, timeout=120)
    with psycopg.connect(host="127.0.0.1", port=port, user="bench_user", password=PW, dbname="postgres") as c:
        c.execute("SELECT 1")
    elapsed = time.perf_counter() - t0
    proc.run([pg("pg_ctl"), "stop", "-D", str(d / "data"), "-m", "immediate", "-w", "-s"], run_as=ra, timeout=60)
    shutil.rmtree(d)
    return elapsed


def ours_once(eng: LocalEngine, i: int) -> float:
    t0 = time.perf_counter()
    info = eng.provision(f"bench_{i}", "bench_user", PW)
    with psycopg.connect(host="127.0.0.1", port=info.port, user="bench_user", password=PW, dbname="postgres") as c:
        c.execute("SELECT 1")
    elapsed = time.perf_counter() - t0
    eng.destroy(f"bench_{i}")
    return elapsed


def pulumi_up_5(root: Path) -> float | None:
    if shutil.which("pulumi") is None:
        print("pulumi up x5: skipped (no pulumi CLI on PATH; run through `make bench`)")
        return None
    from pulumi import automation as auto

    work = root / "proj"
    work.mkdir()
    (root / "backend").mkdir()
    (work / "Pulumi.yaml").write_text(
        f'{{"name": "bench5", "runtime": {{"name": "python", "options": {{"virtualenv": "{sys.prefix}"}}}}}}')
    (work / "__main__.py").write_text(
        "import pulumi, pulumi_dbos as dbos\n"
        "for i in range(5):\n"
        f"    dbos.DatabaseInstance(f'b{{i}}', instance_name=f'bench5_{{i}}', username='bench_user', password='{PW}')\n")
    env = {"PULUMI_BACKEND_URL": f"file://{root / 'backend'}", "PULUMI_CONFIG_PASSPHRASE": "bench-throwaway",
           "PULUMI_SKIP_UPDATE_CHECK": "true"}
    stack = auto.create_or_select_stack("bench", work_dir=str(work), opts=auto.LocalWorkspaceOptions(env_vars=env))
    stack.set_config("dbos:dataDir", auto.ConfigValue(str(root / "d")))
    t0 = time.perf_counter()
    stack.up(on_output=lambda _: None)
    elapsed = time.perf_counter() - t0
    stack.destroy(on_output=lambda _: None)
    return elapsed


def main() -> None:
    root = tmpdir("bp")
    eng = LocalEngine(root / "d")
    try:
        eng.template()
        ours_once(eng, 999)  # warm-up (page cache), not counted
        raw, ours = [], []
        for i in range(N):
            pool_settled(eng)
            raw.append(raw_once(root))
            pool_settled(eng)
            ours.append(ours_once(eng, i))
        print(f"raw initdb+start+connect: median {median(raw) * 1000:.0f} ms  (n={N}: "
              + ", ".join(f"{x * 1000:.0f}" for x in raw) + ")")
        print(f"warm pool: {eng.pool_size} entries (PULUMI_DBOS_POOL_SIZE)")
        print(f"engine provision+connect: median {median(ours) * 1000:.0f} ms  (n={N}: "
              + ", ".join(f"{x * 1000:.0f}" for x in ours) + ")")
        up_root = tmpdir("bq")
        try:
            up5 = pulumi_up_5(up_root)
        finally:
            cleanup_engine(up_root / "d")
            shutil.rmtree(up_root, ignore_errors=True)
        if up5 is not None:
            print(f"pulumi up, 5 instances: {up5:.1f} s wall")
        print(f"ratio: {median(ours) / median(raw):.2f}")
    finally:
        cleanup_engine(root / "d")
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
