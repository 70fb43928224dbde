"""Scale benchmark.

1. `pulumi preview` with no changes on a stack of 30 resources (20 instances + 10 apps) against
   the same stack shape built from a trivial dynamic provider that does no I/O (Noop), same run,
   medians of BENCH_N (default 3). Target ≤ 1.2×: preview does no database round-trips.
2. `pulumi up` creating 10 instances: wall time against 10× one engine provision.
Ends with ``ratio: X.XX`` (the preview ratio).
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pulumi import automation as auto  # noqa: E402

from _util import cleanup_engine, median, tmpdir  # noqa: E402
from pulumi_dbos.engine import LocalEngine  # noqa: E402

N = int(os.environ.get("BENCH_N", "3"))
PW = "Bench-passw0rd"

REAL = f"""
import pulumi, pulumi_dbos as dbos
n = int(pulumi.Config().get("n") or 20)
apps = int(pulumi.Config().get("apps") or 10)
insts = [dbos.DatabaseInstance(f"i{{i}}", instance_name=f"sc_{{i}}", username="bench_user", password="{PW}")
         for i in range(n)]
for j in range(apps):
    dbos.AppDatabase(f"a{{j}}", app_name=f"app_{{j}}", instance=insts[j % n])
"""

NOOP = """
import pulumi
from tests.support.noop import Noop
n = int(pulumi.Config().get("n") or 20)
apps = int(pulumi.Config().get("apps") or 10)
insts = [Noop(f"i{i}", value=f"sc_{i}") for i in range(n)]
for j in range(apps):
    Noop(f"a{j}", value=insts[j % n].value.apply(lambda v: v + "_app"))
"""


def stack(root: Path, name: str, program: str) -> auto.Stack:
    work = root / name
    work.mkdir()
    (work / "Pulumi.yaml").write_text(
        f'{{"name": "{name}", "runtime": {{"name": "python", "options": {{"virtualenv": "{sys.prefix}"}}}}}}')
    (work / "__main__.py").write_text(program)
    env = {"PULUMI_BACKEND_URL": f"file://{root / 'backend'}", "PULUMI_CONFIG_PASSPHRASE": "bench-throwaway",
           "PULUMI_SKIP_UPDATE_CHECK": "true",
           "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}  # tests.support.noop
    s = auto.create_or_select_stack("bench", work_dir=str(work), opts=auto.LocalWorkspaceOptions(env_vars=env))
    s.set_config("dbos:dataDir", auto.ConfigValue(str(root / "d")))
    return s


def timed(fn: object) -> float:
    t0 = time.perf_counter()
    fn()  # type: ignore[operator]
    return time.perf_counter() - t0


def main() -> None:
    root = tmpdir("bs")
    (root / "backend").mkdir()
    try:
        real, noop = stack(root, "real", REAL), stack(root, "noop", NOOP)
        t_up = timed(lambda: real.up(on_output=lambda _: None))
        noop.up(on_output=lambda _: None)
        rp, np_ = [], []
        for _ in range(N):
            rp.append(timed(lambda: real.preview(on_output=lambda _: None)))
            np_.append(timed(lambda: noop.preview(on_output=lambda _: None)))
        print(f"initial pulumi up of 20 instances + 10 apps: {t_up:.1f} s")
        print(f"preview, no changes, 30 resources: ours median {median(rp):.2f} s, no-I/O provider "
              f"median {median(np_):.2f} s")
        real.destroy(on_output=lambda _: None)

        # pulumi up creating 10 instances vs 10x a single engine provision
        eng = LocalEngine(root / "d")
        singles = []
        for i in range(5):
            os.sync()  # start each from a quiet disk (the destroy above leaves writeback behind)
            t0 = time.perf_counter()
            eng.provision(f"single_{i}", "bench_user", PW)
            singles.append(time.perf_counter() - t0)
            eng.destroy(f"single_{i}")
        real.set_config("n", auto.ConfigValue("10"))
        real.set_config("apps", auto.ConfigValue("0"))
        os.sync()
        t10 = timed(lambda: real.up(on_output=lambda _: None))
        print(f"pulumi up creating 10 instances: {t10:.1f} s wall vs 10x single provision "
              f"{10 * median(singles):.1f} s ({10 * median(singles) / t10:.2f}x from parallelism, "
              "pulumi overhead included)")
        real.destroy(on_output=lambda _: None)
        print(f"ratio: {median(rp) / median(np_):.2f}")
    finally:
        cleanup_engine(root / "d")
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
