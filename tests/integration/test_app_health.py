"""Health is the app answering, not a TCP accept (issue 19): DBOS Transact 3.x has no admin server (no
``/dbos-healthz``), so the engine asks the app itself — ``GET /`` below 500 — both while a deploy waits
for the new version and in every status read. The app of tests/integration/apps/health answers 200, or
500 once asked ``GET /break`` (or from the start with ``BROKEN=1``)."""

from __future__ import annotations

import urllib.request
from pathlib import Path

import pytest

from pulumi_dbos.appsource import pack
from pulumi_dbos.engine import AppStatus, LocalEngine
from pulumi_dbos.engine.contract import AppDatabaseAccess, AppDeploy
from pulumi_dbos.errors import DbosError

PW = "Health-engine-pw1"
APP_DIR = Path(__file__).parent / "apps" / "health"


def test_an_app_answering_500_is_not_available(engine: LocalEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    engine.settings = engine.settings.replace(app_start_timeout=20.0)  # the broken version never gets healthy
    inst = engine.provision("health_a", "health_user", PW)
    db = AppDatabaseAccess("health_a", inst.hostname, inst.port, "health_user", PW)
    version, archive = pack(APP_DIR)
    info = engine.apps.deploy(AppDeploy("health", version, archive, db, "health", {}))
    assert info.status == AppStatus.AVAILABLE.value
    serving = engine.apps.rows.get("health")
    assert serving is not None

    # a version that listens but answers 500: the deploy fails at its health wait, the previous one serves
    with pytest.raises(DbosError) as exc:
        engine.apps.deploy(AppDeploy("health", version, None, db, "health", {"BROKEN": "1"}))
    assert "HTTP 500" in exc.value.message and "previous version keeps serving" in exc.value.message
    after = engine.apps.rows.get("health")
    assert after is not None and after.backend_pid == serving.backend_pid
    app = engine.apps.info("health")
    assert app is not None and app.status == AppStatus.AVAILABLE.value

    # the serving process starts answering 500: a status read says so
    with pytest.raises(urllib.request.HTTPError):
        urllib.request.urlopen(app.app_url + "/break", timeout=5)  # noqa: S310 - http://127.0.0.1 only
    app = engine.apps.info("health")
    assert app is not None and app.status == AppStatus.UNHEALTHY.value


def test_deleting_an_app_leaves_another_data_dirs_app_of_that_name_running(engine: LocalEngine, tmp_root: Path) -> None:
    """The apps' sandbox units (cgroups) are named per data dir: a delete (or a migration's clean-up) in
    one engine kills nothing of another engine's app of the same name running as the same OS user."""
    other = LocalEngine(tmp_root / "d2")
    version, archive = pack(APP_DIR)
    infos = []
    for eng, name in ((engine, "health_b"), (other, "health_c")):
        inst = eng.provision(name, "health_user", PW)
        db = AppDatabaseAccess(name, inst.hostname, inst.port, "health_user", PW)
        infos.append(eng.apps.deploy(AppDeploy("health", version, archive, db, "health", {})))
    engine.apps.delete("health")
    app = other.apps.info("health")
    assert app is not None and app.status == AppStatus.AVAILABLE.value
    with urllib.request.urlopen(infos[1].app_url + "/", timeout=5) as r:  # noqa: S310 - http://127.0.0.1 only
        assert r.status == 200
