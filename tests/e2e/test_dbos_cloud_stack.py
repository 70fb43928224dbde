"""The same example stack on both engines: `dbos:engine: local`, then `dbos:engine: dbos-cloud` pointed at a
`pulumi-dbos serve` (DBOS Cloud's API over another local engine). Outputs are identical apart from hosts and
ports; the token reaches the provider as a secret config value and is stored nowhere in plain text."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ROOT
from tests.e2e.test_stacks import RepoCopy
from tests.e2e.test_stacks import repo as repo  # noqa: F401 - the fixture, by its name
from tests.support.serve import Serve, running_serve

HOST_PORT = re.compile(r"(?<=@|/)(127\.0\.0\.1|localhost):\d+")
#: a request in serve's access log
REQUEST = re.compile(r'"((?:GET|POST|PUT|PATCH|DELETE) /\S*) HTTP/1\.1"')


@pytest.fixture
def serve() -> Iterator[Serve]:
    with running_serve() as s:
        yield s


def outputs(repo: RepoCopy, stack: str) -> dict[str, Any]:
    return json.loads(repo.pulumi("stack", "output", "--json", "--show-secrets", "--stack", stack).stdout)  # type: ignore[no-any-return]


def neutral(value: Any) -> Any:
    """``value`` with hosts and ports blanked (what may differ between two engines)."""
    if isinstance(value, dict):
        return {k: None if k in ("hostname", "port") else neutral(v) for k, v in value.items()}
    if isinstance(value, list):
        return [neutral(v) for v in value]
    if isinstance(value, str):
        return HOST_PORT.sub("HOST:PORT", value)
    return value


def set_secret(repo: RepoCopy, key: str, value: str, stack: str) -> None:
    """A secret through stdin (never in argv)."""
    subprocess.run(["pulumi", "config", "set", "--secret", key, "--stack", stack, "--cwd", str(repo.work)],  # noqa: S603,S607
                   input=value, capture_output=True, text=True, env=repo.env, timeout=120, check=True)


def test_example_stack_on_local_and_on_dbos_cloud_via_serve(repo: RepoCopy, serve: Serve) -> None:
    # the example stack on the local engine
    repo.stack("dev")
    repo.pulumi("up", "--yes", "--stack", "dev")
    local = outputs(repo, "dev")
    repo.pulumi("destroy", "--yes", "--stack", "dev")

    # the same stack config, with the engine switched to dbos-cloud
    repo.pulumi("stack", "init", "cloud", "--copy-config-from", "dev")
    repo.pulumi("config", "rm", "dbos:dataDir", "--stack", "cloud")
    for key, value in (("dbos:engine", "dbos-cloud"), ("dbos:cloudDomain", serve.domain),
                       ("dbos:cloudCaCert", str(serve.ca_cert))):
        repo.pulumi("config", "set", key, value, "--stack", "cloud")
    token = serve.token("acme", "alice")
    set_secret(repo, "dbos:cloudToken", token, "cloud")

    preview = repo.pulumi("preview", "--stack", "cloud", "--diff")
    assert "dev_db" in preview.stdout and token not in preview.stdout + preview.stderr
    repo.pulumi("up", "--yes", "--stack", "cloud")
    cloud = outputs(repo, "cloud")

    assert neutral(cloud) == neutral(local)
    assert cloud["instances"]["dev_db"]["status"] == "available"
    assert cloud["apps"]["greet"]["status"] == "AVAILABLE"
    # the app answers, deployed by serve (DBOS Cloud's API), and serve lists what the stack made
    assert httpx.get(cloud["apps"]["greet"]["app_url"], timeout=30).status_code == 200
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=serve.url, verify=str(serve.ca_cert), headers=headers, timeout=30) as api:
        names = {d["PostgresInstanceName"] for d in api.get("/v1alpha1/acme/databases").json()}
        apps = {a["Name"]: a for a in api.get("/v1alpha1/acme/applications").json()}
    assert names == {"dev_db"} and apps["greet"]["PostgresInstanceName"] == "dev_db"
    assert apps["greet"]["Version"] == cloud["apps"]["greet"]["version"]
    # the token is stored encrypted only, and no resource carries it
    export = repo.pulumi("stack", "export", "--stack", "cloud").stdout
    assert token not in export and token not in (repo.work / "stacks" / "Pulumi.cloud.yaml").read_text()

    # a no-change preview shows no change; the project refreshes first (`refresh: always`), which reads
    # the instances with list calls (one per provider process: refresh's and preview's), never one info
    # call per instance; the preview itself asks nothing
    before = len(REQUEST.findall(serve.log()))
    pv = json.loads(repo.pulumi("preview", "--json", "--stack", "cloud").stdout)
    assert {k for k, v in pv.get("changeSummary", {}).items() if v and k != "same"} == set()
    during = REQUEST.findall(serve.log())[before:]
    assert not [r for r in during if "/info/" in r], during
    assert 1 <= during.count("GET /v1alpha1/acme/databases") <= 2, during

    repo.pulumi("destroy", "--yes", "--stack", "cloud")
    with httpx.Client(base_url=serve.url, verify=str(serve.ca_cert), headers=headers, timeout=30) as api:
        assert api.get("/v1alpha1/acme/databases").json() == []
        assert api.get("/v1alpha1/acme/applications").json() == []


def test_dbos_cloud_stack_without_a_token_fails_at_preview_saying_how(repo: RepoCopy, serve: Serve,
                                                                       tmp_path: Path) -> None:
    repo.stack("dev")
    repo.pulumi("config", "rm", "dbos:dataDir", "--stack", "dev")
    repo.pulumi("config", "set", "dbos:engine", "dbos-cloud", "--stack", "dev")
    repo.pulumi("config", "set", "dbos:cloudDomain", serve.domain, "--stack", "dev")
    repo.pulumi("config", "set", "dbos:cloudCaCert", str(serve.ca_cert), "--stack", "dev")
    repo.env.pop("DBOS_CLOUD_TOKEN", None)
    cp = repo.pulumi("preview", "--stack", "dev", check=False)
    assert cp.returncode != 0
    assert "dbos:cloudToken" in cp.stdout + cp.stderr
    assert not (ROOT / ".dbos").exists()
