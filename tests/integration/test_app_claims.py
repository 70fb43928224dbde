"""Port claims of apps that no longer exist are released (issue 19): a server killed during an app's first
deploy leaves the app's port and its new process's port claimed; the restart removes the app (serve's
crash recovery: ``delete_app``), and a killed redeploy's port is released by the next deploy."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from pulumi_dbos.appsource import pack
from pulumi_dbos.engine import LocalEngine
from pulumi_dbos.engine.contract import AppDatabaseAccess, AppDeploy
from pulumi_dbos.engine.local import app_launch, app_store, ports

PW = "Claims-engine-pw1"
APP_DIR = Path(__file__).parent / "apps" / "health"


def claims_of(data_dir: Path) -> dict[int, str]:
    d = Path(os.environ.get("PULUMI_DBOS_PORTS_DIR", "/var/tmp/pulumi-dbos-ports"))
    out = {}
    for f in d.glob("*"):
        with contextlib.suppress(OSError, ValueError):
            lines = f.read_text().splitlines()
            if lines and lines[0] == str(data_dir):
                out[int(f.name)] = lines[1]
    return out


def test_claims_of_an_interrupted_first_deploy_and_redeploy_are_released(engine: LocalEngine, data_dir: Path) -> None:
    inst = engine.provision("claims_a", "claims_user", PW)
    db = AppDatabaseAccess("claims_a", inst.hostname, inst.port, "claims_user", PW)
    version, archive = pack(APP_DIR)

    # a first deploy cut short after its ports were claimed (what a killed server leaves)
    app_store.prepare(engine.apps)
    engine.apps._reserve(AppDeploy("cut", version, archive, db, "cut", {}))
    app_launch.backend_port(engine.apps, "cut")
    assert sorted(claims_of(data_dir).values()) == ["app:cut", "appb:cut", "claims_a"]
    engine.apps.delete("cut")  # serve's crash recovery removes the app
    assert claims_of(data_dir) == {inst.port: "claims_a"}

    # a redeploy cut short after claiming its new process's port: the next deploy releases it
    engine.apps.deploy(AppDeploy("health", version, archive, db, "health", {}))
    orphan = ports.backend_ports()[1]  # the top of the range: the next deploy picks a lower one
    assert ports.claim(orphan, data_dir, "appb:health")
    engine.apps.deploy(AppDeploy("health", version, None, db, "health", {}))
    rec = engine.apps.rows.get("health")
    assert rec is not None and rec.backend_port != orphan
    assert claims_of(data_dir) == {inst.port: "claims_a", rec.port: "app:health", rec.backend_port: "appb:health"}
