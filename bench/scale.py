"""Scale benchmark.

1. `pulumi preview` with no changes on a stack of 30 resources (20 instances + 10 apps) against
   the same stack shape built from a trivial dynamic provider that does no I/O (Noop: one property
   per resource), same run, medians of BENCH_N (default 7: single previews vary by ±15%), previews interleaved:
   - on the ``local`` engine (target ≤ 1.05×: preview does no database round-trips);
   - on the ``dbos-cloud`` engine against a ``pulumi-dbos serve`` on this machine (DBOS Cloud's API over
     HTTPS; the token a secret config value set through stdin), printed as ``ratio (dbos-cloud
     preview): X.XX`` (target ≤ 1.3×: one list call per provider process, not one per resource);
   - and, as a second baseline, a no-I/O provider registering exactly our resources' properties
     (``Mirror``: same inputs, defaults, secrets and outputs, from the same field lists), printed as
     ``ratio (local, vs no-I/O with the same properties): X.XX``: what our provider itself costs, apart
     from Pulumi's handling of larger property sets (``ratio (same properties vs Noop)``).
2. `pulumi up` creating 10 instances (local engine): wall time against 10× one engine provision.
Ends with ``ratio: X.XX``: the LOCAL engine's preview ratio, as before (the dbos-cloud figure is the line
above it). BENCH_CLOUD=0 skips the dbos-cloud part.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT))  # tests.support.serve
from pulumi import automation as auto  # noqa: E402

from _util import cleanup_engine, median, tmpdir  # noqa: E402
from pulumi_dbos.engine import LocalEngine  # noqa: E402

N = int(os.environ.get("BENCH_N", "7"))
CLOUD = os.environ.get("BENCH_CLOUD", "1") != "0"
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

MIRROR = f"""
import pulumi
from tests.support.noop import Mirror
n = int(pulumi.Config().get("n") or 20)
apps = int(pulumi.Config().get("apps") or 10)
engine = {{"engine": "local", "data_dir": "/tmp/mirror", "run_as": "postgres"}}
insts = [Mirror(f"i{{i}}", "DatabaseInstance", {{**engine, "instance_name": f"sc_{{i}}", "username": "bench_user",
                                             "password": "{PW}", "owner": f"real/bench/i{{i}}#0123456789ab"}})
         for i in range(n)]
for j in range(apps):
    i = insts[j % n]
    Mirror(f"a{{j}}", "AppDatabase", {{"app_name": f"app_{{j}}", "owner": f"real/bench/a{{j}}#0123456789ab",
                                     "instance_name": i.instance_name, "instance_host": i.hostname,
                                     "instance_port": i.port, "instance_user": i.username,
                                     "instance_password": i.password}})
"""


def stack_env(root: Path) -> dict[str, str]:
    return {"PULUMI_BACKEND_URL": f"file://{root / 'backend'}", "PULUMI_CONFIG_PASSPHRASE": "bench-throwaway",
            "PULUMI_SKIP_UPDATE_CHECK": "true", "PYTHONPATH": str(ROOT)}  # tests.support.noop


def stack(root: Path, name: str, program: str, data_dir: bool = True) -> auto.Stack:
    work = root / name
    work.mkdir()
    (work / "Pulumi.yaml").write_text(
        f'{{"name": "{name}", "runtime": {{"name": "python", "options": {{"virtualenv": "{sys.prefix}"}}}}}}')
    (work / "__main__.py").write_text(program)
    s = auto.create_or_select_stack("bench", work_dir=str(work),
                                    opts=auto.LocalWorkspaceOptions(env_vars=stack_env(root)))
    if data_dir:
        s.set_config("dbos:dataDir", auto.ConfigValue(str(root / "d")))
    return s


@contextlib.contextmanager
def cloud_stack(root: Path) -> Iterator[auto.Stack | None]:
    """The REAL program on the dbos-cloud engine against a serve of its own (None with BENCH_CLOUD=0);
    destroyed, and serve with everything it made removed, afterwards (also on failure)."""
    if not CLOUD:
        yield None
        return
    from tests.support.serve import running_serve

    with running_serve() as serve:
        s = stack(root, "cloud", REAL, data_dir=False)
        for key, value in (("dbos:engine", "dbos-cloud"), ("dbos:cloudDomain", serve.domain),
                           ("dbos:cloudCaCert", str(serve.ca_cert))):
            s.set_config(key, auto.ConfigValue(value))
        # the token is a secret: through stdin, never in argv
        subprocess.run(["pulumi", "config", "set", "--secret", "dbos:cloudToken", "--stack", "bench",  # noqa: S603,S607
                        "--cwd", str(root / "cloud")], input=serve.token("bench", "bench"), text=True,
                       capture_output=True, env={**os.environ, **stack_env(root)}, timeout=120, check=True)
        try:
            yield s
        finally:
            with contextlib.suppress(Exception):
                s.destroy(on_output=lambda _: None)


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    root = tmpdir("bs")
    (root / "backend").mkdir()
    try:
        real, noop = stack(root, "real", REAL), stack(root, "noop", NOOP)
        mirror = stack(root, "mirror", MIRROR, data_dir=False)
        t_up = timed(lambda: real.up(on_output=lambda _: None))
        noop.up(on_output=lambda _: None)
        mirror.up(on_output=lambda _: None)
        print(f"initial pulumi up of 20 instances + 10 apps: {t_up:.1f} s")
        with cloud_stack(root) as cloud:
            if cloud is not None:
                t_cup = timed(lambda: cloud.up(on_output=lambda _: None))
                print(f"initial pulumi up of 20 instances + 10 apps, dbos-cloud engine via serve: {t_cup:.1f} s")
            rp, np_, cp, mp = [], [], [], []
            for _ in range(N):
                rp.append(timed(lambda: real.preview(on_output=lambda _: None)))
                np_.append(timed(lambda: noop.preview(on_output=lambda _: None)))
                mp.append(timed(lambda: mirror.preview(on_output=lambda _: None)))
                if cloud is not None:
                    cp.append(timed(lambda: cloud.preview(on_output=lambda _: None)))
        print(f"preview, no changes, 30 resources: ours median {median(rp):.2f} s, no-I/O provider "
              f"median {median(np_):.2f} s, no-I/O provider with our properties median {median(mp):.2f} s")
        if cp:
            print(f"preview, no changes, 30 resources, dbos-cloud engine via serve: ours median {median(cp):.2f} s "
                  f"(" + ", ".join(f"{x:.2f}" for x in cp) + f"), no-I/O provider median {median(np_):.2f} s")
        real.destroy(on_output=lambda _: None)
        mirror.destroy(on_output=lambda _: None)

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
        print(f"ratio (same properties vs Noop): {median(mp) / median(np_):.2f}")
        print(f"ratio (local, vs no-I/O with the same properties): {median(rp) / median(mp):.2f}")
        if cp:
            print(f"ratio (dbos-cloud, vs no-I/O with the same properties): {median(cp) / median(mp):.2f}")
            print(f"ratio (dbos-cloud preview): {median(cp) / median(np_):.2f}")
        print(f"ratio: {median(rp) / median(np_):.2f}")
    finally:
        cleanup_engine(root / "d")
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
