"""The requests the official dbos-cloud CLI (2.10.24) sent, replayed as test vectors for the typed wire.

Every recorded request names one route of ``cloudapi.paths`` with its method; every body parses with
that route's request model and ``dump()`` gives back the keys the CLI sent; every 2xx answer parses with
the route's response model, and every error body is a ``CloudAPIError``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, TypeAdapter

from pulumi_dbos.cloudapi import models as m
from pulumi_dbos.cloudapi import paths

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
VECTORS = SHARED / "dbos-cloud-cli-requests.jsonl"


@dataclass(frozen=True)
class Route:
    method: str
    template: str
    request: type[BaseModel] | None  # the body's model (None: no body)
    response: Any  # a type TypeAdapter understands (None: no body)


ROUTES = [
    Route("GET", paths.PROFILE, None, m.UserProfile),
    Route("GET", paths.DATABASES, None, list[m.UserDBInstance]),
    Route("POST", paths.PROVISION, m.ProvisionRequest, m.UserDBInstance | None),
    Route("GET", paths.DB_INFO, None, m.UserDBInstance),
    Route("DELETE", paths.DB, None, None),
    Route("PATCH", paths.DB, m.DatabasePatch, m.UserDBInstance | None),
    Route("POST", paths.DB_CREDENTIALS, m.CredentialsRequest, m.UserDBInstance | None),
    Route("POST", paths.DB_RESTORE, m.RestoreRequest, m.UserDBInstance | None),
    Route("POST", paths.DB_BACKUP, None, m.BackupOutput),
    Route("POST", paths.DB_START, None, m.UserDBInstance | None),
    Route("POST", paths.DB_STOP, None, m.UserDBInstance | None),
    Route("GET", paths.DB_DRILLS, None, list[m.DrillOutput]),
    Route("POST", paths.DB_DRILLS, m.DrillRequest, m.DrillOutput),
    Route("POST", paths.DB_PREFLIGHT, m.PreflightRequest, list[m.PreflightProblem]),
    Route("POST", paths.LINK, m.LinkRequest, m.UserDBInstance | None),
    Route("DELETE", paths.UNLINK, None, None),
    Route("GET", paths.APPS, None, list[m.Application]),
    Route("PUT", paths.APPS, m.RegisterRequest, str),
    Route("GET", paths.APP, None, m.Application),
    Route("POST", paths.APP, m.DeployRequest, m.DeployOutput),
    Route("PATCH", paths.APP, m.UpdateAppRequest, m.Application | None),
    Route("DELETE", paths.APP, m.DeleteAppRequest, None),
    Route("POST", paths.APP_CHANGE_DB, m.ChangeDatabaseRequest, m.DeployOutput),
    Route("GET", paths.APP_VERSIONS, None, list[m.ApplicationVersion]),
    Route("POST", paths.APP_SECRETS, m.SecretRequest, Any),
    Route("GET", paths.APP_SECRET_LIST, None, list[Any]),
    Route("DELETE", paths.APP_SECRET, None, None),
    Route("GET", paths.APP_LOGS, None, m.LogsOutput),
]


def _pattern(template: str) -> re.Pattern[str]:
    return re.compile("^" + re.sub(r"\\\{[a-z]+\\\}", "[^/]+", re.escape(template)) + "$")


def _literals(template: str) -> int:
    return sum(1 for seg in template.split("/") if seg and not seg.startswith("{"))


def match(method: str, path: str) -> list[Route]:
    """The routes ``method path`` matches, the most specific first (``applications/secrets`` is the secrets
    route, not an app named "secrets")."""
    path = path.split("?")[0]
    found = [r for r in ROUTES if r.method == method and _pattern(r.template).match(path)]
    return sorted(found, key=lambda r: -_literals(r.template))


def _vectors() -> list[dict[str, Any]]:
    if not VECTORS.is_file():
        return []
    return [json.loads(line) for line in VECTORS.read_text().splitlines() if line.strip()]


VECTOR_LIST = _vectors()
pytestmark = pytest.mark.skipif(not VECTOR_LIST, reason=f"no recorded requests at {VECTORS}")


def _id(v: dict[str, Any]) -> str:
    return f"{v['method']} {v['path']} -> {v['status']}"


@pytest.mark.parametrize("vector", VECTOR_LIST, ids=[f"{i}:{_id(v)}" for i, v in enumerate(VECTOR_LIST)])
def test_recorded_request_matches_a_route_and_its_models(vector: dict[str, Any]) -> None:
    routes = match(vector["method"], vector["path"])
    assert routes, f"no route in cloudapi.paths for {vector['method']} {vector['path']}"
    route = routes[0]
    # the same path under another method is a route too, or the recorded method is the only one
    assert route.method == vector["method"]

    body = vector["body"]
    if body is not None:
        assert route.request is not None, f"{route.template} takes no body, the CLI sent {sorted(body)}"
        parsed = route.request.model_validate(body)
        assert set(m.dump(parsed)) == set(body), (route.request.__name__, sorted(m.dump(parsed)), sorted(body))
        for key, value in body.items():
            assert m.dump(parsed)[key] == value

    status, resp = vector["status"], vector["resp"]
    if 200 <= status < 300:
        if resp is None:
            return
        assert route.response is not None, f"{route.template} answers nothing, the recording has {resp!r}"
        TypeAdapter(route.response).validate_python(resp)
    else:
        err = m.CloudAPIError.model_validate(resp)
        assert err.statusCode == status and err.requestID and err.message


def test_every_recorded_route_kind_is_covered() -> None:
    """The recording exercises the CLI's main routes: a path the table cannot name would be a gap in paths.py."""
    seen = {match(v["method"], v["path"])[0].template for v in VECTOR_LIST if match(v["method"], v["path"])}
    for template in (paths.PROFILE, paths.DATABASES, paths.PROVISION, paths.DB_INFO, paths.DB,
                     paths.DB_CREDENTIALS, paths.DB_RESTORE, paths.LINK, paths.APPS, paths.APP,
                     paths.APP_CHANGE_DB, paths.APP_VERSIONS):
        assert template in seen, template


def test_specific_routes_win() -> None:
    assert match("POST", "/v1alpha1/acme/applications/secrets")[0].template == paths.APP_SECRETS
    assert match("GET", "/v1alpha1/acme/databases/userdb/info/x")[0].template == paths.DB_INFO
    assert match("POST", "/v1alpha1/acme/databases/userdb/x/restore")[0].template == paths.DB_RESTORE
    assert match("GET", "/v1alpha1/acme/databases/userdb/x/restore") == []


def test_supabase_reference_is_an_explicit_null() -> None:
    """The CLI tests ``SupabaseReference !== null``: a response must carry the key even when it is null."""
    info = m.UserDBInstance(PostgresInstanceName="a", Status="available", HostName="h", Port=5432,
                            DatabaseUsername="u", IsLinked=False)
    assert "SupabaseReference" in info.model_dump() and info.model_dump()["SupabaseReference"] is None
