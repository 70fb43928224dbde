"""Issue 31, item 8: a refused upload leaves nothing on disk.

A zip bomb within serve's archive limits (one 150 MiB file of zeros, ~150 KB compressed) whose app the engine
then refuses (its ``dbos-config.yaml`` has no start command; or its ``requirements.txt`` an option serve
refuses) was answered 400, yet its archive stayed in ``versions/`` and its 150 MiB unpacked in ``releases/``:
a tenant filling the disk with refused deploys, for the price of a few KB each. Each test deploys such an
archive, as a first deploy and over a serving app, and reads the app's directory back.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.security.conftest import Tenants, deploy_archive, name

MIB = 1024 * 1024
GOOD_CONFIG = "name: {app}\nlanguage: python\nruntimeConfig:\n  start:\n    - python3 main.py\n"
NO_START = "name: {app}\nlanguage: python\nruntimeConfig: {{}}\n"
#: the ways the engine refuses the archive once unpacked: (config, requirements.txt)
REFUSALS = {
    "no start command": (NO_START, "dbos==3.4.0\n"),
    "refused requirement": (GOOD_CONFIG, "dbos==3.4.0\n-e /etc\n"),
}


def bomb(app: str, config: str, requirements: str, size: int = 150 * MIB) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        zf.writestr("dbos-config.yaml", config.format(app=app))
        zf.writestr("requirements.txt", requirements)
        zf.writestr("main.py", "print('hello')\n")
        info = zipfile.ZipInfo("data/zeros.bin")
        info.compress_type = zipfile.ZIP_DEFLATED
        with zf.open(info, "w") as out:
            chunk = bytes(MIB)
            for _ in range(size // MIB):
                out.write(chunk)
    return buf.getvalue()


def disk_usage(path: Path) -> int:
    return sum(p.lstat().st_size for p in path.rglob("*")) if path.exists() else 0


def files_of(app_dir: Path, version: str) -> list[str]:
    """What of ``version`` is on disk under the app's directory (its archive, its release, a half-made one)."""
    return sorted(str(p.relative_to(app_dir)) for p in app_dir.rglob("*") if version in p.name)


@pytest.fixture
def registered(tenants: Tenants) -> Iterator[str]:
    app = name("refused")
    r = tenants.alpha.put("/v1alpha1/alpha/applications", json={"name": app, "database": "alpha_db",
                                                                 "language": "python"})
    assert r.status_code == 200, r.text
    yield app
    tenants.alpha.delete(f"/v1alpha1/alpha/applications/{app}")


@pytest.mark.parametrize("refusal", sorted(REFUSALS))
def test_refused_first_deploy_leaves_nothing(tenants: Tenants, registered: str, refusal: str) -> None:
    config, requirements = REFUSALS[refusal]
    archive = bomb(registered, config, requirements)
    assert len(archive) < 2 * MIB
    version = hashlib.sha256(archive).hexdigest()[:12]
    r = deploy_archive(tenants.alpha, "alpha", registered, archive)
    assert r.status_code == 400, (r.status_code, r.text[:1000])
    app_dir = tenants.serve.data_dir / "orgs" / "alpha" / "apps" / registered
    assert files_of(app_dir, version) == [], "the refused upload is still on disk"
    assert disk_usage(app_dir) < MIB, f"{disk_usage(app_dir) // MIB} MiB left in {app_dir}"
    versions = tenants.alpha.get(f"/v1alpha1/alpha/applications/{registered}/versions")
    assert versions.status_code == 200 and versions.json() == [], versions.text


def test_refused_deploy_over_a_serving_app_leaves_nothing_of_it(tenants: Tenants) -> None:
    """alpha's serving app ``shell``: a refused bomb version is gone, the serving version and its files stay."""
    app_dir = tenants.serve.data_dir / "orgs" / "alpha" / "apps" / "shell"
    before = sorted(p.name for p in (app_dir / "releases").iterdir())
    stored = tenants.alpha.get("/v1alpha1/alpha/applications/shell/versions").json()
    config, requirements = REFUSALS["no start command"]
    archive = bomb("shell", config, requirements)
    version = hashlib.sha256(archive).hexdigest()[:12]
    r = deploy_archive(tenants.alpha, "alpha", "shell", archive)
    assert r.status_code == 400, (r.status_code, r.text[:1000])
    assert files_of(app_dir, version) == [], "the refused upload is still on disk"
    assert sorted(p.name for p in (app_dir / "releases").iterdir()) == before
    assert tenants.alpha.get("/v1alpha1/alpha/applications/shell/versions").json() == stored
    assert tenants.run("print('still serving')").strip() == "still serving"
