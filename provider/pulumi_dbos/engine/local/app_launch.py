"""Running an app's processes on the local engine: its environment, `dbos migrate`, the serving process on a
port of its own until it answers, the stable-port proxy's switch to it, stopping them (functions over a
:class:`~.apps.LocalApps`; the places and owners are the module docstring's of :mod:`.apps`).

Inside the sandbox the app sees its release (read-only) at ``/dbos/app``, its control files (read-only) at
``/dbos/ctl``, its home (writable) at ``/dbos/home``; without a sandbox, the real paths.
"""

from __future__ import annotations

import dataclasses
import hashlib
import shlex
from pathlib import Path
from typing import TYPE_CHECKING

from ...errors import DbosError, EngineError, TimeoutExpired
from .. import proc
from ..contract import AppDatabaseAccess, AppDeploy
from ..files import read_tail, write_owned
from ..urls import url_for
from ..waits import wait_until
from . import ports, runtime, sandbox
from .catalog import AppRecord

if TYPE_CHECKING:
    from .apps import LocalApps

#: inside the sandbox: the release (read-only), its control files (read-only), the app's home (writable)
APP_INSIDE, CTL_INSIDE, HOME_INSIDE, PROXY_INSIDE = "/dbos/app", "/dbos/ctl", "/dbos/home", "/dbos/proxy.py"


def places_for(apps: LocalApps, dirs: dict[str, Path], release: Path, env_dir: Path, env_inside: str) -> dict[str, str]:
    """Where the app finds its release, control files, home and environment (inside its sandbox, or
    the real paths without one)."""
    if apps.boxed:
        return {"app": APP_INSIDE, "ctl": CTL_INSIDE, "home": HOME_INSIDE, "env": env_inside}
    return {"app": str(release), "ctl": str(dirs["ctl"]), "home": str(dirs["home"]), "env": str(env_dir)}


def binds_for(apps: LocalApps, dirs: dict[str, Path], release: Path, env_dir: Path, env_inside: str) -> list[sandbox.Bind]:
    return [sandbox.Bind(release, APP_INSIDE), sandbox.Bind(dirs["ctl"], CTL_INSIDE),
            sandbox.Bind(dirs["home"], HOME_INSIDE, writable=True), sandbox.Bind(env_dir, env_inside)]


def inside_db(apps: LocalApps, db: AppDatabaseAccess) -> AppDatabaseAccess:
    """``db`` as the app reaches it: in its sandbox's network namespace, on 127.0.0.1 (relayed out)."""
    return dataclasses.replace(db, hostname=ports.HOST) if apps.boxed else db


def net_for(apps: LocalApps, req: AppDeploy, port: int | None = None) -> sandbox.Net | None:
    """The sandbox's network (issue 31): only its backend ``port`` in from the host's 127.0.0.1, and only its
    database out; None without a sandbox."""
    if not apps.boxed:
        return None
    db = req.database
    return sandbox.Net(inbound=(port,) if port else (), outbound=((db.port, db.hostname, db.port),))


def environment_for(apps: LocalApps, req: AppDeploy, places: dict[str, str], port: int) -> dict[str, str]:
    db = inside_db(apps, req.database)
    return {
        **req.env,
        "PATH": f"{places['env']}/bin:/usr/local/bin:/usr/bin:/bin", "VIRTUAL_ENV": places["env"],
        "HOME": places["home"], "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "PYTHONUNBUFFERED": "1",
        "PORT": str(port), "DBOS_APP_NAME": req.app_name,
        "DBOS_DATABASE_URL": url_for(db.username, None, db.hostname, db.port, req.app_db_name),
        "DBOS_SYSTEM_DATABASE_URL": url_for(db.username, None, db.hostname, db.port,
                                            f"{req.app_db_name}_dbos_sys"),
        "DBOS__APPVERSION": req.version,
        "DBOS__VMID": f"dbos-{req.app_name}",  # stable: DBOS recovers only its own executor's workflows
        "PGPASSFILE": f"{places['ctl']}/pgpass.{port}",
    }


def unit_name(apps: LocalApps, name: str, what: str) -> str:
    # with the data dir's tag: local engines of other data dirs run apps of the same name as the same OS
    # user (`dbosapp`) at the same time, and a unit's clean-up kills whatever runs in it
    tag = hashlib.sha256(str(apps.layout.data_dir.resolve()).encode()).hexdigest()[:8]
    return sandbox.unit_name(apps.user.name if apps.user else "self", f"{name}.{tag}.{what}")


def limits_for(apps: LocalApps, req: AppDeploy) -> sandbox.Limits:
    return sandbox.Limits(memory_mib=req.memory_mib)


def backend_port(apps: LocalApps, name: str, avoid: frozenset[int] = frozenset()) -> int:
    """A port of the app's own for a new process, claimed machine-wide (engines of other data dirs
    deploy at the same time); the claim is replaced by the next deploy's."""
    lo, hi = ports.backend_ports()
    with apps.catalog.locked():
        taken = {r.backend_port for r in apps.rows.all()} | avoid
        for port in range(lo, hi + 1):
            if port not in taken and ports.port_free(port) and ports.claim(port, apps.layout.data_dir,
                                                                            f"appb:{name}"):
                return port
    raise EngineError(f"no free app port in {lo}-{hi}", hint="set PULUMI_DBOS_APP_BACKEND_PORTS")


def fail(apps: LocalApps, name: str, what: str, log: Path, since: int, masks: list[str]) -> DbosError:
    text = read_tail(log)
    try:
        size = log.stat().st_size
    except OSError:
        size = 0
    tail = text[max(0, len(text) - max(0, size - since)):].splitlines()[-25:] if size > since else []
    return EngineError(f"app {name!r}: {what}; the previous version keeps serving. Last log lines:\n"
                       f"{proc.mask(chr(10).join(tail), masks)}", hint=f"`pulumi-dbos app logs {name}` shows more")


def spawn(apps: LocalApps, argv: list[str], *, req: AppDeploy, dirs: dict[str, Path], binds: list[sandbox.Bind],
           cwd: str, env: dict[str, str], log: Path, unit: str, port: int) -> int:
    if apps.boxed:
        return sandbox.spawn(argv, user=apps.run_as, binds=binds, cwd=cwd, env=env, host_cwd=apps.app_dir(
            req.app_name), log_path=log, limits=limits_for(apps, req), unit=unit, net=net_for(apps, req, port))
    return proc.spawn(argv, run_as=apps.run_as, env=env, cwd=cwd, log=log)


def release_backend(apps: LocalApps, app: str, dirs: dict[str, Path], port: int) -> None:
    """(a failed deploy's revert) a backend port's password file and claim."""
    (dirs["ctl"] / f"pgpass.{port}").unlink(missing_ok=True)
    ports.release(port, apps.layout.data_dir, f"appb:{app}")


def launch(apps: LocalApps, req: AppDeploy, start: str, dirs: dict[str, Path], binds: list[sandbox.Bind],
            places: dict[str, str], port: int, pgpass: Path, log: Path, since: int,
            masks: list[str]) -> tuple[int, int, Path]:
    """Start the app's process on ``port`` and wait until it answers; when another process took the port
    between its choice and the app's bind, again on another one (``ports.BIND_ATTEMPTS`` in all).
    Returns (pid, port, its pgpass file); on failure nothing of it is left (process, claim, pgpass)."""
    tried: set[int] = set()
    for attempt in range(1, ports.BIND_ATTEMPTS + 1):
        tried.add(port)
        env = environment_for(apps, req, places, port)
        unit = unit_name(apps, req.app_name, str(port))
        pid = spawn(apps, shlex.split(start), req=req, dirs=dirs, binds=binds, cwd=places["app"], env=env,
                          log=log, unit=unit, port=port)
        last: list[int | None] = [None]

        def healthy(pid: int = pid, port: int = port, last: list[int | None] = last) -> bool:
            if not runtime.alive(pid):
                raise fail(apps, req.app_name, f"version {req.version} exited before it was healthy", log, since,
                                 masks)
            if not runtime.listens(pid, port):  # a port that answers may be someone else's
                return False
            last[0] = runtime.http_status(port)
            return runtime.answers(last[0])

        try:
            if not wait_until(healthy, apps.settings.app_start_timeout, "", interval=0.05, raise_on_timeout=False):
                raise TimeoutExpired(
                    f"app {req.app_name!r} version {req.version} did not answer on port {port} within "
                    f"{apps.settings.app_start_timeout:.0f}s" + (f" (GET / answered HTTP {last[0]}; healthy is an answer below "
                                                   "500)" if last[0] is not None else ""))
            return pid, port, pgpass
        except BaseException as exc:
            stop(apps, pid, unit, grace=2)
            release_backend(apps, req.app_name, dirs, port)
            retry = (attempt < ports.BIND_ATTEMPTS and isinstance(exc, DbosError)
                     and ports.bind_failed(exc.message))
            if not retry:
                if isinstance(exc, DbosError) and "Last log lines" not in exc.message:
                    raise fail(apps, req.app_name, exc.message, log, since, masks) from None
                raise
            log_line = f"==== port {port} was taken before the app bound it; trying another\n"
            with open(log, "ab") as fh:
                fh.write(log_line.encode())
            port = backend_port(apps, req.app_name, frozenset(tried))
            pgpass = dirs["ctl"] / f"pgpass.{port}"
            write_owned(pgpass, runtime.pgpass_line(inside_db(apps, req.database)).encode(), 0o600,
                        apps.run_as.uid if apps.user else None, apps.gid)
    raise AssertionError("unreachable")


def stop(apps: LocalApps, pid: int | None, unit: str, grace: float = 10) -> None:
    runtime.stop(pid, grace=grace)
    if apps.boxed:
        sandbox.kill_unit(unit)
        sandbox.release_unit(unit)


def switch(apps: LocalApps, rec: AppRecord, backend_port: int, dirs: dict[str, Path]) -> int:
    """Point the app's stable port at ``backend_port`` (starting its proxy if it is not running)."""
    write_owned(dirs["ctl"] / "target", str(backend_port).encode(), 0o644)
    ctl = CTL_INSIDE if apps.boxed else str(dirs["ctl"])
    script = PROXY_INSIDE if apps.boxed else str(apps.root / "proxy.py")
    # the proxy listens on 127.0.0.1, and on the listen host when there is one (its 4th argument)
    args = [str(rec.port), f"{ctl}/target", "/tmp/proxy.ready" if apps.boxed else str(dirs["home"] / "proxy.ready"),
            *ports.listen_hosts(apps.listen_host)[1:]]
    if rec.proxy_pid and runtime.listens(rec.proxy_pid, rec.port) and runtime.runs_with(rec.proxy_pid, args):
        return rec.proxy_pid
    unit = unit_name(apps, rec.name, "proxy")
    stop(apps, rec.proxy_pid, unit, grace=2)  # none, or listening elsewhere than now wanted
    log = dirs["log"] / "proxy.log"
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
    argv = [runtime.app_python(), script, *args]
    if apps.boxed:
        pid = sandbox.spawn(argv, user=apps.run_as, binds=[
            sandbox.Bind(dirs["ctl"], CTL_INSIDE), sandbox.Bind(apps.root / "proxy.py", PROXY_INSIDE)],
            cwd="/tmp", env=env, host_cwd=apps.app_dir(rec.name), log_path=log, limits=sandbox.Limits(256),
            unit=unit)
    else:
        pid = proc.spawn(argv, run_as=apps.run_as, env=env, cwd=dirs["home"], log=log)

    def listening() -> bool:
        if not runtime.alive(pid):
            tail = read_tail(log, 4096).strip().splitlines()[-1:]
            raise EngineError(f"the proxy of app {rec.name!r} could not listen on port {rec.port}: "
                              f"{' '.join(tail)}", hint="another process took the port: set `port`")
        return runtime.listens(pid, rec.port)

    try:
        wait_until(listening, 10, f"the proxy of app {rec.name!r} did not listen on port {rec.port}", interval=0.02)
    except BaseException:
        stop(apps, pid, unit, grace=1)  # a proxy that never listened is not left behind
        raise
    return pid


def migrate(apps: LocalApps, req: AppDeploy, binds: list[sandbox.Bind], places: dict[str, str], release: Path,
            env: dict[str, str], log: Path, since: int, masks: list[str]) -> None:
    """`dbos migrate`: DBOS's system tables, then the config's ``database.migrate`` (run by dbos itself); its
    output goes to the app's log."""
    argv = [f"{places['env']}/bin/dbos", "migrate", "-s", env["DBOS_SYSTEM_DATABASE_URL"]]
    timeout = apps.settings.migrate_timeout
    if apps.boxed:
        cp = sandbox.run(argv, user=apps.run_as, binds=binds, cwd=places["app"], env=env,
                         host_cwd=apps.app_dir(req.app_name), limits=limits_for(apps, req),
                         unit=unit_name(apps, req.app_name, "migrate"), timeout=timeout, check=False, secrets=masks,
                         net=net_for(apps, req))
    else:
        cp = proc.run(argv, run_as=apps.run_as, env=env, cwd=release, timeout=timeout, check=False, secrets=masks)
    with open(log, "ab") as fh:
        fh.write(proc.mask(cp.stdout + cp.stderr, masks).encode())
    if cp.returncode != 0:
        raise fail(apps, req.app_name, f"`dbos migrate` failed with exit code {cp.returncode}", log, since, masks)
