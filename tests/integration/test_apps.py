"""App bindings at engine level: databases, real migrations (Alembic, psql -f), dbos-config.yaml."""

from __future__ import annotations

import shutil
from pathlib import Path

import psycopg
import pytest

from pulumi_dbos import apps, dbos_config
from pulumi_dbos.engine import LocalEngine
from pulumi_dbos.errors import DbosError, ValidationError
from tests.conftest import ROOT

PW = "Apps-passw0rd"
SHOP = ROOT / "examples" / "shop"


@pytest.fixture
def admin(engine: LocalEngine) -> apps.Conn:
    info = engine.provision("apps_db", "app_user", PW)
    return apps.Conn("127.0.0.1", info.port, "app_user", PW)


@pytest.fixture
def shop(tmp_root: Path) -> Path:
    d = tmp_root / "shop"
    shutil.copytree(SHOP, d)
    return d


def tables(conn: apps.Conn) -> set[str]:
    with conn.connect() as c:
        return {r[0] for r in c.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}


def test_alembic_and_psql_migrations(admin: apps.Conn, shop: Path) -> None:
    assert apps.ensure_database(admin, "shop") is True
    assert apps.ensure_database(admin, "shop") is False
    conn = admin.with_db("shop")
    res = apps.run_commands(["alembic upgrade head", "psql -v ON_ERROR_STOP=1 -q -f sql/audit.sql"], conn, str(shop))
    assert res.ran and res.finished_at
    assert {"orders", "customers", "audit_log", "alembic_version"} <= tables(conn)
    apps.run_commands(["alembic downgrade base"], conn, str(shop), "rollback")
    assert "orders" not in tables(conn)


def test_failing_migration_shows_exit_code_and_masks_secrets(admin: apps.Conn, shop: Path) -> None:
    apps.ensure_database(admin, "shop")
    conn = admin.with_db("shop")
    with pytest.raises(DbosError) as err:
        apps.run_commands(["psql -v ON_ERROR_STOP=1 -f sql/broken.sql"], conn, str(shop))
    text = str(err.value)
    assert "exit code 3" in text and "syntax error" in text
    with pytest.raises(DbosError) as err:
        apps.run_commands([f"sh -c 'echo leaking $PGPASSWORD and {PW}; exit 4'"], conn, str(shop))
    assert "exit code 4" in str(err.value) and PW not in str(err.value) and "[secret]" in str(err.value)


def test_owner_role_cannot_read_other_apps(admin: apps.Conn) -> None:
    apps.ensure_database(admin, "app_one")
    apps.ensure_database(admin, "app_two")
    one = apps.ensure_owner_role(admin, "app_one", "app_one")
    two = apps.ensure_owner_role(admin, "app_two", "app_two")
    with one.connect(autocommit=True) as c:
        c.execute("CREATE TABLE secrets_one (x int)")
    with pytest.raises(DbosError, match="permission denied|not permitted"):
        one.with_db("app_two").connect()
    with two.connect() as c:
        assert c.execute("SELECT to_regclass('secrets_one')").fetchone() == (None,)
    # the instance's user still reaches both
    with admin.with_db("app_one").connect() as c:
        c.execute("SELECT 1")


def test_drop_database(admin: apps.Conn) -> None:
    apps.ensure_database(admin, "gone")
    with admin.with_db("gone").connect():
        pass
    apps.drop_database(admin, "gone")
    assert not apps.database_exists(admin, "gone")


OLD_LAYOUT = """# old layout
name: shop
database:
  hostname: localhost   # keep me
  port: 5432
  username: postgres
  app_db_name: shop_db
  migrate: ["alembic upgrade head"]
  rollback: ["alembic downgrade base"]
"""

NEW_LAYOUT = """# new layout
name: shop
database_url: postgresql://u:p@localhost:5432/shop_new   # the app's database
database:
  migrate:
    - psql -f schema.sql
"""


def test_read_both_layouts(tmp_path: Path) -> None:
    (tmp_path / "old.yaml").write_text(OLD_LAYOUT)
    (tmp_path / "new.yaml").write_text(NEW_LAYOUT)
    old = dbos_config.read_binding(tmp_path / "old.yaml")
    assert (old.app_db_name, old.migrate, old.rollback) == ("shop_db", ["alembic upgrade head"],
                                                           ["alembic downgrade base"])
    new = dbos_config.read_binding(tmp_path / "new.yaml")
    assert (new.app_db_name, new.migrate, new.rollback, new.layout) == ("shop_new", ["psql -f schema.sql"],
                                                                       None, "database_url")


@pytest.mark.parametrize(("text", "key"), [
    ("database: [1, 2]\n", "'database'"),
    ("database:\n  migrate: alembic upgrade head\n", "database.migrate"),
    ("database:\n  rollback: [1, 2]\n", "database.rollback"),
    ("database:\n  app_db_name: Bad-Name\n", "database.app_db_name"),
    ("database_url: 5\n", "database_url"),
    ("database:\n  migrate: [\n", "YAML syntax error"),
    ("- a\n- b\n", "top level"),
])
def test_malformed_config_names_file_and_key(tmp_path: Path, text: str, key: str) -> None:
    f = tmp_path / "dbos-config.yaml"
    f.write_text(text)
    with pytest.raises(ValidationError) as err:
        dbos_config.read_binding(f)
    assert str(f) in str(err.value) and key in str(err.value)


def test_write_connection_round_trip_keeps_comments(tmp_path: Path) -> None:
    f = tmp_path / "dbos-config.yaml"
    f.write_text(OLD_LAYOUT)
    dbos_config.point_at(f, "127.0.0.1", 54400, "app_user", "shop_db")
    text = f.read_text()
    assert "# old layout" in text and "# keep me" in text and "name: shop" in text
    assert "54400" in text and "${PGPASSWORD}" in text
    assert dbos_config.read_binding(f).migrate == ["alembic upgrade head"]
    g = tmp_path / "new.yaml"
    g.write_text(NEW_LAYOUT)
    dbos_config.point_at(g, "127.0.0.1", 54400, "app_user", "shop_new")
    assert "postgresql://app_user:${PGPASSWORD}@127.0.0.1:54400/shop_new" in g.read_text()
    assert "# the app's database" in g.read_text() and "# new layout" in g.read_text()


def test_env_is_what_a_dbos_app_gets(admin: apps.Conn, shop: Path) -> None:
    apps.ensure_database(admin, "envdb")
    conn = admin.with_db("envdb")
    res = apps.run_commands(["sh -c 'echo $PGHOST $PGPORT $PGUSER $PGDATABASE ${DBOS_DATABASE_URL%%:*}'"],
                            conn, str(shop))
    assert res.output.split() == ["127.0.0.1", str(admin.port), "app_user", "envdb", "postgresql"]
    with psycopg.connect(conn.url) as c:
        c.execute("SELECT 1")
