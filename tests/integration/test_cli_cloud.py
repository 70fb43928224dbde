"""`pulumi-dbos db …` / `app …` with the dbos-cloud engine, against a real `pulumi-dbos serve`."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator

import pytest

from pulumi_dbos.engine import get_engine
from tests.support.serve import Serve, running_serve

PW = "Cli-cloud-pw1"


@pytest.fixture(scope="module")
def serve() -> Iterator[Serve]:
    with running_serve() as s:
        yield s


def cli(serve: Serve, *args: str, token: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DBOS_CLOUD_TOKEN", "DBOS_DOMAIN")}
    if token is not None:
        env["DBOS_CLOUD_TOKEN"] = token
    return subprocess.run(["pulumi-dbos", "--engine", "dbos-cloud", "--cloud-domain", serve.domain,  # noqa: S603,S607
                           "--cloud-ca-cert", str(serve.ca_cert), *args],
                          capture_output=True, text=True, env=env, timeout=120, check=False)


def test_db_list_and_status_read_dbos_cloud(serve: Serve) -> None:
    token = serve.token("clicloud", "dana")
    eng = get_engine("dbos-cloud", domain=serve.domain, token=token, ca_cert=str(serve.ca_cert))
    info = eng.provision("cli_db", "dana_u", PW)
    try:
        cp = cli(serve, "db", "list", "--json", token=token)
        assert cp.returncode == 0, cp.stderr
        rows = json.loads(cp.stdout)
        assert [(r["name"], r["status"], r["port"], r["username"]) for r in rows] == \
            [("cli_db", "available", info.port, "dana_u")]
        cp = cli(serve, "db", "status", "cli_db", token=token)
        assert cp.returncode == 0 and "available" in cp.stdout
        cp = cli(serve, "db", "status", "nosuch", token=token)
        assert cp.returncode != 0 and "nosuch" in cp.stderr and "Traceback" not in cp.stderr
        cp = cli(serve, "app", "list", "--json", token=token)
        assert cp.returncode == 0 and json.loads(cp.stdout) == []
    finally:
        eng.destroy("cli_db")


def test_without_a_token_the_cli_says_how_to_get_one(serve: Serve, tmp_path: os.PathLike[str]) -> None:
    cp = subprocess.run(["pulumi-dbos", "--engine", "dbos-cloud", "--cloud-domain", serve.domain,  # noqa: S603,S607
                         "--cloud-ca-cert", str(serve.ca_cert), "db", "list"], cwd=tmp_path, capture_output=True,
                        text=True, timeout=120, check=False,
                        env={k: v for k, v in os.environ.items() if k != "DBOS_CLOUD_TOKEN"})
    assert cp.returncode != 0 and "dbos:cloudToken" in cp.stderr and "Traceback" not in cp.stderr
