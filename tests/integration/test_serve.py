"""`pulumi-dbos serve` over real PostgreSQL clusters, through HTTPS with its own certificate and tokens.

One serve for most of the module (``serve``); a second one with 2-second scheduled backups (``busy``) for the
backups, the crash in the middle of a restore and the restart of stopped instances.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import secrets
import shutil
import signal
import ssl
import threading
import time
import urllib.request
import zipfile
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
import jwt
import psycopg
import pytest

from pulumi_dbos.appsource import pack
from pulumi_dbos.engine import LocalEngine
from pulumi_dbos.serve import auth
from tests.conftest import ROOT
from tests.support.serve import Serve, running_serve

PW = "Serve-pw-1"
NEW_PW = "Serve-pw-2"
USER = "alice_u"


# ---------------------------------------------------------------------------- helpers
def client(serve: Serve, token: str | None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return httpx.Client(base_url=serve.url, verify=ssl.create_default_context(cafile=str(serve.ca_cert)),
                        headers=headers, timeout=600)


def name(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(3)}"


def cloud_error(r: httpx.Response, status: int | tuple[int, ...], text: str = "") -> dict[str, Any]:
    """``r`` is a DBOS Cloud error body (what the official CLI prints) with that status and message text."""
    assert r.status_code in ((status,) if isinstance(status, int) else status), (r.status_code, r.text)
    body = r.json()
    assert set(body) >= {"message", "statusCode", "requestID"} and body["statusCode"] == r.status_code, body
    assert body["requestID"].startswith("req-") and len(body["requestID"]) == 12, body
    assert text in body["message"], body
    assert "Traceback" not in r.text
    return body  # type: ignore[no-any-return]


def provision(api: httpx.Client, db: str, password: str = PW, org: str = "acme", **ext: Any) -> dict[str, Any]:
    r = api.post(f"/v1alpha1/{org}/databases/userdb", json={"Name": db, "AdminName": USER, "AdminPassword": password,
                                                            **ext})
    assert r.status_code in (200, 201), r.text
    return info(api, db, org)


def info(api: httpx.Client, db: str, org: str = "acme") -> dict[str, Any]:
    r = api.get(f"/v1alpha1/{org}/databases/userdb/info/{db}")
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def names(api: httpx.Client, org: str = "acme") -> set[str]:
    r = api.get(f"/v1alpha1/{org}/databases")
    assert r.status_code == 200, r.text
    return {i["PostgresInstanceName"] for i in r.json()}


def connect(i: dict[str, Any], password: str, user: str | None = None) -> psycopg.Connection[tuple[Any, ...]]:
    return psycopg.connect(host=i["HostName"], port=i["Port"], user=user or i["DatabaseUsername"], password=password,
                           dbname="postgres", connect_timeout=5, autocommit=True)


def authenticates(i: dict[str, Any], password: str) -> bool:
    try:
        with connect(i, password) as conn:
            conn.execute("SELECT 1")
    except psycopg.OperationalError:
        return False
    return True


def rows(i: dict[str, Any], password: str) -> list[int]:
    with connect(i, password) as conn:
        return [r[0] for r in conn.execute("SELECT x FROM t ORDER BY x")]


def server_now(conn: psycopg.Connection[tuple[Any, ...]]) -> datetime:
    row = conn.execute("SELECT clock_timestamp()").fetchone()
    assert row is not None and isinstance(row[0], datetime)
    return row[0]


def rfc3339(dt: datetime) -> str:
    return dt.astimezone(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


def wait_for(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {timeout:.0f}s")
        time.sleep(0.2)


def get_json(url: str) -> dict[str, Any]:
    return json.loads(urllib.request.urlopen(url, timeout=30).read())  # type: ignore[no-any-return]  # noqa: S310


def with_directory_entries(archive: bytes) -> bytes:
    """``archive`` with an entry for every directory (``migrations/``) before its files."""
    buf = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(archive)) as src, zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as out:
        seen: set[str] = set()
        for info in src.infolist():
            parts = info.filename.split("/")[:-1]
            for n in range(1, len(parts) + 1):
                d = "/".join(parts[:n]) + "/"
                if d not in seen:
                    seen.add(d)
                    out.writestr(zipfile.ZipInfo(d), b"")
            out.writestr(info, src.read(info))
    return buf.getvalue()


# ---------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def serve() -> Iterator[Serve]:
    with running_serve() as s:
        yield s


@pytest.fixture(scope="module")
def api(serve: Serve) -> Iterator[httpx.Client]:
    with client(serve, serve.token("acme", "alice")) as c:
        yield c


@pytest.fixture(scope="module")
def busy() -> Iterator[Serve]:
    with running_serve(backup_interval=2) as s:
        yield s


# ---------------------------------------------------------------------------- auth
def test_profile_needs_a_valid_token(serve: Serve, api: httpx.Client) -> None:
    with client(serve, None) as anonymous:
        cloud_error(anonymous.get("/v1alpha1/user/profile"), 401)
    assert api.get("/v1alpha1/user/profile").json() == {
        "Name": "alice", "Email": "alice@acme.local", "Organization": "acme", "SubscriptionPlan": "pulumi-dbos",
        "Server": "pulumi-dbos serve"}
    key = (serve.data_dir / "serve" / "jwt.key").read_bytes()
    assert (serve.data_dir / "serve" / "jwt.key").stat().st_mode & 0o777 == 0o600
    now = int(time.time())
    claims = {"sub": "alice", "org": "acme", "iss": "pulumi-dbos serve", "iat": now - 60}
    bad = {
        "expired (serve's own issuer)": auth.issue(key, "acme", "alice", ttl_hours=-1),  # the CLI refuses < 1 h
        "expired": jwt.encode({**claims, "exp": now - 1}, key, algorithm="HS256"),
        "forged": jwt.encode({**claims, "exp": now + 3600}, secrets.token_bytes(32), algorithm="HS256"),
        "other issuer": jwt.encode({**claims, "exp": now + 3600, "iss": "someone"}, key, algorithm="HS256"),
        "garbage": "not.a.jwt",
    }
    for what, token in bad.items():
        with client(serve, token) as c:
            for path in ("/v1alpha1/user/profile", "/v1alpha1/acme/databases"):
                body = cloud_error(c.get(path), 401)
                assert token not in json.dumps(body), what
                assert "user not found in DBOS Cloud" not in body["message"]  # would start the CLI's registration


# ---------------------------------------------------------------------------- databases
def test_provision_info_connect_list_reset_destroy(serve: Serve, api: httpx.Client) -> None:
    db = name("sv")
    r = api.post("/v1alpha1/acme/databases/userdb", json={"Name": db, "AdminName": USER, "AdminPassword": PW,
                                                           "RetentionHours": 12, "Owner": "proj/stack/db"})
    assert r.status_code == 201, r.text
    raw = api.get(f"/v1alpha1/acme/databases/userdb/info/{db}")
    assert '"SupabaseReference":null' in raw.text.replace(" ", "")  # explicit null: the CLI tests !== null
    i = raw.json()
    assert i["PostgresInstanceName"] == db and i["Status"] == "available" and i["IsLinked"] is False
    assert i["HostName"] == "127.0.0.1" and i["DatabaseUsername"] == USER
    assert i["Kind"] == "local" and i["RetentionHours"] == 12 and i["Owner"] == "proj/stack/db"
    assert i["EarliestRestorableTime"].endswith("Z") and i["LatestRestorableTime"].endswith("Z")
    assert authenticates(i, PW)
    assert db in names(api)
    cloud_error(api.post("/v1alpha1/acme/databases/userdb", json={"Name": db, "AdminName": USER,
                                                                   "AdminPassword": PW}), 409)

    # reset: the old password stops working, the new one works
    r = api.post(f"/v1alpha1/acme/databases/userdb/{db}/credentials", json={"Password": NEW_PW})
    assert r.status_code < 300, r.text
    assert not authenticates(i, PW) and authenticates(i, NEW_PW)
    cloud_error(api.post(f"/v1alpha1/acme/databases/userdb/{db}/credentials", json={"Password": "short"}), 400)
    assert authenticates(i, NEW_PW)

    # extensions: patch, backup, stop/start
    r = api.patch(f"/v1alpha1/acme/databases/userdb/{db}", json={"RetentionHours": 48, "Owner": "proj/other/db"})
    assert r.status_code == 200 and r.json()["RetentionHours"] == 48 and r.json()["Owner"] == "proj/other/db"
    b = api.post(f"/v1alpha1/acme/databases/userdb/{db}/backup")
    assert b.status_code < 300 and b.json()["PostgresInstanceName"] == db, b.text
    assert api.post(f"/v1alpha1/acme/databases/userdb/{db}/stop").json()["Status"] == "stopped"
    assert api.post(f"/v1alpha1/acme/databases/userdb/{db}/start").json()["Status"] == "available"
    problems = api.post("/v1alpha1/acme/databases/preflight", json={"Kind": "local", "Name": db}).json()
    assert [p["Field"] for p in problems] == ["instance_name"]

    assert api.delete(f"/v1alpha1/acme/databases/userdb/{db}").status_code < 300
    cloud_error(api.get(f"/v1alpha1/acme/databases/userdb/info/{db}"), 404, f"database {db} not found")
    cloud_error(api.delete(f"/v1alpha1/acme/databases/userdb/{db}"), 404, f"database {db} not found")
    assert db not in names(api)
    creds_file = serve.data_dir / "serve" / "credentials.json"
    assert creds_file.stat().st_mode & 0o777 == 0o600
    assert db not in json.loads(creds_file.read_text() or "{}").get("acme", {})
    assert PW not in serve.log() and NEW_PW not in serve.log()


def test_restore_holds_the_rows_as_of_the_time_and_the_sources_password(api: httpx.Client, serve: Serve) -> None:
    src = provision(api, name("src"))
    with connect(src, PW) as conn:
        conn.execute("CREATE TABLE t (x int)")
        conn.execute("INSERT INTO t VALUES (1)")
        time.sleep(0.05)
        between = server_now(conn)
        time.sleep(0.05)
        conn.execute("INSERT INTO t VALUES (2)")
    # the source's password changes before the restore: the restored user gets the current one
    assert api.post(f"/v1alpha1/acme/databases/userdb/{src['PostgresInstanceName']}/credentials",
                    json={"Password": NEW_PW}).status_code < 300
    target = name("rst")
    before = names(api)
    for body, status, text in (
            ({"RestoreName": target, "RestoreTimestamp": "yesterday"}, 400, "RFC3339"),
            ({"RestoreName": target, "RestoreTimestamp": "2001-01-01T00:00:00Z"}, 400, "outside"),
            ({"RestoreName": "Bad-Name", "RestoreTimestamp": rfc3339(between)}, 400, "instance_name")):
        cloud_error(api.post(f"/v1alpha1/acme/databases/userdb/{src['PostgresInstanceName']}/restore", json=body),
                    status, text)
    assert names(api) == before
    r = api.post(f"/v1alpha1/acme/databases/userdb/{src['PostgresInstanceName']}/restore",
                 json={"RestoreName": target, "RestoreTimestamp": rfc3339(between)})
    assert r.status_code < 300, r.text
    restored = info(api, target)  # visible at once (the CLI polls it), and done
    assert restored["Status"] == "available" and restored["Kind"] == "restored"
    assert restored["SourceInstance"] == src["PostgresInstanceName"] and restored["RestoredTo"]
    assert restored["DatabaseUsername"] == USER and restored["Port"] != src["Port"]
    assert rows(restored, NEW_PW) == [1] and not authenticates(restored, PW)
    assert rows(src, NEW_PW) == [1, 2]
    cloud_error(api.post(f"/v1alpha1/acme/databases/userdb/{src['PostgresInstanceName']}/restore",
                         json={"RestoreName": target, "RestoreTimestamp": rfc3339(between)}), 409)
    for db in (target, src["PostgresInstanceName"]):
        api.delete(f"/v1alpha1/acme/databases/userdb/{db}")


def test_link_and_unlink_another_server(api: httpx.Client) -> None:
    server = provision(api, name("ext"))
    linked = name("lnk")
    body = {"Name": linked, "HostName": "127.0.0.1", "Port": server["Port"], "Password": PW,
            "captureProvenance": False, "Username": USER}
    cloud_error(api.post("/v1alpha1/acme/databases/byod", json={**body, "Port": None}), 400, "Port")
    cloud_error(api.post("/v1alpha1/acme/databases/byod", json={**body, "Password": "Wrong-pw-9"}), 400)
    assert linked not in names(api)
    assert api.post("/v1alpha1/acme/databases/byod", json=body).status_code < 300
    i = info(api, linked)
    assert i["IsLinked"] is True and i["SupabaseReference"] is None and i["Port"] == server["Port"]
    assert i["Kind"] == "linked" and authenticates(i, PW)
    cloud_error(api.post(f"/v1alpha1/acme/databases/userdb/{linked}/credentials", json={"Password": NEW_PW}), 400,
                "cannot reset the password of a linked database")
    assert api.delete(f"/v1alpha1/acme/databases/byod/{linked}").status_code < 300
    cloud_error(api.get(f"/v1alpha1/acme/databases/userdb/info/{linked}"), 404, f"database {linked} not found")
    cloud_error(api.delete(f"/v1alpha1/acme/databases/byod/{linked}"), 404)
    assert authenticates(server, PW)  # the server itself is untouched
    api.delete(f"/v1alpha1/acme/databases/userdb/{server['PostgresInstanceName']}")


def test_organizations_are_isolated(serve: Serve, api: httpx.Client) -> None:
    db = provision(api, name("iso"))["PostgresInstanceName"]
    try:
        with client(serve, serve.token("globex", "bob")) as globex:
            assert globex.get("/v1alpha1/user/profile").json()["Organization"] == "globex"
            assert names(globex, "globex") == set()
            for method, path in (("GET", "/v1alpha1/acme/databases"), ("GET", f"/v1alpha1/acme/databases/userdb/info/{db}"),
                                 ("DELETE", f"/v1alpha1/acme/databases/userdb/{db}"),
                                 ("GET", "/v1alpha1/acme/applications")):
                body = cloud_error(globex.request(method, path), 403)
                assert db not in body["message"]
            cloud_error(globex.get(f"/v1alpha1/globex/databases/userdb/info/{db}"), 404)
        assert info(api, db)["Status"] == "available"
    finally:
        api.delete(f"/v1alpha1/acme/databases/userdb/{db}")


def test_bad_bodies_get_cloud_errors_and_create_nothing(api: httpx.Client) -> None:
    before = names(api)
    good = {"Name": name("bad"), "AdminName": USER, "AdminPassword": PW}
    for body, status in (
            ({**good, "Name": "Bad Name!"}, 400), ({**good, "Name": "ab"}, 400),
            ({**good, "AdminPassword": "has@sign1"}, 400), ({**good, "AdminPassword": "short"}, 400),
            ({**good, "AdminName": "postgres"}, 400), ({**good, "Port": 80}, 400),
            ({**good, "RetentionHours": -1}, 400), ({"Name": good["Name"]}, 422), ({**good, "Port": "x"}, 422)):
        body_text = cloud_error(api.post("/v1alpha1/acme/databases/userdb", json=body), status)["message"]
        assert PW not in body_text and "has@sign1" not in body_text
    r = api.post("/v1alpha1/acme/databases/userdb", content=b"{not json", headers={"Content-Type": "application/json"})
    cloud_error(r, (400, 422))
    cloud_error(api.get("/v1alpha1/acme/no/such/route"), 404)
    assert names(api) == before


# ---------------------------------------------------------------------------- apps
def test_app_register_deploy_versions_previous_version_restart_and_delete(
        serve: Serve, api: httpx.Client, tmp_path: Path) -> None:
    db = provision(api, name("apd"))
    app = name("sa")
    src = tmp_path / "greet"
    shutil.copytree(ROOT / "examples" / "greet", src)
    cfg = src / "dbos-config.yaml"
    cfg.write_text(cfg.read_text().replace("name: greet", f"name: {app}"))
    base = f"/v1alpha1/acme/applications/{app}"
    try:
        cloud_error(api.get(base), 404, f"application {app} not found")
        cloud_error(api.put("/v1alpha1/acme/applications", json={"name": app, "database": "nosuch_db",
                                                                  "language": "python"}), 404,
                    "database nosuch_db not found")
        r = api.put("/v1alpha1/acme/applications", json={"name": app, "database": db["PostgresInstanceName"],
                                                          "language": "python", "executors_memory_mib": "1024"})
        assert r.status_code == 200 and isinstance(r.json(), str), r.text
        a = api.get(base).json()
        assert (a["Status"], a["Version"], a["ApplicationDatabaseName"], a["ExecutorsMemoryMib"]) == \
            ("REGISTERED", "", "", 1024)
        assert api.post("/v1alpha1/acme/applications/secrets", json={
            "ApplicationName": app, "SecretName": "GREETING_KEY", "ClearSecretValue": "s3cret"}).status_code == 200
        assert api.get(f"{base}/secrets").json() == ["GREETING_KEY"]

        v1, z1 = pack(src)
        r = api.post(base, json={"application_archive": base64.b64encode(z1).decode()})
        assert r.status_code == 200, r.text
        assert r.json() == {"ApplicationName": app, "ApplicationVersion": v1}  # the client's version id
        a = api.get(base).json()
        assert a["Status"] == "AVAILABLE" and a["Version"] == v1 and a["ApplicationDatabaseName"] == app
        assert a["AppURL"].startswith("http://127.0.0.1:") and a["AppURL"].endswith("/")
        assert get_json(a["AppURL"])["version"] == v1
        assert app in {x["Name"] for x in api.get("/v1alpha1/acme/applications").json()}

        main = src / "main.py"
        main.write_text(main.read_text().replace('GREETING = "Hello"', 'GREETING = "Hi"'))
        _, z2 = pack(src)
        z2 = with_directory_entries(z2)  # as the official CLI's JSZip archives have them
        v2 = hashlib.sha256(z2).hexdigest()[:12]
        assert api.post(base, json={"application_archive": base64.b64encode(z2).decode()}).json()[
            "ApplicationVersion"] == v2
        assert get_json(a["AppURL"]) == {"app": app, "version": v2, "greeting": "Hi"}
        assert [v["Version"] for v in api.get(f"{base}/versions").json()] == [v1, v2]

        # a version that fails to start: an error with the log tail; v2 keeps serving
        cfg.write_text(cfg.read_text().replace("python3 main.py", "python3 -c 'raise SystemExit(3)'"))
        _v3, z3 = pack(src)
        body = cloud_error(api.post(base, json={"application_archive": base64.b64encode(z3).decode()}),
                           (400, 500), "failed")
        assert body.get("DetailedError") and "s3cret" not in json.dumps(body)
        assert get_json(a["AppURL"])["version"] == v2

        # previous_version
        assert api.post(base, json={"previous_version": v1}).json()["ApplicationVersion"] == v1
        assert get_json(a["AppURL"])["version"] == v1
        cloud_error(api.post(base, json={"previous_version": "nope"}), 400, "not stored")
        cloud_error(api.post(base, json={}), 400)

        # a crash of serve and of the app's process: the restarted serve restarts the app
        serve.kill()
        backend = LocalEngine(serve.data_dir / "orgs" / "acme").apps.rows.get(app)
        assert backend is not None and backend.backend_pid
        os.kill(backend.backend_pid, signal.SIGKILL)
        serve.start()
        wait_for(lambda: api.get(base).json()["Status"] == "AVAILABLE", 120, "the app was not restarted")
        assert get_json(a["AppURL"])["version"] == v1
        assert "restarted app" in serve.log()

        logs = api.get(f"/v1alpha1/acme/logs/applications/{app}", params={"last": 60, "limit": 50, "format": "json"})
        assert logs.status_code == 200 and "deploy" in logs.json()["body"] and logs.json()["end"] is True
        assert api.delete(f"{base}/secrets/GREETING_KEY").status_code == 204
        cloud_error(api.delete(f"{base}/secrets/GREETING_KEY"), 404)

        # node is refused clearly
        cfg.write_text(cfg.read_text().replace("language: python", "language: node"))
        _vn, zn = pack(src)
        cloud_error(api.post(base, json={"application_archive": base64.b64encode(zn).decode()}), 400, "Python")

        assert api.request("DELETE", base, json={"dropdb": True}).status_code < 300
        cloud_error(api.get(base), 404, f"application {app} not found")
        with connect(db, PW) as conn:
            dbs = {r[0] for r in conn.execute("SELECT datname FROM pg_database")}
        assert app not in dbs and f"{app}_dbos_sys" not in dbs
    finally:
        api.request("DELETE", base, json={})
        api.delete(f"/v1alpha1/acme/databases/userdb/{db['PostgresInstanceName']}")


# ---------------------------------------------------------------------------- background work and crashes
def test_scheduled_backups(busy: Serve) -> None:
    with client(busy, busy.token()) as api:
        db = provision(api, name("bk"))["PostgresInstanceName"]
        engine = LocalEngine(busy.data_dir / "orgs" / "acme")
        first = len(engine.catalog.backups(db))
        wait_for(lambda: len(engine.catalog.backups(db)) >= first + 2, 60, "no scheduled base backups were taken")
        assert "base backup" in busy.log()
        api.delete(f"/v1alpha1/acme/databases/userdb/{db}")


def test_a_restore_cut_by_a_crash_leaves_nothing_half_made(busy: Serve) -> None:
    with client(busy, busy.token()) as api:
        src = provision(api, name("crs"))
        with connect(src, PW) as conn:
            conn.execute("CREATE TABLE t (x int)")
            conn.execute("INSERT INTO t VALUES (1)")
            time.sleep(0.05)
            at = rfc3339(server_now(conn))
            time.sleep(0.05)
            conn.execute("INSERT INTO t VALUES (2)")
        target = name("cut")
        path = f"/v1alpha1/acme/databases/userdb/{src['PostgresInstanceName']}/restore"
        body = {"RestoreName": target, "RestoreTimestamp": at}

        def restore() -> None:
            try:
                api.post(path, json=body)
            except httpx.HTTPError:
                pass  # the server died under it

        t = threading.Thread(target=restore)
        t.start()
        time.sleep(0.5)
        busy.kill()
        t.join(60)
        # while serve is down, the source's server stops (a reboot): the restarted serve starts it again
        LocalEngine(busy.data_dir / "orgs" / "acme").stop(src["PostgresInstanceName"])
        busy.start()
    # a client of its own for the restarted serve: the first one's pooled connections went with the killed process
    # (a request sent on one of them: "Server disconnected without sending a response")
    with client(busy, busy.token()) as api:
        try:
            after_the_crash(api, src, target, path, body)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- serve's log:\n{busy.log()[-6000:]}") from None


def after_the_crash(api: httpx.Client, src: dict[str, Any], target: str, path: str, body: dict[str, Any]) -> None:
    """The half-made instance is gone, or whole; the stopped source runs again; the restore can be re-run."""
    r = api.get(f"/v1alpha1/acme/databases/userdb/info/{target}")
    if r.status_code == 200:  # finished before the kill: whole
        assert r.json()["Status"] == "available" and rows(r.json(), PW) == [1]
        api.delete(f"/v1alpha1/acme/databases/userdb/{target}")
    else:
        cloud_error(r, 404)
    assert all(i["Status"] not in ("creating", "restoring")
               for i in api.get("/v1alpha1/acme/databases").json())
    wait_for(lambda: info(api, src["PostgresInstanceName"])["Status"] == "available", 60,
             "the stopped source was not started again")
    r = api.post(path, json=body)  # the same restore again
    assert r.status_code < 300, r.text
    assert rows(info(api, target), PW) == [1]
    for db in (target, src["PostgresInstanceName"]):
        api.delete(f"/v1alpha1/acme/databases/userdb/{db}")
