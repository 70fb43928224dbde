"""Hostile tenants: one ``pulumi-dbos serve`` (as root, as the README runs it) with two organizations.

``alpha`` is the attacker: a valid token of its own organization, an instance, and a deployed app
(``apps/shell``) whose ``POST /run`` executes any Python it is sent — arbitrary tenant code, as a DBOS
app is. ``bravo`` is the victim: an instance and an app (``apps/victim``) holding the secret
``STRIPE_KEY`` in its environment. Each test performs one attack through serve's API or from inside
the attacker's app and reads the result back.
"""

from __future__ import annotations

import base64
import json
import secrets
import shutil
import ssl
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from pulumi_dbos.appsource import pack
from tests.support.serve import Serve, running_serve

HERE = Path(__file__).resolve().parent
PW = "Tenant-pw-1"
#: bravo's admin password: found anywhere alpha can read, it is a leak
BRAVO_PW = "Bravo-secret-pw-9"
STRIPE_KEY = "sk_live_" + "b" * 24


def client(serve: Serve, token: str) -> httpx.Client:
    return httpx.Client(base_url=serve.url, verify=ssl.create_default_context(cafile=str(serve.ca_cert)),
                        headers={"Authorization": f"Bearer {token}"}, timeout=900)


def name(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(3)}"


def provision(api: httpx.Client, org: str, db: str, password: str = PW) -> dict[str, Any]:
    r = api.post(f"/v1alpha1/{org}/databases/userdb", json={
        "Name": db, "AdminName": "tenant_u", "AdminPassword": password})
    assert r.status_code in (200, 201, 204), r.text
    r = api.get(f"/v1alpha1/{org}/databases/userdb/info/{db}")
    assert r.status_code == 200, r.text
    return dict(r.json())


def copy_app(src: str, dest: Path, app: str) -> Path:
    """``tests/security/apps/<src>`` as app ``app`` under ``dest``."""
    out = dest / app
    shutil.copytree(HERE / "apps" / src, out)
    cfg = out / "dbos-config.yaml"
    cfg.write_text(cfg.read_text().replace(f"name: {src}", f"name: {app}"))
    return out


def deploy_archive(api: httpx.Client, org: str, app: str, archive: bytes) -> httpx.Response:
    return api.post(f"/v1alpha1/{org}/applications/{app}",
                    json={"application_archive": base64.b64encode(archive).decode()})


def register_and_deploy(api: httpx.Client, org: str, app: str, db: str, src: Path,
                        env: dict[str, str] | None = None) -> dict[str, Any]:
    """Register ``app`` on ``db``, set its secrets, deploy ``src``; the app's record (AppURL...)."""
    r = api.put(f"/v1alpha1/{org}/applications", json={"name": app, "database": db, "language": "python"})
    assert r.status_code == 200, r.text
    for k, v in (env or {}).items():
        r = api.post(f"/v1alpha1/{org}/applications/secrets",
                     json={"ApplicationName": app, "SecretName": k, "ClearSecretValue": v})
        assert r.status_code == 200, r.text
    r = deploy_archive(api, org, app, pack(src)[1])
    assert r.status_code == 200, r.text
    r = api.get(f"/v1alpha1/{org}/applications/{app}")
    assert r.status_code == 200 and r.json()["Status"] == "AVAILABLE", r.text
    return dict(r.json())


@dataclass
class Tenants:
    serve: Serve
    alpha: httpx.Client
    bravo: httpx.Client
    alpha_db: dict[str, Any]
    bravo_db: dict[str, Any]
    shell: dict[str, Any]  # alpha's attacker app (its DBOS Cloud record)
    victim: dict[str, Any]  # bravo's app
    work: Path

    def run(self, code: str, timeout: float = 120) -> str:
        """Execute ``code`` inside alpha's app; its stdout (an exception fails the test, with its text)."""
        req = urllib.request.Request(self.shell["AppURL"] + "run", data=code.encode(), method="POST")
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - our own app on 127.0.0.1
            body = json.loads(resp.read())
        assert body["error"] is None, body["error"]
        return str(body["stdout"])

    def run_json(self, code: str, timeout: float = 120) -> Any:
        """``code`` prints one JSON document; it, parsed."""
        return json.loads(self.run(code, timeout).strip().splitlines()[-1])

    def victim_pid(self) -> int:
        with urllib.request.urlopen(self.victim["AppURL"], timeout=10) as resp:  # noqa: S310
            return int(json.loads(resp.read())["pid"])


@pytest.fixture(scope="session")
def tenants(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tenants]:
    work = tmp_path_factory.mktemp("tenants")
    with running_serve() as serve:
        alpha, bravo = client(serve, serve.token("alpha", "mallory")), client(serve, serve.token("bravo", "bob"))
        try:
            adb, bdb = provision(alpha, "alpha", "alpha_db"), provision(bravo, "bravo", "bravo_db", BRAVO_PW)
            shell = register_and_deploy(alpha, "alpha", "shell", "alpha_db", copy_app("shell", work, "shell"))
            victim = register_and_deploy(bravo, "bravo", "victim", "bravo_db", copy_app("victim", work, "victim"),
                                         env={"STRIPE_KEY": STRIPE_KEY})
            yield Tenants(serve, alpha, bravo, adb, bdb, shell, victim, work)
        finally:
            alpha.close()
            bravo.close()
