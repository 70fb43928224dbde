"""The dbos-cloud engine against a fake DBOS Cloud (``httpx.MockTransport``): retries, errors, deadlines,
rollbacks, call counts, never an auto-provision, never a secret in a message."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from pulumi_dbos.cloudapi.models import SERVE_SERVER
from pulumi_dbos.config import UNKNOWN
from pulumi_dbos.engine import get_engine
from pulumi_dbos.engine.contract import AppDatabaseAccess, AppDeploy, Kind, Preflight
from pulumi_dbos.engine.dbos_cloud import DbosCloudEngine, resolve_token
from pulumi_dbos.engine.dbos_cloud.client import CloudClient
from pulumi_dbos.errors import AlreadyExistsError, DbosError, NotFoundError, ValidationError

ORG = "acme"
TOKEN = "tok-" + "x" * 40
PW = "Unit-Passw0rd-1"
SECRET_ENV = "Env-secret-value-9"


def jwt(exp: float) -> str:
    def part(d: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(d).encode()).decode().rstrip("=")
    return f"{part({'alg': 'HS256'})}.{part({'sub': 'alice', 'exp': exp})}.c2ln"


def api_error(status: int, message: str, detailed: str | None = None) -> httpx.Response:
    body: dict[str, Any] = {"message": message, "statusCode": status, "requestID": f"req-{status}"}
    if detailed:
        body["DetailedError"] = detailed
    return httpx.Response(status, json=body)


def db(name: str, status: str = "available", **kw: Any) -> dict[str, Any]:
    return {"PostgresInstanceName": name, "Status": status, "HostName": "db.example.test", "Port": 5432,
            "DatabaseUsername": kw.pop("user", "dbuser"), "IsLinked": kw.pop("linked", False),
            "SupabaseReference": None, **kw}


class FakeCloud:
    """A small, stateful DBOS Cloud: records every request; ``hooks`` answer first (fault injection)."""

    def __init__(self, *, serve: bool = False) -> None:
        self.serve = serve
        self.dbs: dict[str, dict[str, Any]] = {}
        self.apps: dict[str, dict[str, Any]] = {}
        self.versions: dict[str, list[dict[str, Any]]] = {}
        self.secrets: dict[str, dict[str, str]] = {}
        self.requests: list[tuple[str, str, Any]] = []
        self.hooks: list[Callable[[httpx.Request], httpx.Response | None]] = []
        #: status a new instance reports on each info (then stays at the last)
        self.create_statuses: list[str] = ["available"]
        #: status of an app after a deploy
        self.deploy_status = "AVAILABLE"

    def count(self, method: str, suffix: str) -> int:
        return sum(1 for m, p, _ in self.requests if m == method and p.endswith(suffix))

    def sent(self, method: str) -> list[tuple[str, Any]]:
        return [(p, b) for m, p, b in self.requests if m == method]

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else None
        path = request.url.path
        self.requests.append((request.method, path, body))
        for hook in self.hooks:
            resp = hook(request)
            if resp is not None:
                return resp
        if request.headers.get("authorization") != f"Bearer {TOKEN}":
            return api_error(401, "invalid token")
        return self.route(request.method, path.split("/")[2:], body)

    def route(self, method: str, parts: list[str], body: Any) -> httpx.Response:  # noqa: C901 - a router
        if parts == ["user", "profile"]:
            prof = {"Name": "alice", "Email": "a@example.test", "Organization": ORG, "SubscriptionPlan": "free"}
            return httpx.Response(200, json={**prof, **({"Server": SERVE_SERVER} if self.serve else {})})
        org, rest = parts[0], parts[1:]
        if org != ORG:
            return api_error(403, f"this token cannot access organization {org}")
        match method, rest:
            case "GET", ["databases"]:
                return httpx.Response(200, json=[self.view(n) for n in self.dbs])
            case "GET", ["databases", "userdb", "info", name]:
                return httpx.Response(200, json=self.view(name)) if name in self.dbs else \
                    api_error(404, f"database {name} not found")
            case "POST", ["databases", "userdb"]:
                if body["Name"] in self.dbs:
                    return api_error(409, f"database {body['Name']} already exists")
                self.dbs[body["Name"]] = db(body["Name"], user=body["AdminName"], _statuses=list(self.create_statuses))
                return httpx.Response(204)
            case "POST", ["databases", "userdb", name, "restore"]:
                if name not in self.dbs:
                    return api_error(404, f"database {name} not found")
                self.dbs[body["RestoreName"]] = db(body["RestoreName"], user=self.dbs[name]["DatabaseUsername"],
                                                   _statuses=list(self.create_statuses))
                return httpx.Response(204)
            case "POST", ["databases", "userdb", name, "credentials"]:
                return httpx.Response(204) if name in self.dbs else api_error(404, f"database {name} not found")
            case "DELETE", ["databases", "userdb" | "byod", name]:
                return httpx.Response(204) if self.dbs.pop(name, None) else api_error(404, f"database {name} not found")
            case "POST", ["databases", "byod"]:
                self.dbs[body["Name"]] = db(body["Name"], user="dbosadmin", linked=True)
                return httpx.Response(204)
            case "POST", ["databases", "preflight"]:
                problems = [{"Field": "instance_name", "Message": "taken (serve)"}] if body["Name"] in self.dbs else []
                return httpx.Response(200, json=problems + [{"Field": "port", "Message": "in use by a process"}])
            case "GET", ["applications"]:
                return httpx.Response(200, json=list(self.apps.values()))
            case "GET", ["applications", name]:
                return httpx.Response(200, json=self.apps[name]) if name in self.apps else \
                    api_error(404, f"application {name} not found")
            case "PUT", ["applications"]:
                if body["database"] not in self.dbs:
                    return api_error(404, f"database {body['database']} not found")
                self.apps[body["name"]] = {"Name": body["name"], "ID": "id-1", "PostgresInstanceName": body["database"],
                                           "ApplicationDatabaseName": "", "Status": "REGISTERED", "Version": "",
                                           "AppURL": f"https://{ORG}-{body['name']}.cloud.test/",
                                           "ExecutorsMemoryMib": 512}
                return httpx.Response(200, json="id-1")
            case "POST", ["applications", "secrets"]:
                self.secrets.setdefault(body["ApplicationName"], {})[body["SecretName"]] = body["ClearSecretValue"]
                return httpx.Response(200, json={})
            case "GET", ["applications", name, "secrets"]:
                return httpx.Response(200, json=sorted(self.secrets.get(name, {})))
            case "DELETE", ["applications", name, "secrets", secret]:
                self.secrets.get(name, {}).pop(secret, None)
                return httpx.Response(204)
            case "POST", ["applications", name] | ["applications", name, "changedbinstance"]:
                app = self.apps[name]
                version = body.get("previous_version") or str(len(self.versions.get(name, [])) + 1)
                if body.get("application_archive"):
                    self.versions.setdefault(name, []).append({"ApplicationName": name, "Version": version,
                                                               "CreationTime": f"2026-11-25T10:00:0{len(self.versions.get(name, []))}Z"})
                app.update(Status=self.deploy_status, Version=version,
                           PostgresInstanceName=body.get("target_database_name") or app["PostgresInstanceName"])
                return httpx.Response(200, json={"ApplicationName": name, "ApplicationVersion": version})
            case "GET", ["applications", name, "versions"]:
                if name not in self.apps:
                    return api_error(404, f"application {name} not found")
                return httpx.Response(200, json=list(reversed(self.versions.get(name, []))))
            case "DELETE", ["applications", name]:
                self.versions.pop(name, None)
                return httpx.Response(204) if self.apps.pop(name, None) else api_error(404, f"application {name} not found")
            case "GET", ["logs", "applications", name]:
                return httpx.Response(200, json={"body": f"boot\nusing {SECRET_ENV}\ncrashed", "end": True})
        return api_error(404, f"no route {method} {'/'.join(parts)}")

    def view(self, name: str) -> dict[str, Any]:
        rec = self.dbs[name]
        statuses = rec.get("_statuses") or []
        if len(statuses) > 1:
            rec["Status"] = statuses.pop(0)
        elif statuses:
            rec["Status"] = statuses[0]
        return {k: v for k, v in rec.items() if not k.startswith("_")}


@pytest.fixture
def cloud() -> FakeCloud:
    return FakeCloud()


def engine_for(cloud: FakeCloud, **kw: Any) -> DbosCloudEngine:
    kw.setdefault("token", TOKEN)
    return DbosCloudEngine("cloud.test", kw.pop("token"), transport=httpx.MockTransport(cloud), sleep=lambda s: None,
                           backoff=0.0, **kw)


@pytest.fixture
def eng(cloud: FakeCloud) -> Iterator[DbosCloudEngine]:
    e = engine_for(cloud)
    yield e
    e.close()


def flaky(method: str, suffix: str, responses: list[httpx.Response | Exception]) -> Callable[[httpx.Request], httpx.Response | None]:
    """A hook answering ``method ...suffix`` with ``responses`` in turn (an exception is raised), then passing."""
    def hook(request: httpx.Request) -> httpx.Response | None:
        if request.method == method and request.url.path.endswith(suffix) and responses:
            r = responses.pop(0)
            if isinstance(r, Exception):
                raise r
            return r
        return None
    return hook


# ---------------------------------------------------------------- retries
def test_get_is_retried_on_503_then_succeeds(cloud: FakeCloud, eng: DbosCloudEngine) -> None:
    cloud.dbs["aaa"] = db("aaa")
    cloud.hooks.append(flaky("GET", "/databases", [api_error(503, "busy"), httpx.Response(502), api_error(504, "x")]))
    assert [i.name for i in eng.list()] == ["aaa"]
    assert cloud.count("GET", "/databases") == 4


def test_get_gives_up_after_the_attempts_with_the_servers_message(cloud: FakeCloud, eng: DbosCloudEngine) -> None:
    cloud.hooks.append(flaky("GET", "/databases", [api_error(503, "down for maintenance")] * 10))
    with pytest.raises(DbosError, match=r"down for maintenance \[req-503\]"):
        eng.list()
    assert cloud.count("GET", "/databases") == 4


def test_post_is_not_retried_on_500(cloud: FakeCloud, eng: DbosCloudEngine) -> None:
    cloud.hooks.append(flaky("POST", "/databases/userdb", [api_error(500, "boom")]))
    with pytest.raises(DbosError, match="boom"):
        eng.provision("aaa", "dbuser", PW)
    assert cloud.count("POST", "/databases/userdb") == 1


def test_post_is_not_retried_on_503_either(cloud: FakeCloud, eng: DbosCloudEngine) -> None:
    cloud.hooks.append(flaky("POST", "/databases/userdb", [api_error(503, "busy")]))
    with pytest.raises(DbosError):
        eng.provision("aaa", "dbuser", PW)
    assert cloud.count("POST", "/databases/userdb") == 1


def test_post_is_retried_when_nothing_was_sent_and_on_429(cloud: FakeCloud, eng: DbosCloudEngine) -> None:
    cloud.hooks.append(flaky("POST", "/databases/userdb", [httpx.ConnectError("refused"), api_error(429, "slow down")]))
    info = eng.provision("aaa", "dbuser", PW)
    assert info.name == "aaa" and info.status == "available"
    assert cloud.count("POST", "/databases/userdb") == 3


def test_read_timeout_of_a_post_is_not_retried(cloud: FakeCloud, eng: DbosCloudEngine) -> None:
    cloud.hooks.append(flaky("POST", "/databases/userdb", [httpx.ReadTimeout("slow")]))
    with pytest.raises(DbosError, match="no answer"):
        eng.provision("aaa", "dbuser", PW)
    assert cloud.count("POST", "/databases/userdb") == 1


# ---------------------------------------------------------------- errors
def test_401_says_the_token_expired_and_how_to_get_one(cloud: FakeCloud) -> None:
    expired = jwt(time.time() - 3600)
    e = engine_for(cloud, token=expired)
    with pytest.raises(DbosError) as err:
        e.list()
    text = str(err.value)
    assert "expired" in text and "[req-401]" in text
    assert "pulumi-dbos serve token" in text and "dbos-cloud login" in text and "dbos:cloudToken" in text
    assert expired not in text


def test_401_of_a_valid_looking_token(cloud: FakeCloud) -> None:
    e = engine_for(cloud, token=jwt(time.time() + 3600))
    with pytest.raises(DbosError, match="was not accepted"):
        e.info("x")


def test_403_names_the_organization(cloud: FakeCloud, eng: DbosCloudEngine) -> None:
    cloud.hooks.append(flaky("GET", "/databases", [api_error(403, "this token cannot access organization acme")]))
    with pytest.raises(DbosError) as err:
        eng.list()
    assert "organization 'acme'" in str(err.value) and "another organization" in str(err.value)


def test_404_and_409_map_to_the_contract_errors(cloud: FakeCloud, eng: DbosCloudEngine) -> None:
    cloud.dbs["aaa"] = db("aaa")
    with pytest.raises(AlreadyExistsError):
        eng.provision("aaa", "dbuser", PW)
    cloud.hooks.append(flaky("POST", "/databases/userdb", [api_error(409, "database bbb already exists")]))
    with pytest.raises(AlreadyExistsError, match=r"bbb already exists \[req-409\]"):
        eng.provision("bbb", "dbuser", PW)
    assert cloud.count("DELETE", "/bbb") == 0  # a 409 names someone else's instance: never removed


def test_400_is_a_validation_error_naming_the_field_when_the_server_does(cloud: FakeCloud, eng: DbosCloudEngine) -> None:
    cloud.hooks.append(flaky("POST", "/databases/userdb", [httpx.Response(
        422, json={"detail": [{"loc": ["body", "AdminName"], "msg": "bad name", "type": "value_error"}]})]))
    with pytest.raises(ValidationError) as err:
        eng.provision("aaa", "dbuser", PW)
    assert err.value.problems[0][0] == "AdminName" and "bad name" in err.value.problems[0][1]
    assert cloud.count("DELETE", "/aaa") == 0  # refused: nothing was made


def test_secrets_never_reach_an_error(cloud: FakeCloud, eng: DbosCloudEngine) -> None:
    cloud.hooks.append(flaky("POST", "/databases/userdb", [api_error(
        500, f"cannot use password {PW} with token {TOKEN}", detailed=f"AdminPassword={PW}")]))
    with pytest.raises(DbosError) as err:
        eng.provision("aaa", "dbuser", PW)
    assert PW not in str(err.value) and TOKEN not in str(err.value) and "[secret]" in str(err.value)
    cloud.hooks.append(flaky("POST", "/credentials", [api_error(400, f"password {PW} rejected")]))
    cloud.dbs["bbb"] = db("bbb")
    with pytest.raises(DbosError) as err2:
        eng.reset_credentials("bbb", "dbuser", PW)
    assert PW not in str(err2.value)


def test_connection_errors_say_where(cloud: FakeCloud, eng: DbosCloudEngine) -> None:
    cloud.hooks.append(flaky("GET", "/databases", [httpx.ConnectError("[SSL: CERTIFICATE_VERIFY_FAILED] nope")] * 4))
    with pytest.raises(DbosError) as err:
        eng.list()
    assert "cloud.test" in str(err.value) and "CA certificate" in str(err.value)


# ---------------------------------------------------------------- polling, rollback
def test_provision_deadline_removes_the_half_made_instance(cloud: FakeCloud) -> None:
    cloud.create_statuses = ["creating"]
    e = engine_for(cloud, deadline=0.3)
    e.sleep = time.sleep  # a real deadline
    with pytest.raises(DbosError) as err:
        e.provision("aaa", "dbuser", PW)
    assert "did not finish within" in str(err.value) and "it was rolled back" in str(err.value)
    assert cloud.count("DELETE", "/databases/userdb/aaa") == 1
    assert "aaa" not in cloud.dbs and e.info("aaa") is None


def test_a_failed_rollback_is_said_with_what_to_do(cloud: FakeCloud, eng: DbosCloudEngine) -> None:
    cloud.create_statuses = ["failed"]
    cloud.hooks.append(flaky("DELETE", "/userdb/aaa", [api_error(500, "cannot delete now")]))
    with pytest.raises(DbosError) as err:
        eng.provision("aaa", "dbuser", PW)
    assert "failed too (" in str(err.value) and "dbos-cloud db destroy aaa" in str(err.value)


@pytest.mark.parametrize("state", ["failed", "incompatible-restore", "deleting"])
def test_provision_failure_state_removes_the_half_made_instance(cloud: FakeCloud, eng: DbosCloudEngine,
                                                                 state: str) -> None:
    cloud.create_statuses = ["creating", state]
    with pytest.raises(DbosError, match=f"status '{state}'"):
        eng.provision("aaa", "dbuser", PW)
    assert cloud.count("DELETE", "/databases/userdb/aaa") == 1 and "aaa" not in cloud.dbs


def test_provision_waits_through_creating_then_backing_up_is_ready(cloud: FakeCloud, eng: DbosCloudEngine) -> None:
    cloud.create_statuses = ["creating", "creating", "backing-up"]
    info = eng.provision("aaa", "dbuser", PW)
    assert info.status == "available"
    assert cloud.count("GET", "/info/aaa") >= 3
    assert ("/v1alpha1/acme/databases/userdb", {"Name": "aaa", "AdminName": "dbuser", "AdminPassword": PW}) \
        in cloud.sent("POST")  # no extension fields to DBOS Cloud


def test_restore_on_dbos_cloud_sets_the_password_and_rolls_back_when_that_fails(cloud: FakeCloud,
                                                                                eng: DbosCloudEngine) -> None:
    cloud.dbs["src"] = db("src")
    info = eng.restore_to_new("src", "rst", "latest", password=PW)
    assert info.name == "rst"
    posts = [p for p, _ in cloud.sent("POST")]
    assert posts[-2:] == ["/v1alpha1/acme/databases/userdb/src/restore", "/v1alpha1/acme/databases/userdb/rst/credentials"]
    restore_body = cloud.sent("POST")[-2][1]
    assert set(restore_body) == {"RestoreName", "RestoreTimestamp"} and restore_body["RestoreTimestamp"] != "latest"

    cloud.hooks.append(flaky("POST", "/rst2/credentials", [api_error(500, "nope")]))
    with pytest.raises(DbosError, match="it was rolled back"):
        eng.restore_to_new("src", "rst2", "latest", password=PW)
    assert "rst2" not in cloud.dbs


def test_restore_refusals_make_nothing(cloud: FakeCloud, eng: DbosCloudEngine) -> None:
    with pytest.raises(NotFoundError):
        eng.restore_to_new("nope", "rst", "latest", password=PW)
    cloud.dbs["src"] = db("src")
    with pytest.raises(ValidationError, match="future"):
        eng.restore_to_new("src", "rst", "2999-01-01T00:00:00Z", password=PW)
    with pytest.raises(ValidationError, match="RFC3339"):
        eng.restore_to_new("src", "rst", "yesterday", password=PW)
    assert cloud.sent("POST") == [] and "rst" not in cloud.dbs


# ---------------------------------------------------------------- O(1) reads
def test_info_of_n_names_is_one_list_call(cloud: FakeCloud, eng: DbosCloudEngine) -> None:
    for i in range(20):
        cloud.dbs[f"db{i:02d}"] = db(f"db{i:02d}")
    for i in range(25):
        got = eng.info(f"db{i:02d}")
        assert (got is not None) == (i < 20)
    pre = Preflight(kind=Kind.PROVISIONED, name="db05", owner="me", creating=False)
    assert eng.preflight(pre) == []
    assert cloud.count("GET", "/databases") == 1
    assert cloud.count("GET", "/info/db00") == 0
    assert cloud.count("GET", "/user/profile") == 1  # the organization, once


def test_checking_the_passwords_of_n_instances_reads_the_list_once(cloud: FakeCloud, eng: DbosCloudEngine) -> None:
    """A refresh checks every instance's password (drift); it finds host and port in the cached list."""
    for i in range(5):
        cloud.dbs[f"db{i:02d}"] = db(f"db{i:02d}", HostName="127.0.0.1", Port=1)  # refused at once
    for i in range(5):
        assert eng.check_credentials(f"db{i:02d}", "dbuser", PW) is False
    assert cloud.count("GET", "/databases") == 1
    assert not [r for r in cloud.sent("GET") if "/info/" in r[0]]
    with pytest.raises(NotFoundError):
        eng.check_credentials("nope", "dbuser", PW)


def test_a_mutation_drops_the_cached_list(cloud: FakeCloud, eng: DbosCloudEngine) -> None:
    assert eng.info("aaa") is None
    eng.provision("aaa", "dbuser", PW)
    assert eng.info("aaa") is not None
    eng.destroy("aaa")
    assert eng.info("aaa") is None
    assert cloud.count("GET", "/databases") == 3


def test_info_returns_copies(cloud: FakeCloud, eng: DbosCloudEngine) -> None:
    cloud.dbs["aaa"] = db("aaa")
    got = eng.info("aaa")
    assert got is not None
    got.status = "credentials_invalid"  # the resources mark a copy
    again = eng.info("aaa")
    assert again is not None and again.status == "available"


# ---------------------------------------------------------------- never an auto-provision
def test_reset_of_a_missing_name_sends_no_post(cloud: FakeCloud, eng: DbosCloudEngine) -> None:
    with pytest.raises(NotFoundError):
        eng.reset_credentials("ghostdb", "dbuser", PW)
    assert cloud.sent("POST") == []


def test_register_of_an_app_on_a_missing_instance_provisions_nothing(cloud: FakeCloud, eng: DbosCloudEngine) -> None:
    req = AppDeploy("myapp", "v1", b"zip", AppDatabaseAccess("ghostdb", "h", 5432, "u", PW), "myapp", {})
    with pytest.raises(NotFoundError, match="never provisions"):
        eng.apps.deploy(req)
    assert all(not p.endswith("/databases/userdb") for p, _ in cloud.sent("POST"))
    assert cloud.dbs == {}


def test_missing_instances_are_not_found(cloud: FakeCloud, eng: DbosCloudEngine) -> None:
    for call in (lambda: eng.ensure_running("x"), lambda: eng.stop("x"), lambda: eng.set_port("x", 6000),
                 lambda: eng.set_retention("x", 48), lambda: eng.backup("x"), lambda: eng.restore_window("x")):
        with pytest.raises(NotFoundError):
            call()
    eng.destroy("x")  # a no-op
    assert eng.takeover("x", "me") is None
    assert cloud.sent("POST") == [] and cloud.sent("PATCH") == []


# ---------------------------------------------------------------- DBOS Cloud's limits (no extensions)
def test_what_only_serve_can_do_is_refused_naming_the_field(cloud: FakeCloud, eng: DbosCloudEngine) -> None:
    with pytest.raises(ValidationError, match="port"):
        eng.provision("aaa", "dbuser", PW, port=6000)
    with pytest.raises(ValidationError, match="retention_hours"):
        eng.provision("aaa", "dbuser", PW, retention_hours=48)
    cloud.dbs["aaa"] = db("aaa")
    with pytest.raises(DbosError, match="does not report"):
        eng.restore_window("aaa")
    with pytest.raises(DbosError):
        eng.stop("aaa")
    with pytest.raises(ValidationError, match="username"):
        eng.link("lnk", "h", 5432, "someone", PW)
    assert eng.ensure_running("aaa").status == "available"
    assert eng.set_retention("aaa", 24).retention_hours == 24  # unchanged: fine
    problems = eng.preflight(Preflight(kind=Kind.PROVISIONED, name="bbb", owner="me", port=6000))
    assert [p.field for p in problems] == ["port"] and "DBOS Cloud chooses" in problems[0].message
    assert cloud.sent("POST") == []


def test_preflight_refuses_a_chosen_retention_on_dbos_cloud(cloud: FakeCloud, eng: DbosCloudEngine) -> None:
    """Said at preview, not only when the create runs; an update to another retention too."""
    cloud.dbs["aaa"] = db("aaa", Owner="me")
    cloud.dbs["src"] = db("src")

    def pf(**kw: Any) -> list[tuple[str, str]]:
        kw.setdefault("kind", Kind.PROVISIONED)
        kw.setdefault("name", "bbb")
        return [(p.field, p.message) for p in eng.preflight(Preflight(owner="me", **kw))]

    [(field, message)] = pf(retention_hours=48)
    assert field == "retention_hours" and "DBOS Cloud chooses how long backups are kept" in message
    assert pf(retention_hours=24) == [] and pf() == []  # its own retention, or none asked for: fine
    assert [f for f, _ in pf(name="aaa", creating=False, retention_hours=72)] == ["retention_hours"]
    assert [f for f, _ in pf(kind=Kind.RESTORED, source="src", restore_time="latest", retention_hours=1)] \
        == ["retention_hours"]
    assert [f for f, _ in pf(port=6000, retention_hours=48)] == ["port", "retention_hours"]
    assert cloud.sent("POST") == [] and cloud.sent("PATCH") == []


def test_preflight_lets_serve_keep_any_retention() -> None:
    cloud = FakeCloud(serve=True)
    e = engine_for(cloud)
    problems = e.preflight(Preflight(kind=Kind.PROVISIONED, name="bbb", owner="me", retention_hours=48))
    assert "retention_hours" not in {p.field for p in problems}  # (the fake serve always finds the port taken)
    cloud.dbs["aaa"] = db("aaa", Owner="me", RetentionHours=24)
    assert e.preflight(Preflight(kind=Kind.PROVISIONED, name="aaa", owner="me", creating=False,
                                 retention_hours=168)) == []


def test_resources_ask_for_a_retention_on_a_create_or_a_change_only() -> None:
    from pulumi_dbos.resources.instance import DatabaseInstanceProvider

    provider = DatabaseInstanceProvider()
    olds = {"instance_name": "aaa", "retention_hours": 24, "port": 6000}

    def asked(olds: dict[str, Any], **news: Any) -> int | None:
        req = provider.preflight_request(olds, {"instance_name": "aaa", **news})
        assert req is not None
        return req.retention_hours

    assert asked({}, retention_hours=48.0) == 48  # a create: numbers cross the wire as floats
    assert asked({}) is None
    assert asked(olds, retention_hours=24) is None  # unchanged
    assert asked(olds, retention_hours=72.0) == 72
    assert asked(olds, retention_hours=UNKNOWN) is None and asked({}, retention_hours=UNKNOWN) is None
    assert asked({**olds, "instance_name": "zzz"}, retention_hours=24) == 24  # another instance: a create
    req = provider.preflight_request(olds, {**olds, "retention_hours": 48})
    assert req is not None and req.port is None and not req.creating


def test_preflight_of_restores_from_the_list(cloud: FakeCloud, eng: DbosCloudEngine) -> None:
    cloud.dbs["src"] = db("src")
    cloud.dbs["lnk"] = db("lnk", linked=True)
    def pf(source: str, when: str) -> set[str]:
        return {p.field for p in eng.preflight(Preflight(kind=Kind.RESTORED, name="new", owner="me", source=source,
                                                         restore_time=when))}
    assert pf("src", "latest") == set()
    assert pf("src", "2024-01-01T00:00:00Z") == set()  # DBOS Cloud does not report a window: the restore says
    assert pf("src", "2999-01-01T00:00:00Z") == {"restore_time"}
    assert pf("lnk", "latest") == {"source"}
    assert pf("not_yet", "latest") == set()
    assert eng.preflight(Preflight(kind=Kind.PROVISIONED, name="src", owner="me")) != []  # no owner on DBOS Cloud
    assert eng.preflight(Preflight(kind=Kind.PROVISIONED, name="src", owner="me", adopt=True)) == []


# ---------------------------------------------------------------- serve's extensions
def test_serve_gets_the_extension_fields(eng: DbosCloudEngine) -> None:
    cloud = FakeCloud(serve=True)
    e = engine_for(cloud)
    e.provision("aaa", "dbuser", PW, port=6000, retention_hours=48, owner="me")
    body = cloud.sent("POST")[0][1]
    assert body == {"Name": "aaa", "AdminName": "dbuser", "AdminPassword": PW, "Port": 6000, "RetentionHours": 48,
                    "Owner": "me"}
    assert "pulumi-dbos serve" in e.describe()


def test_serve_preflight_adds_what_the_list_cannot_say_once_per_field() -> None:
    cloud = FakeCloud(serve=True)
    cloud.dbs["aaa"] = db("aaa", Owner="them")
    e = engine_for(cloud)
    problems = e.preflight(Preflight(kind=Kind.PROVISIONED, name="aaa", owner="me", port=6000))
    assert sorted(p.field for p in problems) == ["instance_name", "port"]
    assert "taken (serve)" not in {p.message for p in problems}  # ours already said it
    assert e.preflight(Preflight(kind=Kind.PROVISIONED, name="aaa", owner="them", creating=False)) == []
    assert cloud.count("POST", "/preflight") == 1  # only for creates


def test_concurrent_reads_share_the_list(cloud: FakeCloud, eng: DbosCloudEngine) -> None:
    """One provider process makes up to 4 calls at once."""
    for i in range(10):
        cloud.dbs[f"db{i}"] = db(f"db{i}")
    with ThreadPoolExecutor(4) as pool:
        found = list(pool.map(lambda i: eng.info(f"db{i % 12}") is not None, range(200)))
    assert found == [i % 12 < 10 for i in range(200)]
    assert cloud.count("GET", "/databases") <= 4 and cloud.count("GET", "/user/profile") == 1


# ---------------------------------------------------------------- apps
def deploy_req(version: str, archive: bytes | None, instance: str = "mydb", env: dict[str, str] | None = None) -> AppDeploy:
    return AppDeploy("myapp", version, archive, AppDatabaseAccess(instance, "h", 5432, "dbuser", PW), "myapp",
                     env if env is not None else {"GREETING": SECRET_ENV})


def test_deploy_registers_sets_env_deploys_and_waits(cloud: FakeCloud, eng: DbosCloudEngine) -> None:
    cloud.dbs["mydb"] = db("mydb")
    cloud.dbs["other"] = db("other")
    info = eng.apps.deploy(deploy_req("v1", b"zip-1"))
    assert info.status == "AVAILABLE" and info.version == "1" and info.instance_name == "mydb"
    assert info.app_url == "https://acme-myapp.cloud.test"
    puts = [b for m, p, b in cloud.requests if m == "PUT"]
    assert puts == [{"name": "myapp", "database": "mydb", "language": "python", "provenancedb": ""}]
    assert cloud.secrets["myapp"] == {"GREETING": SECRET_ENV}
    deploy_body = [b for p, b in cloud.sent("POST") if p.endswith("/applications/myapp")][0]
    assert deploy_body == {"application_archive": base64.b64encode(b"zip-1").decode()}
    assert PW not in json.dumps([b for _, _, b in cloud.requests])  # the database password is never sent

    # a new instance: change-database-instance with a previous version; env changes are synced
    info = eng.apps.deploy(deploy_req("1", None, instance="other", env={}))
    assert info.instance_name == "other" and info.version == "1"
    change = [b for p, b in cloud.sent("POST") if p.endswith("/changedbinstance")]
    assert change == [{"previous_version": "1", "target_database_name": "other"}]
    assert cloud.secrets["myapp"] == {}
    assert [v.version for v in eng.apps.versions("myapp")] == ["1"]


def test_deploy_of_an_unknown_previous_version_is_refused_before_anything(cloud: FakeCloud,
                                                                          eng: DbosCloudEngine) -> None:
    cloud.dbs["mydb"] = db("mydb")
    eng.apps.deploy(deploy_req("v1", b"zip-1"))
    n = len(cloud.requests)
    with pytest.raises(DbosError, match="not stored"):
        eng.apps.deploy(deploy_req("nope", None))
    assert all(m == "GET" for m, _, _ in cloud.requests[n:])
    problems = eng.apps.preflight("myapp", port=None, version="nope", owner=None, creating=False)
    assert [p.field for p in problems] == ["previous_version"] and "1" in problems[0].message


def test_deploy_failure_state_carries_the_log_tail_without_secrets(cloud: FakeCloud, eng: DbosCloudEngine) -> None:
    cloud.dbs["mydb"] = db("mydb")
    cloud.deploy_status = "UNHEALTHY"
    with pytest.raises(DbosError) as err:
        eng.apps.deploy(deploy_req("v1", b"zip-1"))
    text = str(err.value)
    assert "UNHEALTHY" in text and "crashed" in text and SECRET_ENV not in text and PW not in text


def test_deploy_deadline(cloud: FakeCloud) -> None:
    cloud.dbs["mydb"] = db("mydb")
    cloud.deploy_status = "DEPLOYING"
    e = engine_for(cloud, app_deadline=0.3)
    e.sleep = time.sleep
    with pytest.raises(DbosError, match="did not become AVAILABLE within"):
        e.apps.deploy(deploy_req("v1", b"zip-1"))


def test_delete_app_sends_an_empty_body_and_waits(cloud: FakeCloud, eng: DbosCloudEngine) -> None:
    cloud.dbs["mydb"] = db("mydb")
    eng.apps.deploy(deploy_req("v1", b"zip-1"))
    eng.apps.delete("myapp")
    assert [b for m, p, b in cloud.requests if m == "DELETE" and p.endswith("/applications/myapp")] == [{}]
    assert eng.apps.info("myapp") is None and eng.apps.versions("myapp") == []
    eng.apps.delete("myapp")  # missing: a no-op


def test_port_of_an_app_on_dbos_cloud_is_a_problem(cloud: FakeCloud, eng: DbosCloudEngine) -> None:
    problems = eng.apps.preflight("myapp", port=8080, version=None, owner=None, creating=True)
    assert [p.field for p in problems] == ["port"]


# ---------------------------------------------------------------- token, engine selection
def test_token_sources(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("DBOS_CLOUD_TOKEN", raising=False)
    assert resolve_token("explicit", tmp_path) == "explicit"
    with pytest.raises(DbosError) as err:
        resolve_token(None, tmp_path)
    assert "dbos:cloudToken" in str(err.value) and "dbos-cloud login" in str(err.value)
    (tmp_path / ".dbos").mkdir()
    (tmp_path / ".dbos" / "credentials").write_text(json.dumps({"token": "from-file\r\n", "userName": "a"}))
    assert resolve_token(None, tmp_path) == "from-file"
    monkeypatch.setenv("DBOS_CLOUD_TOKEN", "from-env")
    assert resolve_token(None, tmp_path) == "from-env"
    assert resolve_token("explicit", tmp_path) == "explicit"


def test_https_only_and_a_missing_ca_cert() -> None:
    with pytest.raises(DbosError, match="HTTPS"):
        CloudClient("http://localhost:1", TOKEN)
    with pytest.raises(DbosError, match="does not exist"):
        CloudClient("localhost:1", TOKEN, "/nonexistent/ca.pem")


def test_get_engine_dbos_cloud(monkeypatch: pytest.MonkeyPatch) -> None:
    e = get_engine("dbos-cloud", domain="localhost:1", token=TOKEN)
    assert isinstance(e, DbosCloudEngine) and e.kind == "dbos-cloud" and e.domain == "localhost:1"
    assert e.describe() == "DBOS Cloud at localhost:1"  # nothing listens: no organization to name
    with pytest.raises(DbosError, match="use one of: local, dbos-cloud"):
        get_engine("nope")


def test_importing_the_engines_does_not_import_httpx() -> None:
    code = "import sys, pulumi_dbos.engine; assert 'httpx' not in sys.modules, 'httpx loaded'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)  # noqa: S603 - fixed argv
