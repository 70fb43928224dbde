"""Preview environment benchmark: a pull request's database and app, ours vs by hand (issue 22).

Source: instance ``src_db`` whose app database (``greet``, the sample app examples/greet, deployed on it)
holds BENCH_ROWS rows (default 10M: ~1.1 GB with its primary key, a modest production database), then a
base backup (as serve's scheduled backups or `pulumi-dbos db backup` take).
Ours: ``pulumi up`` (the real CLI, a file:// backend) of a pull request's stack whose program is one
``PreviewEnvironment`` (restore of ``src_db`` at ``latest`` + the app deployed on it), until the app answers.
By hand: a fresh instance (the engine's provision, from its warm pool: the by-hand side's fastest way to a
server), ``pg_dump -Fc | pg_restore`` of the app database into it, then the same app deployed by hand as
bench/deploy.py does it (``dbos migrate`` + ``python3 main.py`` with the cached virtualenv, until the port
answers). Both reuse the virtualenv the source's deploy built. Alternating, medians of BENCH_N (default 2);
each PR stack is destroyed (untimed) before the next run. Ends with ``ratio: X.XX`` (target <= 0.5). Ours is
~20 s of pulumi and a deploy plus a physical copy that grows slowly with the size; by hand grows with the data
(a logical copy and an index rebuild): 0.31 at 10M rows, 0.61 at 3M, ~1.5 at 10k rows (by hand wins).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import psycopg
from pulumi import automation as auto

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _util import cleanup_engine, median, pg, tmpdir  # noqa: E402
from deploy import APP, PW, REPO, by_hand, deploy, ensure_db  # noqa: E402
from pulumi_dbos.engine import LocalEngine  # noqa: E402
from pulumi_dbos.engine.contract import AppDatabaseAccess  # noqa: E402

N = int(os.environ.get("BENCH_N", "2"))
ROWS = int(os.environ.get("BENCH_ROWS", "10000000"))

PROGRAM = """
import pulumi
import pulumi_dbos as dbos
cfg = pulumi.Config()
env = dbos.PreviewEnvironment("preview", source_instance="src_db", pr_number=cfg.require("pr"),
                              app_source=cfg.require("app"), password=cfg.require_secret("pw"))
pulumi.export("app_url", env.app_url)
"""


def pr_stack(root: Path, src: Path, number: int) -> auto.Stack:
    work = root / "proj"
    if not work.exists():
        work.mkdir()
        (work / "Pulumi.yaml").write_text(
            f'{{"name": "prbench", "runtime": {{"name": "python", "options": {{"virtualenv": "{sys.prefix}"}}}}}}')
        (work / "__main__.py").write_text(textwrap.dedent(PROGRAM))
        (root / "backend").mkdir()
    env = {"PULUMI_BACKEND_URL": f"file://{root / 'backend'}", "PULUMI_CONFIG_PASSPHRASE": "bench-throwaway",
           "PULUMI_SKIP_UPDATE_CHECK": "true", "PULUMI_HOME": str(root / "pulumi-home")}
    s = auto.create_or_select_stack(f"pr-{number}", work_dir=str(work), opts=auto.LocalWorkspaceOptions(env_vars=env))
    for key, value in (("dbos:dataDir", str(root / "d")), ("pr", str(number)), ("app", str(src))):
        s.set_config(key, auto.ConfigValue(value))
    s.set_config("pw", auto.ConfigValue(PW, secret=True))
    return s


def ours(root: Path, src: Path, number: int) -> float:
    stack = pr_stack(root, src, number)
    t0 = time.perf_counter()
    up = stack.up(on_output=lambda _: None)
    httpx.get(up.outputs["app_url"].value, timeout=30).raise_for_status()
    elapsed = time.perf_counter() - t0
    stack.destroy(on_output=lambda _: None)
    stack.workspace.remove_stack(stack.name)
    return elapsed


def copy_by_hand(eng: LocalEngine, source: AppDatabaseAccess, name: str, version: str) -> float:
    """Fresh instance + ``pg_dump -Fc | pg_restore`` of the app database + the app deployed by hand."""
    t0 = time.perf_counter()
    info = eng.provision(name, "bench_user", PW)
    fresh = AppDatabaseAccess(name, info.hostname, info.port, "bench_user", PW)
    ensure_db(fresh, ["byhand", "byhand_dbos_sys"])  # by_hand's database names
    env = {**os.environ, "PGPASSWORD": PW, "PGUSER": "bench_user", "PGHOST": "127.0.0.1"}
    dump = subprocess.Popen([pg("pg_dump"), "-Fc", "-p", str(source.port), "-d", APP],  # noqa: S603
                            stdout=subprocess.PIPE, env=env)
    restore = subprocess.run([pg("pg_restore"), "--no-owner", "-p", str(info.port), "-d", "byhand"],  # noqa: S603
                             stdin=dump.stdout, env=env, capture_output=True, timeout=1800, check=False)
    if dump.stdout is not None:
        dump.stdout.close()
    if dump.wait(timeout=1800) != 0 or restore.returncode != 0:
        raise RuntimeError(f"pg_dump | pg_restore failed: {restore.stderr.decode(errors='replace')[-2000:]}")
    copied = time.perf_counter() - t0
    started = by_hand(eng, fresh, version)
    eng.destroy(name)
    print(f"  by hand: provision + dump/restore {copied:.1f} s, deploy by hand {started:.1f} s")
    return copied + started


def main() -> None:
    root = tmpdir("bp")
    eng = LocalEngine(root / "d")
    src = root / APP
    shutil.copytree(REPO / "examples" / APP, src, ignore=shutil.ignore_patterns("__pycache__"))
    try:
        info = eng.provision("src_db", "bench_user", PW)
        source = AppDatabaseAccess("src_db", info.hostname, info.port, "bench_user", PW)
        _, version, _ = deploy(eng, src, source)  # the source app; builds the virtualenv (uv), not counted
        with psycopg.connect(host="127.0.0.1", port=info.port, user="bench_user", password=PW, dbname=APP,
                             autocommit=True) as c:
            c.execute("CREATE TABLE items (id bigint PRIMARY KEY, payload text, at timestamptz DEFAULT now())")
            c.execute("INSERT INTO items (id, payload) SELECT g, md5(g::text) FROM generate_series(1, %s) g",
                      (ROWS,))
            size = c.execute("SELECT pg_database_size(current_database())").fetchone()[0]  # type: ignore[index]
        eng.backup("src_db")
        print(f"source: {ROWS} rows in database {APP!r} ({size / 1e6:.0f} MB), a base backup after loading")
        raw, mine = [], []
        for i in range(N):
            raw.append(copy_by_hand(eng, source, f"byhand_{i}", version))
            mine.append(ours(root, src, i + 1))
            print(f"  run {i + 1}: by hand {raw[-1]:.1f} s, pulumi up of the PR stack {mine[-1]:.1f} s")
        print(f"by hand (fresh instance + pg_dump | pg_restore + dbos migrate + start): median {median(raw):.1f} s")
        print(f"pulumi up of a PR stack (PreviewEnvironment) until the app answers: median {median(mine):.1f} s")
        print(f"ratio: {median(mine) / median(raw):.2f}")
    finally:
        with contextlib.suppress(Exception):
            eng.apps.delete(APP)
        cleanup_engine(root / "d")
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
