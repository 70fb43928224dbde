"""Reliability of `pulumi-dbos serve`'s API: generated requests from its own OpenAPI document never get a 5xx
and never leave an instance half-made; bad tokens get 401 and change nothing; one organization can neither
read nor change another's instances; 20 concurrent provisions all succeed with distinct ports."""

from __future__ import annotations

import collections
import concurrent.futures
import secrets
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import hypothesis
import jwt
import psycopg
import pytest
import schemathesis
from schemathesis.checks import not_a_server_error

from tests.support.serve import Serve, running_serve

PW = "Serve-api-pw1"
#: generated requests per operation
EXAMPLES = 25


@pytest.fixture(scope="module")
def serve() -> Iterator[Serve]:
    with running_serve() as s:
        yield s


def client(serve: Serve, token: str | None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return httpx.Client(base_url=serve.url, verify=ssl.create_default_context(cafile=serve.ca_cert), headers=headers,
                        timeout=120)


@pytest.fixture(scope="module")
def acme(serve: Serve) -> Iterator[httpx.Client]:
    with client(serve, serve.token("acme", "alice")) as c:
        yield c


def instances(api: httpx.Client, org: str = "acme") -> list[dict[str, Any]]:
    r = api.get(f"/v1alpha1/{org}/databases")
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def is_cloud_error(r: httpx.Response) -> bool:
    body = r.json()
    return isinstance(body, dict) and {"message", "statusCode", "requestID"} <= set(body)


def connects(info: dict[str, Any], password: str) -> bool:
    try:
        with psycopg.connect(host=info["HostName"], port=info["Port"], user=info["DatabaseUsername"],
                             password=password, dbname="postgres", connect_timeout=5) as conn:
            conn.execute("SELECT 1")
    except psycopg.OperationalError:
        return False
    return True


# ---------------------------------------------------------------------------- generated requests
def test_generated_requests_never_get_a_server_error(serve: Serve, acme: httpx.Client) -> None:
    """Every operation of serve's OpenAPI document, fuzzed within its schema by hypothesis (the org in the
    path set to the token's): no 5xx, and every error is a DBOS Cloud error body the official CLI prints."""
    doc = acme.get("/openapi.json")
    assert doc.status_code == 200, doc.text
    schema = schemathesis.openapi.from_dict(doc.json())
    token = serve.token("acme", "alice")
    seen: list[str] = []
    codes: collections.Counter[int] = collections.Counter()
    for result in schema.get_all_operations():
        operation = result.ok()
        seen.append(operation.label)

        @hypothesis.settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
                             suppress_health_check=list(hypothesis.HealthCheck))
        @hypothesis.given(case=operation.as_strategy())
        def call(case: Any) -> None:
            if "org" in (case.path_parameters or {}):
                case.path_parameters["org"] = "acme"
            response = case.call(base_url=serve.url, timeout=120, headers={"Authorization": f"Bearer {token}"},
                                 verify=str(serve.ca_cert))
            codes[response.status_code] += 1
            case.validate_response(response, checks=[not_a_server_error])
            if response.status_code >= 400:
                assert {"message", "statusCode", "requestID"} <= set(response.json()), response.text

        call()
    assert len(seen) >= 20, seen  # the whole API was exercised, not a part of it
    # authenticated (no 401s), and both accepted and refused requests were generated
    assert codes[401] == 0 and any(c < 300 for c in codes) and any(400 <= c < 500 for c in codes), codes
    print(f"{sum(codes.values())} generated requests over {len(seen)} operations: {dict(sorted(codes.items()))}")


def test_after_generated_requests_no_instance_is_half_made(acme: httpx.Client) -> None:
    """Runs after the generated requests (same module, later): whatever they made is whole."""
    for info in instances(acme):
        assert info["Status"] in ("available", "stopped"), info
    for info in instances(acme):  # leave the module's other tests a clean org
        path = "byod" if info["IsLinked"] else "userdb"
        acme.delete(f"/v1alpha1/acme/databases/{path}/{info['PostgresInstanceName']}")
    assert instances(acme) == []


# ---------------------------------------------------------------------------- tokens
def forged_tokens(serve: Serve) -> dict[str, str]:
    key = (serve.data_dir / "serve" / "jwt.key").read_bytes()
    now = int(time.time())
    claims = {"sub": "alice", "org": "acme", "iss": "pulumi-dbos serve", "iat": now - 7200}
    return {
        "expired": jwt.encode({**claims, "exp": now - 3600}, key, algorithm="HS256"),
        "forged": jwt.encode({**claims, "exp": now + 3600}, secrets.token_bytes(32), algorithm="HS256"),
        "unsigned": jwt.encode({**claims, "exp": now + 3600}, None, algorithm="none"),
        "garbage": "not-a-jwt",
    }


def test_bad_tokens_get_401_and_change_nothing(serve: Serve, acme: httpx.Client) -> None:
    name = f"tok_{secrets.token_hex(3)}"
    before = instances(acme)
    for what, token in forged_tokens(serve).items():
        with client(serve, token) as bad:
            for method, path, body in (
                    ("GET", "/v1alpha1/user/profile", None),
                    ("GET", "/v1alpha1/acme/databases", None),
                    ("POST", "/v1alpha1/acme/databases/userdb",
                     {"Name": name, "AdminName": "alice_u", "AdminPassword": PW}),
                    ("DELETE", f"/v1alpha1/acme/databases/userdb/{name}", None)):
                r = bad.request(method, path, json=body)
                assert r.status_code == 401, (what, method, path, r.status_code, r.text)
                assert is_cloud_error(r)
                assert not token or token not in r.text
    with client(serve, None) as anonymous:
        assert anonymous.get("/v1alpha1/acme/databases").status_code == 401
    assert instances(acme) == before


# ---------------------------------------------------------------------------- organizations
def test_one_organization_cannot_read_or_change_anothers(serve: Serve, acme: httpx.Client) -> None:
    name = f"iso_{secrets.token_hex(3)}"
    r = acme.post("/v1alpha1/acme/databases/userdb", json={"Name": name, "AdminName": "alice_u", "AdminPassword": PW})
    assert r.status_code < 300, r.text
    try:
        with client(serve, serve.token("globex", "bob")) as globex:
            assert instances(globex, "globex") == []  # its own org: empty
            for method, path, body in (
                    ("GET", "/v1alpha1/acme/databases", None),
                    ("GET", f"/v1alpha1/acme/databases/userdb/info/{name}", None),
                    ("POST", f"/v1alpha1/acme/databases/userdb/{name}/credentials", {"Password": "Stolen-pw-1"}),
                    ("POST", f"/v1alpha1/acme/databases/userdb/{name}/restore",
                     {"RestoreName": "stolen", "RestoreTimestamp": "2026-01-01T00:00:00Z"}),
                    ("DELETE", f"/v1alpha1/acme/databases/userdb/{name}", None),
                    ("GET", "/v1alpha1/acme/applications", None)):
                r = globex.request(method, path, json=body)
                assert r.status_code == 403, (method, path, r.status_code, r.text)
                assert name not in r.text and is_cloud_error(r)
            # the same name in its own org is another instance
            assert globex.get(f"/v1alpha1/globex/databases/userdb/info/{name}").status_code == 404
        info = acme.get(f"/v1alpha1/acme/databases/userdb/info/{name}").json()
        assert info["Status"] == "available" and connects(info, PW) and not connects(info, "Stolen-pw-1")
    finally:
        acme.delete(f"/v1alpha1/acme/databases/userdb/{name}")


# ---------------------------------------------------------------------------- concurrency
def test_twenty_concurrent_provisions(serve: Serve, tmp_path: Path) -> None:
    token = serve.token("conc", "carol")
    names = [f"c{i:02d}_{secrets.token_hex(2)}" for i in range(20)]
    answers: list[str] = []

    def provision(name: str) -> int:
        with client(serve, token) as api:
            r = api.post("/v1alpha1/conc/databases/userdb",
                         json={"Name": name, "AdminName": "carol_u", "AdminPassword": PW})
            if r.status_code >= 300:
                answers.append(f"{name}: {r.status_code} {r.text[:300]}")  # what the assertion shows
            return r.status_code

    with client(serve, token) as api:
        try:
            with concurrent.futures.ThreadPoolExecutor(20) as pool:
                codes = list(pool.map(provision, names))
            assert all(c < 300 for c in codes), answers
            listed = {i["PostgresInstanceName"]: i for i in instances(api, "conc")}
            assert set(listed) == set(names)
            assert len({i["Port"] for i in listed.values()}) == 20
            assert all(i["Status"] == "available" and connects(i, PW) for i in listed.values())
        finally:
            with concurrent.futures.ThreadPoolExecutor(8) as pool:
                list(pool.map(lambda n: api.delete(f"/v1alpha1/conc/databases/userdb/{n}"), names))
        assert instances(api, "conc") == []
