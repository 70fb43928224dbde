"""App deploy benchmark (the sample DBOS app examples/greet on the local engine).

(a) Redeploy with an unchanged environment: ``LocalEngine.deploy_app`` of a new content version (the
    greeting changed, requirements.txt not: the virtualenv is cached) vs the same app started by hand
    in this process: ``dbos migrate -s URL`` then ``python3 main.py`` with the same environment (the
    same virtualenv, release directory, OS user and DBOS Cloud variables) until its port answers.
    Medians of BENCH_N (default 5), alternating; the virtualenv is built before timing starts.
(b) The unavailability window of change-database-instance: GET /greetings (a route that reads the app's
    database) on the app's URL every 10 ms while a deploy moves the app to another instance; failed
    requests and the longest time without a successful answer.
(c) A password rotation of the instance the app is bound to, under the same poller: what ``pulumi up``
    asks of the engine (``reset_credentials``; the App's update then records the new password and calls
    nothing); then a port move of that instance (``set_port``: a server restart with the old port
    forwarded, then the App's update: a redeploy onto the new port); each on the local engine and
    through ``pulumi-dbos serve`` (dbos-cloud engine). Failed requests and the longest gap (target 0
    failed, < 1000 ms; a port move restarts the server: the requests that meet it shutting down fail).

Ends with ``ratio: X.XX`` (deploy / by hand, medians; target <= 1.5).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import time
import urllib.request
from pathlib import Path

import psycopg
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests.support.serve
from tests.support.poller import Poller  # noqa: E402
from tests.support.serve import running_serve  # noqa: E402

from _util import cleanup_engine, free_port, median, tmpdir  # noqa: E402
from pulumi_dbos.appsource import pack  # noqa: E402
from pulumi_dbos.engine import Engine, LocalEngine, get_engine, proc  # noqa: E402
from pulumi_dbos.engine.contract import AppDatabaseAccess, AppDeploy  # noqa: E402
from pulumi_dbos.engine.local import app_launch, app_store, runtime, sandbox  # noqa: E402
from pulumi_dbos.engine.urls import url_for  # noqa: E402

N = int(os.environ.get("BENCH_N", "5"))
PW = "Bench-passw0rd"
REPO = Path(__file__).resolve().parent.parent
APP = "greet"
ROTATED: list[str] = []  # the passwords set by rotations, newest last


def set_greeting(src: Path, greeting: str) -> None:
    main = src / "main.py"
    lines = [f'GREETING = "{greeting}"' if ln.startswith("GREETING = ") else ln
             for ln in main.read_text().splitlines()]
    main.write_text("\n".join(lines) + "\n")


def ensure_db(db: AppDatabaseAccess, names: list[str]) -> None:
    with psycopg.connect(host=db.hostname, port=db.port, user=db.username, password=db.password,
                         dbname="postgres", autocommit=True) as c:
        for name in names:
            if c.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is None:
                c.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def by_hand(eng: LocalEngine, db: AppDatabaseAccess, version: str) -> float:
    """`dbos migrate -s URL` + `python3 main.py` in the version's release dir, with the deploy's virtualenv,
    environment, OS user and sandbox (own databases, so the running app is not disturbed), until the port
    answers."""
    apps = eng.apps
    release = apps.app_dir(APP) / "releases" / version
    envs = apps.root / "_envs"
    env_dir = next(d for d in envs.iterdir() if (envs / f"{d.name}.ready").exists())
    env_inside = f"{runtime.ENVS_INSIDE}/{env_dir.name}" if apps.boxed else str(env_dir)
    dirs = app_store.app_dirs(apps, APP)
    places = app_launch.places_for(apps, dirs, release, env_dir, env_inside)
    port = free_port()
    env = {
        "PATH": f"{places['env']}/bin:/usr/local/bin:/usr/bin:/bin", "VIRTUAL_ENV": places["env"],
        "HOME": places["home"], "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "PYTHONUNBUFFERED": "1",
        "PORT": str(port), "DBOS_APP_NAME": APP,
        "DBOS_DATABASE_URL": url_for(db.username, None, db.hostname, db.port, "byhand"),
        "DBOS_SYSTEM_DATABASE_URL": url_for(db.username, None, db.hostname, db.port, "byhand_dbos_sys"),
        "DBOS__APPVERSION": version, "DBOS__VMID": "dbos-byhand", "PGPASSWORD": db.password,
    }
    log = dirs["log"] / "byhand.log"
    migrate = [f"{places['env']}/bin/dbos", "migrate", "-s", env["DBOS_SYSTEM_DATABASE_URL"]]
    t0 = time.perf_counter()
    if apps.boxed:
        binds = app_launch.binds_for(apps, dirs, release, env_dir, env_inside)
        common = {"user": apps.run_as, "binds": binds, "cwd": places["app"], "env": env,
                  "host_cwd": apps.app_dir(APP), "limits": sandbox.Limits()}
        sandbox.run(migrate, unit=app_launch.unit_name(apps, APP, "byhand-migrate"), timeout=600, secrets=[db.password],
                    **common)  # type: ignore[arg-type]
        pid = sandbox.spawn(["python3", "main.py"], unit=app_launch.unit_name(apps, APP, "byhand"), log_path=log,
                            **common)  # type: ignore[arg-type]
    else:
        proc.run(migrate, run_as=apps.run_as, env=env, cwd=release, timeout=600, secrets=[db.password])
        pid = proc.spawn(["python3", "main.py"], run_as=apps.run_as, env=env, cwd=release, log=log)
    try:
        while not runtime.answers(runtime.http_status(port)):  # what a deploy waits for
            proc.reap()
            if not _alive(pid):
                raise RuntimeError(f"the app started by hand exited; see {log}")
            time.sleep(0.05)
        return time.perf_counter() - t0
    finally:
        _kill(pid)
        if apps.boxed:
            sandbox.kill_unit(app_launch.unit_name(apps, APP, "byhand"))
            sandbox.release_unit(app_launch.unit_name(apps, APP, "byhand"))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    return False


def _kill(pid: int) -> None:
    with contextlib.suppress(OSError):
        os.killpg(pid, 15)
    deadline = time.monotonic() + 10
    while _alive(pid) and time.monotonic() < deadline:
        proc.reap()
        time.sleep(0.05)
    with contextlib.suppress(OSError):
        os.killpg(pid, 9)
    proc.reap()


def deploy(eng: Engine, src: Path, db: AppDatabaseAccess, archive: bool = True) -> tuple[float, str, str]:
    version, data = pack(src)
    t0 = time.perf_counter()
    info = eng.apps.deploy(AppDeploy(APP, version, data if archive else None, db, APP, {}))
    return time.perf_counter() - t0, version, info.app_url


def report(what: str, took: str, poll: Poller) -> None:
    print(f"{what}: {took}; {len(poll.samples)} GETs /greetings every 10 ms, {poll.failures()} failed; "
          f"longest gap without an answer: {poll.longest_gap(to_the_end=True) * 1000:.0f} ms (target 0 failed, < 1000)")


def rotate(eng: Engine, instance: str, url: str, where: str) -> None:
    """What `pulumi up` asks of the engine for a password rotation of an app's instance, under the poller."""
    with Poller(url + "/greetings") as poll:
        time.sleep(0.5)
        t0 = time.perf_counter()
        ROTATED.append("Rotated-" + str(time.time_ns())[-8:])
        eng.reset_credentials(instance, "bench_user", ROTATED[-1])
        took = time.perf_counter() - t0
        time.sleep(1.5)  # the app's next connections use the new password
    report(f"password rotation ({where})", f"reset {took:.1f} s", poll)


def move_port(eng: Engine, instance: str, url: str, version: str, where: str) -> None:
    """What `pulumi up` asks of the engine for a port move of an app's instance, under the poller: the
    instance's update (``set_port``), then the App's (a redeploy of the same version onto the new port)."""
    with Poller(url + "/greetings") as poll:
        time.sleep(0.5)
        t0 = time.perf_counter()
        moved_to = eng.set_port(instance, free_port())
        moved = time.perf_counter() - t0
        pw = ROTATED[-1] if ROTATED else PW
        eng.apps.deploy(AppDeploy(APP, version, None, AppDatabaseAccess(
            instance, moved_to.hostname, moved_to.port, "bench_user", pw), APP, {}))
        took = time.perf_counter() - t0
        time.sleep(1.0)
    report(f"port move ({where})", f"set_port {moved:.1f} s + redeploy {took - moved:.1f} s", poll)


def rotate_via_serve(src: Path) -> None:
    with running_serve() as serve:
        eng = get_engine("dbos-cloud", domain=serve.domain, token=serve.token("bench", "bench"),
                         ca_cert=str(serve.ca_cert))
        inst = eng.provision("bench_s", "bench_user", PW)
        db = AppDatabaseAccess("bench_s", inst.hostname, inst.port, "bench_user", PW)
        try:
            _, version, url = deploy(eng, src, db)
            rotate(eng, "bench_s", url, "dbos-cloud engine via serve")
            move_port(eng, "bench_s", url, version, "dbos-cloud engine via serve")
        finally:
            with contextlib.suppress(Exception):
                eng.apps.delete(APP)


def main() -> None:
    root = tmpdir("bd")
    eng = LocalEngine(root / "d")
    src = root / APP
    shutil.copytree(REPO / "examples" / APP, src, ignore=shutil.ignore_patterns("__pycache__"))
    try:
        a = eng.provision("bench_a", "bench_user", PW)
        b = eng.provision("bench_b", "bench_user", PW)  # before any app runs (see the tests' data dir mode bug)
        db_a = AppDatabaseAccess("bench_a", a.hostname, a.port, "bench_user", PW)
        db_b = AppDatabaseAccess("bench_b", b.hostname, b.port, "bench_user", PW)
        first, _, url = deploy(eng, src, db_a)  # builds the virtualenv (uv), not counted
        print(f"first deploy (virtualenv built): {first:.1f} s")
        ensure_db(db_a, ["byhand", "byhand_dbos_sys"])
        set_greeting(src, "Warm-up")
        _, version, _ = deploy(eng, src, db_a)  # warm-up, not counted
        by_hand(eng, db_a, version)  # warm-up (creates the by-hand tables), not counted
        ours, raw = [], []
        for i in range(N):
            set_greeting(src, f"Hello {i}")
            elapsed, version, _ = deploy(eng, src, db_a)
            ours.append(elapsed)
            raw.append(by_hand(eng, db_a, version))
        print(f"by hand (dbos migrate + python3 main.py until the port answers): median {median(raw) * 1000:.0f} ms"
              f"  (n={N}: " + ", ".join(f"{x * 1000:.0f}" for x in raw) + ")")
        print(f"deploy_app, unchanged environment: median {median(ours) * 1000:.0f} ms  (n={N}: "
              + ", ".join(f"{x * 1000:.0f}" for x in ours) + ")")

        # (b) change-database-instance under load
        with urllib.request.urlopen(url + "/greetings", timeout=5) as r:  # noqa: S310
            assert r.status == 200
        with Poller(url + "/greetings") as poll:
            time.sleep(0.5)
            t0 = time.perf_counter()
            info = eng.apps.deploy(AppDeploy(APP, version, None, db_b, APP, {}))
            moved = time.perf_counter() - t0
            time.sleep(1.0)
        assert info.instance_name == "bench_b"
        report("change-database-instance", f"deploy {moved:.1f} s", poll)

        # (c) a password rotation of the app's instance, then a port move of it
        rotate(eng, "bench_b", url, "local engine")
        move_port(eng, "bench_b", url, version, "local engine")
        ROTATED.clear()
        rotate_via_serve(src)
        ratio = median(ours) / median(raw)
        print(f"ratio: {ratio:.2f}")
    finally:
        with contextlib.suppress(Exception):
            eng.apps.delete(APP)
        cleanup_engine(root / "d")
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
