"""The dbos-cloud engine's path against DBOS Cloud itself (no pulumi-dbos extensions), end to end through the
real pulumi CLI: the stacks point at ``pulumi-dbos serve --cloud-exact``, which answers as DBOS Cloud does
(no ``Server`` in the profile, no extension fields or routes, numbered app versions, restores with the
source's password, links as ``dbosadmin``). One exact serve for the module; each test has its own
organization."""

from __future__ import annotations

import json
import os
import re
import secrets
import ssl
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from pulumi_dbos.engine import get_engine
from pulumi_dbos.errors import DbosError
from tests.e2e.test_dbos_cloud_stack import outputs, set_secret
from tests.e2e.test_stacks import RepoCopy
from tests.e2e.test_stacks import repo as repo  # noqa: F401 - the fixture, by its name
from tests.support.serve import Serve, running_serve

NEW_PW = "Rotated-pw-e2e-7"


@pytest.fixture(scope="module")
def exact_serve() -> Iterator[Serve]:
    with running_serve(extra_args=("--cloud-exact",)) as s:
        yield s
        ignored = [line for line in s.log().splitlines() if "cloud-exact: ignored" in line]
        assert not ignored, "the engine sent pulumi-dbos extension fields to DBOS Cloud:\n" + "\n".join(ignored)


def org_token(serve: Serve) -> tuple[str, str]:
    org = f"ex{secrets.token_hex(3)}"
    return org, serve.token(org, "alice")


def cloud_stack(repo: RepoCopy, serve: Serve, token: str, stack: str = "cloud") -> None:
    """The example stack's config (dev's), on the dbos-cloud engine at ``serve``."""
    repo.stack("dev")
    repo.pulumi("stack", "init", stack, "--copy-config-from", "dev")
    repo.pulumi("config", "rm", "dbos:dataDir", "--stack", stack)
    for key, value in (("dbos:engine", "dbos-cloud"), ("dbos:cloudDomain", serve.domain),
                       ("dbos:cloudCaCert", str(serve.ca_cert))):
        repo.pulumi("config", "set", key, value, "--stack", stack)
    set_secret(repo, "dbos:cloudToken", token, stack)


def api(serve: Serve, token: str) -> httpx.Client:
    return httpx.Client(base_url=serve.url, verify=ssl.create_default_context(cafile=str(serve.ca_cert)), timeout=30,
                        headers={"Authorization": f"Bearer {token}"})


def greet(out: dict[str, Any]) -> dict[str, Any]:
    return httpx.get(out["apps"]["greet"]["app_url"], timeout=30).json()  # type: ignore[no-any-return]


def changes(repo: RepoCopy, stack: str) -> dict[str, Any]:
    """The steps a ``pulumi preview --json`` plans, other than ``same``, by resource name."""
    pv = json.loads(repo.pulumi("preview", "--json", "--stack", stack).stdout)
    return {s["urn"].rsplit("::", 1)[-1]: s for s in pv.get("steps", [])
            if s.get("op") not in (None, "same", "read", "refresh")}


def set_string(repo: RepoCopy, stack: str, path: tuple[str, ...], value: str) -> None:
    """A string at ``path`` of the stack's config file, also when it reads as a number (`pulumi config set
    --path` stores ``1`` as a number; DBOS Cloud's version ids are numbers as strings)."""
    from ruamel.yaml import YAML

    yaml = YAML()
    f = repo.work / "stacks" / f"Pulumi.{stack}.yaml"
    doc = yaml.load(f.read_text())
    node = doc["config"]
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with f.open("w") as out:
        yaml.dump(doc, out)


def set_secret_path(repo: RepoCopy, path: str, value: str, stack: str) -> None:
    """A secret at a config path, through stdin (never in argv)."""
    subprocess.run(["pulumi", "config", "set", "--path", "--secret", path, "--stack", stack,  # noqa: S603,S607
                    "--cwd", str(repo.work)], input=value, capture_output=True, text=True, env=repo.env,
                   timeout=120, check=True)


def test_example_stack_rotation_and_recovery_against_dbos_cloud(repo: RepoCopy, exact_serve: Serve) -> None:
    org, token = org_token(exact_serve)
    cloud_stack(repo, exact_serve, token)
    with api(exact_serve, token) as c:  # what the engine finds: DBOS Cloud's profile
        assert "Server" not in c.get("/v1alpha1/user/profile").json()

    # the example stack: an instance, an app database, a deployed app
    repo.pulumi("up", "--yes", "--stack", "cloud")
    out = outputs(repo, "cloud")
    assert out["instances"]["dev_db"]["status"] == "available"
    assert out["apps"]["greet"]["status"] == "AVAILABLE"
    first = greet(out)
    assert first["greeting"] == "Hello" and first["version"] == "1"  # DBOS Cloud numbers the deploys
    with api(exact_serve, token) as c:
        dbs = c.get(f"/v1alpha1/{org}/databases").json()
        apps = {a["Name"]: a for a in c.get(f"/v1alpha1/{org}/applications").json()}
    assert [d["PostgresInstanceName"] for d in dbs] == ["dev_db"] and "Kind" not in dbs[0]
    assert apps["greet"]["Version"] == "1" and apps["greet"]["PostgresInstanceName"] == "dev_db"

    # nothing changed: nothing to do (the content id of the code stands for DBOS Cloud's version 1)
    assert changes(repo, "cloud") == {}

    # a password rotation: an update in place of the instance, the app keeps answering, no redeploy
    set_secret_path(repo, "dbos:instances.dev_db.password", NEW_PW, "cloud")
    planned = changes(repo, "cloud")
    assert planned["dev_db"]["op"] == "update" and "password" in planned["dev_db"].get("diffReasons", []), planned
    assert "greet" not in planned or planned["greet"]["op"] == "update", planned
    repo.pulumi("up", "--yes", "--stack", "cloud")
    out = outputs(repo, "cloud")
    assert greet(out)["version"] == "1"
    with psycopg.connect(out["apps"]["shop"]["database_url"], connect_timeout=5) as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("dbos_user",)
    assert changes(repo, "cloud") == {}
    t_v1 = datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")

    # new code: version 2
    main = repo.work / "examples" / "greet" / "main.py"
    main.write_text(main.read_text().replace('GREETING = "Hello"', 'GREETING = "Hi"'))
    repo.pulumi("up", "--yes", "--stack", "cloud")
    assert greet(outputs(repo, "cloud")) == {"app": "greet", "version": "2", "greeting": "Hi"}

    # DBOS's recovery: restore the instance as of T, then change-database-instance with the version
    # that ran at T (`previousVersion`, DBOS Cloud's number)
    s = "--stack"
    repo.pulumi("config", "set", "--path", "dbos:restores.dev_r1.source", "dev_db", s, "cloud")
    repo.pulumi("config", "set", "--path", "dbos:restores.dev_r1.restoreTime", t_v1, s, "cloud")
    repo.pulumi("config", "set", "--path", "dbos:apps.greet.instance", "dev_r1", s, "cloud")
    set_string(repo, "cloud", ("dbos:apps", "greet", "previousVersion"), "1")  # `config set` would make it 1
    repo.pulumi("up", "--yes", "--stack", "cloud")
    out = outputs(repo, "cloud")
    assert out["apps"]["greet"]["instance"] == "dev_r1" and out["instances"]["dev_r1"]["status"] == "available"
    assert greet(out) == {"app": "greet", "version": "1", "greeting": "Hello"}
    with api(exact_serve, token) as c:
        app = c.get(f"/v1alpha1/{org}/applications/greet").json()
        versions = [v["Version"] for v in c.get(f"/v1alpha1/{org}/applications/greet/versions").json()]
    assert app["PostgresInstanceName"] == "dev_r1" and app["Version"] == "1" and versions == ["1", "2"]
    # the restore has the source's user, with the source's password (DBOS Cloud's restore), as of T
    r1 = out["instances"]["dev_r1"]
    with psycopg.connect(host=r1["hostname"], port=r1["port"], user="dbos_user", password=NEW_PW,
                         dbname="greet", connect_timeout=5) as conn:
        assert conn.execute("SELECT count(*) FROM greetings").fetchone() is not None
    assert changes(repo, "cloud") == {}

    repo.pulumi("destroy", "--yes", "--stack", "cloud")
    with api(exact_serve, token) as c:
        assert c.get(f"/v1alpha1/{org}/databases").json() == []
        assert c.get(f"/v1alpha1/{org}/applications").json() == []


# ---------------------------------------------------------------- what DBOS Cloud cannot do, refused at preview
REFUSED_AT_PREVIEW = {
    # name: (config path, value, the field named, words of the reason)
    "port": ("dbos:instances.dev_db.port", "15432", "port", "chooses an instance's port"),
    "retention": ("dbos:instances.dev_db.retentionHours", "48", "retention_hours", "chooses how long backups"),
    "app_port": ("dbos:apps.greet.port", "18080", "port", "its own URL"),
    "linked_user": ("dbos:linked.ext_db.username", "someone", "username", "dbosadmin"),
}


def test_what_dbos_cloud_cannot_do_is_refused_at_preview_naming_the_field(repo: RepoCopy,
                                                                          exact_serve: Serve) -> None:
    org, token = org_token(exact_serve)
    cloud_stack(repo, exact_serve, token)
    for name, (path, value, field, reason) in REFUSED_AT_PREVIEW.items():
        stack = f"r_{name}"
        repo.pulumi("stack", "init", stack, "--copy-config-from", "cloud")
        if path.startswith("dbos:linked."):
            for key, v in (("hostname", "127.0.0.1"), ("port", "5432")):
                repo.pulumi("config", "set", "--path", f"dbos:linked.ext_db.{key}", v, "--stack", stack)
            set_secret_path(repo, "dbos:linked.ext_db.password", "Linked-pw-123", stack)
        repo.pulumi("config", "set", "--path", path, value, "--stack", stack)
        cp = repo.pulumi("preview", "--stack", stack, check=False)
        text = cp.stdout + cp.stderr
        assert cp.returncode != 0, f"{name}: the preview passed:\n{text}"
        assert re.search(rf"\b{field}\b", text) and reason in text, f"{name}:\n{text}"
        assert token not in text
    with api(exact_serve, token) as c:  # previews made nothing
        assert c.get(f"/v1alpha1/{org}/databases").json() == []


def test_stop_and_backup_are_refused_naming_what_to_leave(exact_serve: Serve, tmp_path: Path) -> None:
    """No resource input stops an instance or takes a backup: the engine's ``stop`` and the CLI's
    ``db backup`` are where DBOS Cloud's API lacks them (the instance is left as it was)."""
    org, token = org_token(exact_serve)
    eng = get_engine("dbos-cloud", domain=exact_serve.domain, token=token, ca_cert=str(exact_serve.ca_cert))
    try:
        eng.provision("stopme", "app_user", "Stop-pw-1234")
        with pytest.raises(DbosError) as err:
            eng.stop("stopme")
        assert "cannot stop" in err.value.message and "`status`" in str(err.value.hint)
        cp = subprocess.run(  # noqa: S603 - argument list
            [sys.executable, "-m", "pulumi_dbos.cli", "--engine", "dbos-cloud", "--cloud-domain", exact_serve.domain,
             "--cloud-ca-cert", str(exact_serve.ca_cert), "db", "backup", "stopme"],
            capture_output=True, text=True, timeout=120, check=False, cwd=tmp_path,
            env={**os.environ, "DBOS_CLOUD_TOKEN": token})
        assert cp.returncode != 0 and "cannot take a backup" in cp.stderr and "`backup`" in cp.stderr, cp.stderr
        info = eng.info("stopme")
        assert info is not None and info.status == "available"
    finally:
        eng.destroy("stopme")
        eng.close()  # type: ignore[attr-defined]
