"""Item 2 of the threat model: root never follows a path the tenant controls.

Alpha's app plants links where root used to write or read for it (its log, the proxy's target file,
pgpass files), at every path it could reach, then asks serve to serve its logs and to redeploy it; what
root did is read back."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.security.conftest import BRAVO_PW, STRIPE_KEY, Tenants

PLANT = """
import json, os
data, target = {data!r}, {target!r}
app = data + '/orgs/alpha/apps/shell'
names = {names!r}
planted = []
for d in (os.path.join(os.getcwd(), '../../run'), app + '/run', app + '/log', app + '/ctl', os.getcwd(),
          os.environ.get('HOME', '/nonexistent'), os.path.dirname(os.environ.get('PGPASSFILE', '/x/y'))):
    for n in names:
        p = os.path.join(d, n)
        try:
            if os.path.lexists(p):
                os.rename(p, p + '.orig')
            os.symlink(target, p)
            planted.append(p)
        except OSError:
            pass
print(json.dumps(planted))
"""


@pytest.fixture
def root_file(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A root-owned 0600 file outside the data dir (stands for /etc/ld.so.preload)."""
    d = tmp_path_factory.mktemp("rootonly")
    f = d / "precious"
    f.write_text("root's own\n")
    os.chmod(f, 0o600)
    os.chmod(d, 0o755)
    yield f
    with contextlib.suppress(OSError):
        f.unlink()


def test_logs_never_serve_a_file_the_app_links_to(tenants: Tenants) -> None:
    creds = tenants.serve.data_dir / "serve" / "credentials.json"
    assert BRAVO_PW in creds.read_text()  # what the attack is after
    tenants.run(PLANT.format(data=str(tenants.serve.data_dir), target=str(creds), names=["app.log", "proxy.log"]))
    for path in ("/v1alpha1/alpha/logs/applications/shell", "/v1alpha1/alpha/logs/applications/shell?limit=100000"):
        r = tenants.alpha.get(path)
        assert r.status_code == 200, r.text
        assert BRAVO_PW not in r.text and STRIPE_KEY not in r.text and "AdminPassword" not in r.text


def test_a_deploy_never_writes_or_chowns_through_a_planted_link(tenants: Tenants, root_file: Path) -> None:
    before = os.stat(root_file)
    names = ["target.tmp", "target", "app.log", "proxy.log", "proxy.ready",
             *[f"pgpass.{p}" for p in range(61000, 61010)], *[f".target.{i}.tmp" for i in range(3)]]
    tenants.run(PLANT.format(data=str(tenants.serve.data_dir), target=str(root_file), names=names))
    version = tenants.alpha.get("/v1alpha1/alpha/applications/shell").json()["Version"]
    r = tenants.alpha.post("/v1alpha1/alpha/applications/shell", json={"previous_version": version})
    assert r.status_code == 200, r.text  # the redeploy itself works
    after = os.stat(root_file)
    assert (after.st_uid, after.st_gid, after.st_mode) == (before.st_uid, before.st_gid, before.st_mode)
    assert root_file.read_text() == "root's own\n"
    assert tenants.run("print('still here')").strip() == "still here"
