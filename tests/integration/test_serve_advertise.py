"""``pulumi-dbos serve --advertise-host``: instances and apps listen on (and report) the advertised host.

Loopback only: the advertised host is ``localhost``. The instances' settings say it, the reported
``HostName``/``AppURL`` name it, the user's role connects through it with its password, the internal
``postgres`` superuser is still refused over TCP, and an instance started by a serve without the
option goes back to 127.0.0.1 (the setting applies at every start).
"""

from __future__ import annotations

import base64
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import psycopg
import pytest

from pulumi_dbos.appsource import pack
from pulumi_dbos.engine.local.server import REMOTE_HBA
from tests.conftest import ROOT
from tests.integration.test_serve import PW, USER, client, get_json, name, wait_for
from tests.support.serve import Serve, running_serve

HOST = "localhost"


@pytest.fixture(scope="module")
def serve() -> Iterator[Serve]:
    with running_serve(advertise_host=HOST) as s:
        yield s


@pytest.fixture(scope="module")
def api(serve: Serve) -> Iterator[httpx.Client]:
    with client(serve, serve.token("acme", "alice")) as c:
        yield c


def provision(api: httpx.Client, db: str) -> dict[str, Any]:
    r = api.post("/v1alpha1/acme/databases/userdb", json={"Name": db, "AdminName": USER, "AdminPassword": PW})
    assert r.status_code == 201, r.text
    return api.get(f"/v1alpha1/acme/databases/userdb/info/{db}").json()  # type: ignore[no-any-return]


def pgdata(serve: Serve, db: str) -> Path:
    return serve.data_dir / "orgs" / "acme" / "instances" / db / "data"


def listening(serve: Serve, db: str) -> tuple[str, bool]:
    """The instance's listen_addresses line and whether its pg_hba.conf accepts any address."""
    conf = (pgdata(serve, db) / "instance.conf").read_text()
    line = next(x for x in conf.splitlines() if x.startswith("listen_addresses"))
    return line, REMOTE_HBA in (pgdata(serve, db) / "pg_hba.conf").read_text()


def connects(host: str, port: int, user: str, password: str) -> None:
    with psycopg.connect(host=host, port=port, user=user, password=password, dbname="postgres",
                         connect_timeout=5) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def restart_serve(serve: Serve, advertise_host: str | None) -> None:
    serve.stop()
    serve.advertise_host = advertise_host
    serve.start()


def test_instances_and_apps_listen_on_and_report_the_advertised_host(
        serve: Serve, api: httpx.Client, tmp_path: Path) -> None:
    db = name("adv")
    i = provision(api, db)
    assert i["HostName"] == HOST and i["Status"] == "available"
    assert listening(serve, db) == ("listen_addresses = '127.0.0.1,localhost'", True)
    connects(HOST, i["Port"], USER, PW)
    connects("127.0.0.1", i["Port"], USER, PW)
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        connects(HOST, i["Port"], USER, "wrong-pw-1")
    # the internal superuser stays socket-only: its pg_hba reject line comes before the any-address ones
    for password in ("", PW, "postgres"):
        with pytest.raises(psycopg.OperationalError, match="rejects connection"):
            connects(HOST, i["Port"], "postgres", password)
    assert {x["HostName"] for x in api.get("/v1alpha1/acme/databases").json()} == {HOST}

    app = name("adva")
    src = tmp_path / "greet"
    shutil.copytree(ROOT / "examples" / "greet", src)
    cfg = src / "dbos-config.yaml"
    cfg.write_text(cfg.read_text().replace("name: greet", f"name: {app}"))
    base = f"/v1alpha1/acme/applications/{app}"
    try:
        r = api.put("/v1alpha1/acme/applications", json={"name": app, "database": db, "language": "python"})
        assert r.status_code == 200, r.text
        v1, z1 = pack(src)
        r = api.post(base, json={"application_archive": base64.b64encode(z1).decode()})
        assert r.status_code == 200, r.text
        a = api.get(base).json()
        assert a["Status"] == "AVAILABLE" and a["AppURL"].startswith(f"http://{HOST}:"), a
        port = int(a["AppURL"].removeprefix(f"http://{HOST}:").rstrip("/"))
        assert a["AppURL"] == f"http://{HOST}:{port}/"
        assert get_json(a["AppURL"])["version"] == v1
        assert get_json(f"http://127.0.0.1:{port}/")["version"] == v1

        # a serve without the option: at their next start the instance and the app's proxy go back to 127.0.0.1
        restart_serve(serve, None)
        assert api.get(f"/v1alpha1/acme/databases/userdb/info/{db}").json()["HostName"] == "127.0.0.1"
        assert api.post(f"/v1alpha1/acme/databases/userdb/{db}/stop").json()["Status"] == "stopped"
        assert api.post(f"/v1alpha1/acme/databases/userdb/{db}/start").json()["Status"] == "available"
        assert listening(serve, db) == ("listen_addresses = '127.0.0.1'", False)
        connects("127.0.0.1", i["Port"], USER, PW)
        assert api.post(base, json={"previous_version": v1}).status_code == 200
        a = api.get(base).json()
        assert a["AppURL"] == f"http://127.0.0.1:{port}/" and get_json(a["AppURL"])["version"] == v1
        proxy = [p for p in psutil.process_iter(["cmdline"])  # the proxy itself, not its sandbox's processes
                 if p.info["cmdline"] and "proxy.py" in " ".join(p.info["cmdline"]) and str(port) in p.info["cmdline"]
                 and len(p.info["cmdline"]) > 1 and p.info["cmdline"][1].endswith("proxy.py")]
        assert len(proxy) == 1 and proxy[0].info["cmdline"][-1].endswith("proxy.ready"), proxy

        # and back: advertised again after the next start
        restart_serve(serve, HOST)
        assert api.post(f"/v1alpha1/acme/databases/userdb/{db}/stop").json()["Status"] == "stopped"
        assert api.post(f"/v1alpha1/acme/databases/userdb/{db}/start").json()["HostName"] == HOST
        assert listening(serve, db) == ("listen_addresses = '127.0.0.1,localhost'", True)
        connects(HOST, i["Port"], USER, PW)
        assert api.post(base, json={"previous_version": v1}).status_code == 200
        wait_for(lambda: api.get(base).json()["Status"] == "AVAILABLE", 60, "the app was not available")
        assert api.get(base).json()["AppURL"] == f"http://{HOST}:{port}/"
        assert get_json(f"http://{HOST}:{port}/")["version"] == v1
    finally:
        api.request("DELETE", base, json={})
        api.delete(f"/v1alpha1/acme/databases/userdb/{db}")


def test_an_advertise_host_that_is_not_this_machines_is_refused() -> None:
    from pulumi_dbos.errors import DbosError
    from pulumi_dbos.serve import check_advertise_host

    assert check_advertise_host(HOST) == HOST
    for bad in ("192.0.2.1", "a,b", "x'; drop", ""):
        with pytest.raises(DbosError):
            check_advertise_host(bad)
