"""`pulumi-dbos serve --cloud-exact` at the wire: DBOS Cloud's answers, every pulumi-dbos extension withheld
(the engine's path without extensions runs against it in tests/contract and tests/e2e)."""

from __future__ import annotations

import base64
import io
import secrets
import zipfile
from collections.abc import Iterator

import pytest

from pulumi_dbos.appsource import pack
from pulumi_dbos.cloudapi.models import Application, UserDBInstance
from pulumi_dbos.serve.exact import EXTENSIONS
from tests.conftest import ROOT
from tests.integration.test_serve import client, cloud_error
from tests.support.serve import Serve, running_serve

PW = "Exact-pw-123"


@pytest.fixture(scope="module")
def exact() -> Iterator[Serve]:
    with running_serve(extra_args=("--cloud-exact",)) as s:
        yield s


def test_dbos_cloud_answers_without_extensions(exact: Serve) -> None:
    org = f"ex{secrets.token_hex(3)}"
    db = f"exdb_{secrets.token_hex(2)}"
    with client(exact, exact.token(org, "alice")) as c:
        profile = c.get("/v1alpha1/user/profile").json()
        assert set(profile) == {"Name", "Email", "Organization", "SubscriptionPlan"}

        # extension request fields are ignored (DBOS Cloud chooses port and retention), and said in the log
        r = c.post(f"/v1alpha1/{org}/databases/userdb", json={
            "Name": db, "AdminName": "alice_u", "AdminPassword": PW, "Port": 15999, "RetentionHours": 48,
            "Owner": "someone"})
        assert r.status_code < 300, r.text
        info = c.get(f"/v1alpha1/{org}/databases/userdb/info/{db}").json()
        assert info["Port"] != 15999 and info["Status"] == "available" and info["SupabaseReference"] is None
        assert not set(info) & EXTENSIONS[UserDBInstance], info
        assert "ignored the pulumi-dbos extension field(s) Owner, Port, RetentionHours of provision" in exact.log()

        # no extension routes: 404, as on DBOS Cloud; the instance is untouched
        for method, path in (("PATCH", f"databases/userdb/{db}"), ("POST", f"databases/userdb/{db}/backup"),
                             ("POST", f"databases/userdb/{db}/stop"), ("POST", f"databases/userdb/{db}/start"),
                             ("POST", "databases/preflight"), ("GET", f"databases/userdb/{db}/drills"),
                             ("POST", f"databases/userdb/{db}/drills")):
            cloud_error(c.request(method, f"/v1alpha1/{org}/{path}", json={"RetentionHours": 1, "Port": 16000,
                                                                           "Kind": "local", "Name": db}), 404)
        assert c.get(f"/v1alpha1/{org}/databases/userdb/info/{db}").json() == info

        # a restore takes a timestamp, not `latest`
        cloud_error(c.post(f"/v1alpha1/{org}/databases/userdb/{db}/restore",
                           json={"RestoreName": f"{db}_r", "RestoreTimestamp": "latest"}), 400, "RFC3339")

        # app versions are numbers DBOS Cloud assigns, one per deploy (the same content included)
        app = f"exa_{secrets.token_hex(2)}"
        r = c.put(f"/v1alpha1/{org}/applications", json={"name": app, "database": db, "language": "python",
                                                         "Port": 18999})
        assert r.status_code < 300, r.text
        src = ROOT / "examples" / "greet"
        _, archive = pack(src)
        archive = renamed(archive, app)
        got = []
        for _ in range(2):
            r = c.post(f"/v1alpha1/{org}/applications/{app}",
                       json={"application_archive": base64.b64encode(archive).decode()})
            assert r.status_code < 300, r.text
            got.append(r.json()["ApplicationVersion"])
        assert got == ["1", "2"]
        listed = c.get(f"/v1alpha1/{org}/applications/{app}").json()
        assert listed["Version"] == "2" and listed["ApplicationDatabaseName"] == app
        assert not set(listed) & EXTENSIONS[Application] and "18999" not in listed["AppURL"]
        r = c.post(f"/v1alpha1/{org}/applications/{app}", json={"previous_version": "1"})
        assert r.status_code < 300 and r.json()["ApplicationVersion"] == "1", r.text
        assert [v["Version"] for v in c.get(f"/v1alpha1/{org}/applications/{app}/versions").json()] == ["1", "2"]
        assert c.request("DELETE", f"/v1alpha1/{org}/applications/{app}", json={}).status_code < 300
        assert c.delete(f"/v1alpha1/{org}/databases/userdb/{db}").status_code < 300


def renamed(archive: bytes, app: str) -> bytes:
    """``archive`` with ``name: <app>`` in its dbos-config.yaml."""
    buf = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(archive)) as src, zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as out:
        for info in src.infolist():
            data = src.read(info)
            if info.filename == "dbos-config.yaml":
                data = data.replace(b"name: greet", f"name: {app}".encode())
            out.writestr(info, data)
    return buf.getvalue()


def test_restore_drills_are_unavailable_without_extensions(exact: Serve, monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    from pulumi_dbos.cli import main
    from pulumi_dbos.engine import get_engine
    from pulumi_dbos.errors import DbosError

    org = f"dr{secrets.token_hex(3)}"
    token = exact.token(org=org, user="bob")
    db = f"dr_{secrets.token_hex(3)}"
    with client(exact, token) as c:
        r = c.post(f"/v1alpha1/{org}/databases/userdb", json={"Name": db, "AdminName": "bob_u", "AdminPassword": PW})
        assert r.status_code in (200, 201), r.text
    eng = get_engine("dbos-cloud", domain=exact.domain, token=token, ca_cert=str(exact.ca_cert))
    assert eng.drills(db) is None
    with pytest.raises(DbosError, match="pulumi-dbos serve extension"):
        eng.drill(db)
    monkeypatch.setenv("DBOS_CLOUD_TOKEN", token)
    where = ["--engine", "dbos-cloud", "--cloud-domain", exact.domain, "--cloud-ca-cert", str(exact.ca_cert)]
    assert main(["db", "drills", db, *where]) == 1
    assert "pulumi-dbos serve extension" in capsys.readouterr().err
    assert main(["db", "drill", db, *where]) == 1
    assert "pulumi-dbos serve extension" in capsys.readouterr().err
