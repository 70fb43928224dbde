"""Rotations never interrupt an app (issue 19): a password reset of the instance an app is bound to keeps
the running process serving its database-backed route, with no restart — the engine rewrites the app's
password file in the same step as the reset, and the app's own sessions are not among those ended.
The sample app examples/greet, a client polling GET /greetings (which reads the app's database) every
10 ms."""

from __future__ import annotations

import shutil
import time
import urllib.request
from pathlib import Path

import psycopg
import pytest

from pulumi_dbos.appsource import pack
from pulumi_dbos.engine import LocalEngine
from pulumi_dbos.engine.contract import AppDatabaseAccess, AppDeploy
from pulumi_dbos.engine.local import runtime
from tests.conftest import ROOT
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
    info = engine.deploy_app(AppDeploy("greet", version, archive, db, "greet", {}))
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
    engine.deploy_app(AppDeploy("greet", version, archive, db, "greet", {}))
    other = psycopg.connect(host=inst.hostname, port=inst.port, user="rot_user", password=PW, dbname="postgres",
                            connect_timeout=5, autocommit=True)
    try:
        engine.reset_credentials("rot_b", "rot_user", NEW_PW)
        with pytest.raises(psycopg.OperationalError):
            other.execute("SELECT 1")
    finally:
        other.close()
