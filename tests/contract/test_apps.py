"""The app half of the contract (DBOS Cloud's `app ...`): deploy, versions, change-database-instance with a
previous version, failures that keep the old version serving, delete.

A version's id is the content id of the code (``appsource.pack``), except on DBOS Cloud, which numbers each
deploy itself (1, 2, ...): the ids a deploy returns are the ones a later ``previous_version`` names."""

from __future__ import annotations

import json
import shutil
import urllib.request
from pathlib import Path

import pytest

from pulumi_dbos.appsource import pack
from pulumi_dbos.engine.contract import AppDatabaseAccess, AppDeploy, AppStatus, Engine
from pulumi_dbos.errors import DbosError
from tests.conftest import ROOT
from tests.contract.engines import without_extensions
from tests.contract.helpers import Instances, free_port

PW = "Contract-app-pw1"


def get(url: str) -> dict[str, str]:
    return json.loads(urllib.request.urlopen(url, timeout=30).read())  # type: ignore[no-any-return]  # noqa: S310


def test_deploy_versions_change_instance_previous_version_and_delete(
        contract_engine: Engine, instances: Instances, tmp_path: Path) -> None:
    src = tmp_path / "greet"
    shutil.copytree(ROOT / "examples" / "greet", src)
    a = instances.provision(password=PW)
    b = instances.provision(password=PW)
    app = f"ct_{a.name[-8:]}"
    (src / "dbos-config.yaml").write_text((src / "dbos-config.yaml").read_text().replace("name: greet", f"name: {app}"))
    access = {i.name: AppDatabaseAccess(i.name, i.hostname, i.port, i.username, PW) for i in (a, b)}
    numbered = without_extensions(contract_engine)
    v1, z1 = pack(src)
    try:
        info = contract_engine.apps.deploy(AppDeploy(app, v1, z1, access[a.name], "greet_db", {}, owner="ct"))
        assert info.status == AppStatus.AVAILABLE.value and info.instance_name == a.name
        assert info.app_db_name == "greet_db"  # also where the app's directory does not name it
        assert info.version == ("1" if numbered else v1)
        v1 = info.version
        assert get(info.app_url + "/")["version"] == v1

        (src / "main.py").write_text((src / "main.py").read_text().replace('GREETING = "Hello"', 'GREETING = "Hi"'))
        v2, z2 = pack(src)
        assert v2 != v1
        info = contract_engine.apps.deploy(AppDeploy(app, v2, z2, access[a.name], "greet_db", {}, owner="ct"))
        assert info.version == ("2" if numbered else v2)
        v2 = info.version
        assert get(info.app_url + "/") == {"app": app, "version": v2, "greeting": "Hi"}
        assert [v.version for v in contract_engine.apps.versions(app)] == [v1, v2]

        # change-database-instance with the previous version: v1's code on instance b, same URL
        info = contract_engine.apps.deploy(AppDeploy(app, v1, None, access[b.name], "greet_db", {}, owner="ct"))
        assert info.instance_name == b.name and get(info.app_url + "/")["greeting"] == "Hello"
        assert any(x.name == app for x in contract_engine.apps.all())
        assert "deploy" in contract_engine.apps.logs(app)

        # an unknown stored version is refused, and the app keeps serving
        with pytest.raises(DbosError, match="not stored"):
            contract_engine.apps.deploy(AppDeploy(app, "nope", None, access[a.name], "greet_db", {}, owner="ct"))
        assert get(info.app_url + "/")["version"] == v1
        problems = contract_engine.apps.preflight(app, port=None, version="nope", owner="ct", creating=False)
        assert [p.field for p in problems] == ["previous_version"] and v1 in problems[0].message
    finally:
        contract_engine.apps.delete(app)
    assert contract_engine.apps.info(app) is None
    assert contract_engine.apps.versions(app) == []


@pytest.mark.same_on_ha("an app's own port is the app's; its database is at the instance's host:port, an HA one's endpoint (tests/ha runs a DBOS app across a switchover)")
@pytest.mark.extension("Port on register and deploy")
def test_a_port_change_moves_the_running_version_in_place(contract_engine: Engine, instances: Instances,
                                                          tmp_path: Path) -> None:
    """A deploy naming another port moves the app there (issue 32: an App's port change is an update, never a
    delete with its stored versions): the same stored version serves on the new port, the old one refuses,
    the versions stay."""
    src = tmp_path / "greet"
    shutil.copytree(ROOT / "examples" / "greet", src)
    a = instances.provision(password=PW)
    app = f"cp_{a.name[-8:]}"
    (src / "dbos-config.yaml").write_text((src / "dbos-config.yaml").read_text().replace("name: greet", f"name: {app}"))
    access = AppDatabaseAccess(a.name, a.hostname, a.port, a.username, PW)
    v1, z1 = pack(src)
    try:
        first = contract_engine.apps.deploy(AppDeploy(app, v1, z1, access, "greet_db", {}, owner="ct"))
        port = free_port(contract_engine)
        moved = contract_engine.apps.deploy(AppDeploy(app, first.version, None, access, "greet_db", {}, port=port,
                                                     owner="ct"))
        assert moved.port == port and moved.app_url.endswith(f":{port}") and moved.version == first.version
        assert get(moved.app_url + "/")["version"] == first.version
        with pytest.raises(OSError):
            get(first.app_url + "/")
        assert [v.version for v in contract_engine.apps.versions(app)] == [first.version]
        info = contract_engine.apps.info(app)
        assert info is not None and info.port == port and info.status == AppStatus.AVAILABLE.value
    finally:
        contract_engine.apps.delete(app)
