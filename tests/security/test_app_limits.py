"""Item 6 of the threat model, the apps' side: memory (``ExecutorsMemoryMib``) and task limits hold inside
an app, and stored versions are pruned beyond the kept number (never the serving one)."""

from __future__ import annotations

import secrets
from pathlib import Path

from pulumi_dbos.appsource import pack
from tests.security.conftest import Tenants, copy_app, deploy_archive


def test_an_app_cannot_use_more_memory_than_its_executors_memory(tenants: Tenants) -> None:
    """The app is registered with the default 512 MiB; a child of it asking for 1 GiB is stopped."""
    out = tenants.run_json("""
import json, subprocess, sys
cp = subprocess.run([sys.executable, "-c", "b = bytearray(1024 * 2**20); b[::4096] = b'x' * len(b[::4096]); print('held')"],
                    capture_output=True, text=True, timeout=60)
print(json.dumps({"rc": cp.returncode, "out": cp.stdout, "err": cp.stderr[-300:]}))
""")
    assert out["rc"] != 0 and "held" not in out["out"], out
    assert tenants.run("print('alive')").strip() == "alive"  # the app itself keeps serving


def test_an_app_cannot_start_unbounded_processes(tenants: Tenants) -> None:
    out = tenants.run_json("""
import json, os, time
kids, error = [], None
try:
    for _ in range(5000):
        pid = os.fork()
        if pid == 0:
            time.sleep(30)
            os._exit(0)
        kids.append(pid)
except OSError as exc:
    error = str(exc)
for pid in kids:
    try:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
    except OSError:
        pass
print(json.dumps({"started": len(kids), "error": error}))
""")
    assert out["error"] is not None and out["started"] < 5000, out
    assert tenants.victim_pid() > 0  # another organization's app is unaffected


def test_old_versions_are_pruned_but_never_the_serving_one(tenants: Tenants, tmp_path: Path) -> None:
    app = f"many{secrets.token_hex(2)}"
    src = copy_app("shell", tmp_path, app)
    r = tenants.alpha.put("/v1alpha1/alpha/applications", json={"name": app, "database": "alpha_db",
                                                                "language": "python"})
    assert r.status_code == 200, r.text
    versions = []
    try:
        for i in range(12):
            (src / "note.txt").write_text(f"version {i}\n")
            version, archive = pack(src)
            r = deploy_archive(tenants.alpha, "alpha", app, archive)
            assert r.status_code == 200, r.text
            versions.append(version)
        stored = [v["Version"] for v in tenants.alpha.get(f"/v1alpha1/alpha/applications/{app}/versions").json()]
        assert stored == versions[-10:], stored
        zips = sorted(p.stem for p in (tenants.serve.data_dir / "orgs" / "alpha" / "apps" / app / "versions").glob("*.zip"))
        assert zips == sorted(versions[-10:])
        # the oldest kept one is still a working previous_version
        r = tenants.alpha.post(f"/v1alpha1/alpha/applications/{app}", json={"previous_version": versions[2]})
        assert r.status_code == 200, r.text
        r = tenants.alpha.post(f"/v1alpha1/alpha/applications/{app}", json={"previous_version": versions[0]})
        assert r.status_code == 400 and "not stored" in r.text, r.text
    finally:
        tenants.alpha.request("DELETE", f"/v1alpha1/alpha/applications/{app}", json={})
