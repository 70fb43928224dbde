"""Rotations never interrupt an app (issue 19): a password reset of the instance an app is bound to keeps
the running process serving its database-backed route, with no restart — the engine rewrites the app's
password file in the same step as the reset, and the app's own sessions are not among those ended.
A port move of that instance restarts its server, but the old port is forwarded (``forward.py``) until
the app's redeploy onto the new port: the route keeps answering, and the forwarder goes away once no
app uses the old port (after the app's redeploy, the instance's destroy, a crash).
The sample app examples/greet, a client polling GET /greetings (which reads the app's database) every
10 ms."""

from __future__ import annotations

import os
import shutil
import signal
import time
import urllib.request
from pathlib import Path

import psycopg
import pytest

from pulumi_dbos.appsource import pack
from pulumi_dbos.engine import LocalEngine
from pulumi_dbos.engine.contract import AppDatabaseAccess, AppDeploy
from pulumi_dbos.engine.local import forward, ports, runtime
from pulumi_dbos.engine.waits import wait_until
from tests.conftest import ROOT
from tests.contract.helpers import free_port
from tests.support.poller import Poller

PW = "Greet-rotate-pw1"
NEW_PW = "Greet-rotate-pw2"


@pytest.fixture
def greet(tmp_root: Path) -> tuple[str, bytes]:
    src = tmp_root / "greet"
    shutil.copytree(ROOT / "examples" / "greet", src, ignore=shutil.ignore_patterns("__pycache__"))
    return pack(src)


def test_a_password_reset_keeps_the_bound_app_serving_its_database_route_without_a_restart(
        engine: LocalEngine, greet: tuple[str, bytes]) -> None:
    version, archive = greet
    inst = engine.provision("rot_a", "rot_user", PW)
    db = AppDatabaseAccess("rot_a", inst.hostname, inst.port, "rot_user", PW)
    info = engine.apps.deploy(AppDeploy("greet", version, archive, db, "greet", {}))
    before = engine.apps.rows.get("greet")
    assert before is not None and before.backend_pid
    with urllib.request.urlopen(info.app_url + "/greetings", timeout=10) as r:  # noqa: S310
        assert r.status == 200

    with Poller(info.app_url + "/greetings", bodies=(b"[",)) as poll:
        time.sleep(0.5)
        engine.reset_credentials("rot_a", "rot_user", NEW_PW)
        time.sleep(1.5)  # new connections of the app meanwhile (a killed session, the pool's next one)

    assert poll.failures() == 0, f"{poll.failures()} of {len(poll.samples)} requests failed"
    assert poll.longest_gap() < 1.0
    after = engine.apps.rows.get("greet")
    assert after is not None and after.backend_pid == before.backend_pid  # no restart
    assert runtime.alive(before.backend_pid)
    # the app's password file holds the new password (and still only the app's user reads it)
    pgpass = engine.apps.app_dir("greet") / "ctl" / f"pgpass.{after.backend_port}"
    assert runtime.pgpass_fields(pgpass.read_text())[4] == NEW_PW
    assert pgpass.stat().st_mode & 0o777 == 0o600
    # the reset did happen: the old password is refused, the new one works
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(host=inst.hostname, port=inst.port, user="rot_user", password=PW, dbname="postgres",
                        connect_timeout=5).close()
    psycopg.connect(host=inst.hostname, port=inst.port, user="rot_user", password=NEW_PW, dbname="postgres",
                    connect_timeout=5).close()


def test_a_password_reset_still_ends_the_sessions_of_others(engine: LocalEngine, greet: tuple[str, bytes]) -> None:
    """Only the bound apps' own sessions survive a reset: any other session of the user (a client that
    knew the old password) ends, as before."""
    version, archive = greet
    inst = engine.provision("rot_b", "rot_user", PW)
    db = AppDatabaseAccess("rot_b", inst.hostname, inst.port, "rot_user", PW)
    engine.apps.deploy(AppDeploy("greet", version, archive, db, "greet", {}))
    other = psycopg.connect(host=inst.hostname, port=inst.port, user="rot_user", password=PW, dbname="postgres",
                            connect_timeout=5, autocommit=True)
    try:
        engine.reset_credentials("rot_b", "rot_user", NEW_PW)
        with pytest.raises(psycopg.OperationalError):
            other.execute("SELECT 1")
    finally:
        other.close()


def _serving(engine: LocalEngine, greet: tuple[str, bytes], name: str) -> tuple[AppDatabaseAccess, str]:
    version, archive = greet
    inst = engine.provision(name, "rot_user", PW)
    db = AppDatabaseAccess(name, inst.hostname, inst.port, "rot_user", PW)
    info = engine.apps.deploy(AppDeploy("greet", version, archive, db, "greet", {}))
    return db, info.app_url


def _forwards(engine: LocalEngine) -> list[forward.Forward]:
    return forward.existing(engine.layout)


def _claimed(port: int) -> str | None:
    with ports._claims_dir() as dfd:
        held = ports._read_claim(dfd, str(port))
    return held[0].split("\n")[1] if held else None


def _released(port: int, instance: str) -> bool:
    """Neither ``instance`` nor its forwarder holds ``port`` (another test's engine may have taken it since)."""
    return _claimed(port) not in (instance, f"fwd:{instance}")


def test_a_port_move_keeps_the_bound_app_serving_its_database_route(
        engine: LocalEngine, greet: tuple[str, bytes]) -> None:
    """What `pulumi up` asks for a port move of an app's instance: ``set_port``, then the App's update (a
    redeploy onto the new port). The old port is forwarded meanwhile; afterwards nothing holds it.
    The server's restart is unavoidable (one port per server): what may fail is the few requests whose
    connection met the old server shutting down (tens of milliseconds); before the forwarder, every
    request failed from the stop until the redeploy (605 of 697, 14.9 s)."""
    db, url = _serving(engine, greet, "rot_p")
    new_port = free_port(engine)
    with Poller(url + "/greetings", bodies=(b"[",)) as poll:
        time.sleep(0.5)
        moved = engine.set_port("rot_p", new_port)
        time.sleep(1.0)  # the app's next connections go through the forwarder
        fwds = _forwards(engine)
        assert [(f.port, f.instance) for f in fwds] == [(db.port, "rot_p")] and fwds[0].running()
        assert _claimed(db.port) == "fwd:rot_p"
        engine.apps.deploy(AppDeploy("greet", greet[0], None, AppDatabaseAccess(
            "rot_p", moved.hostname, moved.port, "rot_user", PW), "greet", {}))
        time.sleep(0.5)

    assert moved.port == new_port
    failed = [t for t, ok in poll.samples if not ok]
    assert len(failed) <= 10 and (not failed or failed[-1] - failed[0] < 0.5), \
        f"{len(failed)} of {len(poll.samples)} requests failed"
    assert poll.longest_gap() < 1.0, poll.longest_gap()
    # the app moved: the forwarder, its directory and its claim are gone, the old port is free again
    assert _forwards(engine) == [] and not fwds[0].running()
    assert _released(db.port, "rot_p")


def test_the_forwarder_ends_with_the_instance(engine: LocalEngine, greet: tuple[str, bytes]) -> None:
    db, _ = _serving(engine, greet, "rot_d")
    engine.set_port("rot_d", free_port(engine))
    (fwd,) = _forwards(engine)
    assert fwd.running()
    engine.destroy("rot_d")  # the app still names the old port: the instance is gone all the same
    assert _forwards(engine) == [] and not fwd.running()
    assert _released(db.port, "rot_d")


def test_a_forwarder_left_by_a_crash_ends_or_comes_back_as_needed(
        engine: LocalEngine, greet: tuple[str, bytes], monkeypatch: pytest.MonkeyPatch) -> None:
    """A forwarder killed while the app still needs it starts again at the instance's next start; one that
    a crash left without a user (the app deleted meanwhile) is stopped and its port released."""
    db, url = _serving(engine, greet, "rot_c")
    engine.set_port("rot_c", free_port(engine))
    (fwd,) = _forwards(engine)
    assert fwd.pid is not None
    os.killpg(fwd.pid, signal.SIGKILL)
    wait_until(lambda: not fwd.running(), 10, "the killed forwarder gone")
    engine.ensure_running("rot_c")
    (again,) = _forwards(engine)
    assert again.port == db.port and again.pid != fwd.pid and again.running()
    with urllib.request.urlopen(url + "/greetings", timeout=10) as r:  # noqa: S310 - through it
        assert r.status == 200

    # the engine dies between its clean-ups: the app goes, the forwarder stays behind
    with monkeypatch.context() as m:
        m.setattr(engine, "_sweep_forwards", lambda: None)  # the crash: the delete's last step never runs
        engine.apps.delete("greet")
    assert again.running()
    engine.ensure_running("rot_c")
    assert _forwards(engine) == [] and not again.running()
    assert _released(db.port, "rot_c")


def test_a_password_reset_during_a_port_move_reaches_the_app_on_the_old_port(
        engine: LocalEngine, greet: tuple[str, bytes]) -> None:
    """A port move and a rotation in one `pulumi up` (the instance's update moves the port, then resets the
    password; the App's redeploy comes after): the app, still connecting through the forwarded old port,
    gets the new password in its password file at once and keeps answering."""
    db, url = _serving(engine, greet, "rot_r")
    engine.set_port("rot_r", free_port(engine))
    with Poller(url + "/greetings", bodies=(b"[",)) as poll:
        time.sleep(0.3)
        engine.reset_credentials("rot_r", "rot_user", NEW_PW)
        time.sleep(1.5)
    rec = engine.apps.rows.get("greet")
    assert rec is not None
    fields = runtime.pgpass_fields((engine.apps.app_dir("greet") / "ctl" / f"pgpass.{rec.backend_port}").read_text())
    assert fields[1] == str(db.port) and fields[4] == NEW_PW
    assert poll.longest_gap() < 1.0 and poll.samples[-1][1], poll.failures()
