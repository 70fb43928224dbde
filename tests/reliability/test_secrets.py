"""Secrets and access: a full lifecycle leaves no plaintext secret anywhere we can look."""

from __future__ import annotations

import contextlib
import shutil
import stat
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pulumi_dbos import apps
from pulumi_dbos.engine import LocalEngine
from pulumi_dbos.errors import EngineError
from tests.conftest import ROOT
from tests.e2e.conftest import PROGRAM_HEADER

PW1 = "Audit-first-pw1"
PW2 = "Audit-second-pw2"

PROGRAM = PROGRAM_HEADER + """
a = dbos.DatabaseInstance("a", instance_name="aud_a", username="app_user", password=cfg.require_secret("pw"))
if spec.get("restore"):
    b = dbos.RestoredInstance("b", instance_name="aud_b", source=a, restore_time="latest")
if spec.get("app"):
    dbos.AppDatabase("shop", app_name="shop", instance=a, dbos_config=spec["config"], owner_role=True)
"""


class Sampler(threading.Thread):
    """Samples every process's argv and every postgres process's environment, like `ps e` would."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.argv: set[str] = set()
        self.server_env: set[str] = set()
        self.stop = False

    def run(self) -> None:
        while not self.stop:
            for p in Path("/proc").glob("[0-9]*"):
                with contextlib.suppress(OSError):
                    cmd = (p / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                    self.argv.add(cmd)
                    if cmd.startswith("postgres:") or "/bin/postgres" in cmd:
                        self.server_env.add((p / "environ").read_bytes().decode(errors="replace"))
            time.sleep(0.02)


def test_full_lifecycle_leaks_nothing(make_project: Any, tmp_root: Path) -> None:
    shop = tmp_root / "shop"
    shutil.copytree(ROOT / "examples" / "shop", shop)
    p = make_project(PROGRAM)
    sampler = Sampler()
    sampler.start()
    try:
        p.set_secret("pw", PW1)
        p.set_spec({})
        p.up()                                                    # provision
        p.set_secret("pw", PW2)
        p.up()                                                    # reset password
        p.set_spec({"restore": True, "app": True, "config": str(shop / "dbos-config.yaml")})
        p.up()                                                    # restore, bind, migrate
        eng = LocalEngine(p.data_dir)
        logs = "".join(f.read_text(errors="replace") for f in p.data_dir.rglob("*.log"))
        state_before = p.export_text()
        owner_pw = None
        for r in p.stack.export_stack().deployment["resources"]:
            if r["urn"].endswith("::shop"):
                owner_pw = r["outputs"]["owner_password"]
                owner_pw = owner_pw.get("plaintext", owner_pw) if isinstance(owner_pw, dict) else owner_pw
                owner_pw = owner_pw.strip('"')
        assert owner_pw
        # access rules on a live instance
        info = eng.info("aud_a")
        assert info is not None
        with psycopg.connect(host="127.0.0.1", port=info.port, user="app_user", password=PW2,
                             dbname="postgres") as c:
            assert c.execute("SHOW listen_addresses").fetchone() == ("127.0.0.1",)
            assert c.execute("SHOW password_encryption").fetchone() == ("scram-sha-256",)
            with pytest.raises(psycopg.errors.InsufficientPrivilege):  # not a superuser
                c.execute("SELECT rolpassword FROM pg_authid")
        with eng.server.admin("aud_a", info.port) as c:
            verifiers = [r[0] for r in c.execute("SELECT rolpassword FROM pg_authid WHERE rolpassword IS NOT NULL")]
            hba = c.execute("SELECT type, auth_method FROM pg_hba_file_rules").fetchall()
        assert verifiers and all(v.startswith("SCRAM-SHA-256$") for v in verifiers)
        assert {m for t, m in hba if t == "host"} <= {"scram-sha-256", "reject"}
        assert ("local", "trust") not in hba
        for d in (eng.pgdata("aud_a"), eng.inst_dir("aud_a") / "archive", eng.inst_dir("aud_a") / "s",
                  eng.inst_dir("aud_b") / "archive", p.data_dir):
            assert stat.S_IMODE(d.stat().st_mode) == 0o700, d
        p.destroy()                                               # destroy
        state_after = p.export_text()
    finally:
        sampler.stop = True
        sampler.join(5)

    secrets = [PW1, PW2, owner_pw, urllib.parse.quote(PW2, safe="")]
    urls_with_pw = [f":{PW1}@", f":{PW2}@", f":{owner_pw}@"]
    for where, text in [("state", state_before + state_after), ("server logs", logs),
                        ("ps", "\n".join(sampler.argv)), ("server environment", "\n".join(sampler.server_env))]:
        for s in secrets + urls_with_pw:
            assert s not in text, f"{s!r} found in {where}"
    assert sampler.argv and sampler.server_env  # the audit actually saw processes
    assert not any("PGPASSWORD" in e or "PULUMI_CONFIG" in e for e in sampler.server_env)


def test_identifiers_are_rejected_or_quoted(engine: LocalEngine) -> None:
    for bad in ("x'; DROP TABLE t; --", 'a"b', "../../tmp", "ünï", "ab"):
        with pytest.raises(EngineError, match="invalid"):
            engine.provision(bad, "app_user", "Passw0rd-123")
    assert not list((engine.data_dir / "instances").iterdir())
    info = engine.provision("quote_db", "app_user", "Passw0rd-123")
    admin = apps.Conn("127.0.0.1", info.port, "app_user", "Passw0rd-123")
    # database names are identifiers: even odd ones are quoted, never interpolated
    apps.ensure_database(admin, 'we"ird; name')
    assert apps.database_exists(admin, 'we"ird; name')
    apps.drop_database(admin, 'we"ird; name')
    assert not apps.database_exists(admin, 'we"ird; name')
