"""Backups that survive a destroy through `pulumi-dbos serve` (issue 29): an organization's instance, its
backups in the repository given by `serve --backup-repo FILE` (outside serve's data dir, a path per
organization), destroyed through the API and restored by name through the API."""

from __future__ import annotations

import json
import ssl
from pathlib import Path

import httpx
import psycopg

from pulumi_dbos.cloudapi import paths
from pulumi_dbos.engine import get_engine
from pulumi_dbos.engine.local.facade import LocalEngine
from pulumi_dbos.engine.waits import wait_until
from tests.conftest import _short_tmpdir
from tests.support.serve import running_serve

PW = "Serve-durable-pw1"


def test_destroyed_through_serve_restores_by_name_from_its_organizations_repository(tmp_root: Path) -> None:
    repo_dir = tmp_root / "backups"
    conf = tmp_root / "repo.json"
    conf.write_text(json.dumps({"path": str(repo_dir), "deletedRetentionHours": 48}))
    conf.chmod(0o600)
    root = _short_tmpdir("sv")
    with running_serve(root / "d", extra_args=["--backup-repo", str(conf)]) as serve:
        token = serve.token("acme")
        eng = get_engine("dbos-cloud", domain=serve.domain, token=token, ca_cert=str(serve.ca_cert))
        info = eng.provision("sv_db", "app_user", PW)
        local = LocalEngine(serve.data_dir / "orgs" / "acme")
        wait_until(lambda: local.catalog.get("sv_db").repo_backup_at is not None, 120, "the first repository backup")
        with psycopg.connect(host=info.hostname, port=info.port, user="app_user", password=PW, dbname="postgres",
                             autocommit=True) as c:
            c.execute("CREATE TABLE t AS SELECT generate_series(1, 77) x")
        eng.destroy("sv_db")
        # the organization's repository is where --backup-repo put it, not in serve's data dir
        assert list((repo_dir / "orgs" / "acme" / "backup").iterdir())
        kept = local.repo.of_instance("sv_db")
        assert kept and kept[0].destroyed_at and kept[0].keep_until
        ctx = ssl.create_default_context(cafile=str(serve.ca_cert))
        r = httpx.post(serve.url + paths.DB_RESTORE.format(org="acme", name="sv_db"), verify=ctx, timeout=600,
                       headers={"Authorization": f"Bearer {token}"},
                       json={"RestoreName": "sv_back", "RestoreTimestamp": "latest", "Password": PW})
        assert r.status_code == 201, r.text
        back = eng.info("sv_back")
        with psycopg.connect(host=back.hostname, port=back.port, user="app_user", password=PW,
                             dbname="postgres") as c:
            assert c.execute("SELECT count(*) FROM t").fetchone() == (77,)
        # another organization cannot restore it: its repository is its own
        other = serve.token("other")
        r = httpx.post(serve.url + paths.DB_RESTORE.format(org="other", name="sv_db"), verify=ctx, timeout=60,
                       headers={"Authorization": f"Bearer {other}"},
                       json={"RestoreName": "sv_steal", "RestoreTimestamp": "latest", "Password": PW})
        assert r.status_code == 404, r.text
