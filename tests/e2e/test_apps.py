"""App bindings through the real pulumi CLI: migrations and change-database-instance."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import psycopg
import pytest
from pulumi import automation as auto

from tests.conftest import ROOT
from tests.e2e.conftest import PROGRAM_HEADER

PW = "Apps-e2e-passw0rd"

PROGRAM = PROGRAM_HEADER + """
a = dbos.DatabaseInstance("a", instance_name="inst_a", username="app_user", password=cfg.require_secret("pw"),
                          retention_hours=spec.get("retention", 24))
insts = {"a": a}
if "restore_time" in spec:
    insts["b"] = dbos.RestoredInstance("b", instance_name="inst_b", source=a, restore_time=spec["restore_time"])
app = None
if spec.get("app"):
    app = dbos.AppDatabase("shop", app_name="shop", instance=insts[spec["app"]], dbos_config=spec["config"],
                           drop_on_delete=spec.get("drop", False), owner_role=spec.get("owner", False),
                           **spec.get("app_kw", {}))
    if spec.get("consumer"):  # e.g. an app container getting the URL
        Noop("consumer", value=app.database_url)
    pulumi.export("app", pulumi.Output.secret({"url": app.database_url, "instance": app.instance_name,
                                               "migrated_at": app.migrated_at, "owner": app.owner_database_url}))
"""


@pytest.fixture
def shop(tmp_root: Path) -> Path:
    d = tmp_root / "shop"
    shutil.copytree(ROOT / "examples" / "shop", d)
    return d


def preview_steps(p: Any) -> dict[str, str]:
    """urn suffix -> op, from `pulumi preview --json`."""
    env = {**p.ws_opts.env_vars}
    import os
    import subprocess

    cp = subprocess.run(["pulumi", "preview", "--json", "--stack", "test", "--cwd", str(p.work)],  # noqa: S603,S607
                        capture_output=True, text=True, env={**os.environ, **env}, timeout=300)
    data = json.loads(cp.stdout)
    return {s["urn"].rsplit("::", 1)[1]: s["op"] for s in data.get("steps", [])}


def test_change_database_instance(make_project: Any, shop: Path) -> None:
    p = make_project(PROGRAM)
    p.stack.set_config("pw", auto.ConfigValue(PW, secret=True))
    p.set_spec({"app": "a", "config": str(shop / "dbos-config.yaml"), "consumer": True})
    p.up()
    app = p.outputs()["app"]
    assert app["instance"] == "inst_a" and app["migrated_at"]
    with psycopg.connect(app["url"], autocommit=True) as c:
        c.execute("INSERT INTO orders (id, item) VALUES (1, 'before')")
        t = c.execute("SELECT now()").fetchone()[0].isoformat()
        c.execute("INSERT INTO orders (id, item) VALUES (2, 'after')")
    assert PW not in p.export_text()

    # restore B from A at T, then move the app onto B
    p.set_spec({"app": "a", "config": str(shop / "dbos-config.yaml"), "restore_time": t, "consumer": True})
    p.up()
    # a new migration appears together with the move
    (shop / "sql").mkdir(exist_ok=True)
    cfg = (shop / "dbos-config.yaml").read_text().replace(
        "    - alembic upgrade head\n", "    - alembic upgrade head\n    - psql -v ON_ERROR_STOP=1 -q -f sql/audit.sql\n")
    (shop / "dbos-config.yaml").write_text(cfg)
    p.set_spec({"app": "b", "config": str(shop / "dbos-config.yaml"), "restore_time": t, "consumer": True})
    steps = preview_steps(p)
    assert steps.get("shop") == "update", steps
    assert steps.get("consumer") == "update", steps  # the URL's consumer sees the move in the same preview
    assert not [u for u, op in steps.items() if op in ("delete", "replace", "create-replacement")], steps
    p.up()
    app2 = p.outputs()["app"]
    assert app2["instance"] == "inst_b" and app2["url"] != app["url"]
    with psycopg.connect(app2["url"]) as c:
        assert [r[0] for r in c.execute("SELECT item FROM orders ORDER BY id")] == ["before"]
        assert c.execute("SELECT to_regclass('audit_log')").fetchone()[0] is not None
    with psycopg.connect(app["url"]) as c:  # A is intact
        assert [r[0] for r in c.execute("SELECT item FROM orders ORDER BY id")] == ["before", "after"]
        assert c.execute("SELECT to_regclass('audit_log')").fetchone()[0] is None

    # a failing migration fails the update and leaves the binding where it was
    p.set_spec({"app": "a", "config": str(shop / "dbos-config.yaml"), "restore_time": t,
                "app_kw": {"migrate": ["psql -v ON_ERROR_STOP=1 -f sql/broken.sql"]}})
    with pytest.raises(auto.CommandError) as err:
        p.up()
    assert "exit code 3" in str(err.value) and PW not in str(err.value)
    st = p.resource("shop")
    assert st is not None and st["instance_name"] == "inst_b"

    # removing the binding drops nothing by default
    p.set_spec({"restore_time": t})
    p.up()
    with psycopg.connect(app2["url"]) as c:
        assert c.execute("SELECT count(*) FROM orders").fetchone() == (1,)
    p.destroy()


def test_drop_on_delete_and_owner_role(make_project: Any, shop: Path) -> None:
    p = make_project(PROGRAM)
    p.stack.set_config("pw", auto.ConfigValue(PW, secret=True))
    p.set_spec({"app": "a", "config": str(shop / "dbos-config.yaml"), "drop": True, "owner": True})
    p.up()
    out = p.outputs()["app"]
    with psycopg.connect(out["owner"]) as c:
        assert c.execute("SELECT current_user").fetchone() == ("shop_owner",)
        assert c.execute("SELECT to_regclass('orders')").fetchone()[0] is not None
    admin_url = out["url"].rsplit("/", 1)[0] + "/postgres"
    p.set_spec({})
    p.up()
    with psycopg.connect(admin_url) as c:
        assert c.execute("SELECT 1 FROM pg_database WHERE datname = 'shop'").fetchone() is None
        assert c.execute("SELECT 1 FROM pg_roles WHERE rolname = 'shop_owner'").fetchone() is None


def test_bad_app_inputs_fail_at_preview(make_project: Any, shop: Path) -> None:
    p = make_project(PROGRAM)
    p.stack.set_config("pw", auto.ConfigValue(PW, secret=True))
    (shop / "bad.yaml").write_text("database:\n  migrate: not-a-list\n")
    p.set_spec({"app": "a", "config": str(shop / "bad.yaml")})
    with pytest.raises(auto.CommandError) as err:
        p.preview()
    assert "bad.yaml" in str(err.value) and "database.migrate" in str(err.value)


def test_cli_connect_and_rollback(make_project: Any, shop: Path) -> None:
    import os
    import subprocess

    p = make_project(PROGRAM)
    p.stack.set_config("pw", auto.ConfigValue(PW, secret=True))
    p.set_spec({"app": "a", "config": str(shop / "dbos-config.yaml")})
    p.up()
    env = {**os.environ, **p.ws_opts.env_vars}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["pulumi-dbos", *args], cwd=p.work, env=env, capture_output=True, text=True,  # noqa: S603,S607
                              timeout=300)

    cp = cli("db", "connect", "shop", "--stack", "test")
    assert cp.returncode == 0, cp.stderr
    text = (shop / "dbos-config.yaml").read_text()
    port = str(p.resource("a")["port"])
    assert port in text and "${PGPASSWORD}" in text and PW not in text
    assert "# dbos-config.yaml of the sample" in text  # comments kept
    url = p.outputs()["app"]["url"]
    with psycopg.connect(url) as c:
        assert c.execute("SELECT to_regclass('orders')").fetchone()[0] is not None
    cp = cli("app", "rollback", "shop", "--stack", "test")
    assert cp.returncode == 0, cp.stderr
    with psycopg.connect(url) as c:
        assert c.execute("SELECT to_regclass('orders')").fetchone()[0] is None
    assert cli("app", "rollback", "nope", "--stack", "test").returncode == 1
    # db url -S takes the password from the stack (the engine keeps none)
    cp = cli("--data-dir", str(p.data_dir), "db", "url", "inst_a", "-S", "--stack", "test")
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout.strip() == f"postgresql://app_user:{PW}@127.0.0.1:{port}/postgres"
    cp = cli("--data-dir", str(p.data_dir), "db", "url", "inst_a")
    assert PW not in cp.stdout


def test_changing_migrate_reruns_it(make_project: Any, shop: Path) -> None:
    p = make_project(PROGRAM)
    p.stack.set_config("pw", auto.ConfigValue(PW, secret=True))
    cfg = str(shop / "dbos-config.yaml")
    p.set_spec({"app": "a", "config": cfg, "app_kw": {"migrate": ["alembic upgrade 0001"]}})
    p.up()
    first = p.outputs()["app"]
    with psycopg.connect(first["url"]) as c:
        assert c.execute("SELECT to_regclass('customers')").fetchone()[0] is None
    p.set_spec({"app": "a", "config": cfg, "app_kw": {"migrate": ["alembic upgrade head", "alembic current"]}})
    assert p.preview().change_summary.get("update") == 1
    shown = p.up().stdout
    # what the migration printed is shown during `up` (`alembic current`: the revision now in place)
    assert "shop migrate:" in shown and "(head)" in shown, shown
    second = p.outputs()["app"]
    assert second["migrated_at"] > first["migrated_at"]
    with psycopg.connect(second["url"]) as c:
        assert c.execute("SELECT to_regclass('customers')").fetchone()[0] is not None


def test_instance_only_change_leaves_apps_alone_and_errors_are_one_message(make_project: Any, shop: Path) -> None:
    p = make_project(PROGRAM)
    p.stack.set_config("pw", auto.ConfigValue(PW, secret=True))
    p.set_spec({"app": "a", "config": str(shop / "dbos-config.yaml")})
    p.up()
    # a retention change is the instance's alone: the app's inputs (host, port, user, password) are known
    p.set_spec({"app": "a", "config": str(shop / "dbos-config.yaml"), "retention": 48})
    assert {k: v for k, v in p.preview().change_summary.items() if v} == {"update": 1, "same": 2}
    # a provider failure is its message and hint, not a Python traceback
    p.set_spec({"app": "a", "config": str(shop / "dbos-config.yaml"), "app_kw": {"migrate": ["false"]}})
    with pytest.raises(auto.CommandError) as err:
        p.up()
    text = str(err.value)
    assert "migrate command `false` failed with exit code 1" in text and "hint:" in text
    assert "Traceback (most recent call last)" not in text

