"""Regression tests below Pulumi: an app's owner role can be ensured again (the update path)."""

from __future__ import annotations

import psycopg

from pulumi_dbos import apps
from pulumi_dbos.engine import LocalEngine

PW = "Owner-engine-pw1"
PW2 = "Owner-engine-pw2"


def test_owner_role_is_ensured_again_after_changes(engine: LocalEngine) -> None:
    """``ensure_owner_role`` on an existing owner role (what every AppDatabase update with
    ``owner_role=True`` does) works for the instance's non-superuser user, also after the instance's
    password was rotated (today: InsufficientPrivilege, must be superuser to alter superuser roles)."""
    info = engine.provision("own_db", "app_user", PW)
    try:
        admin = apps.Conn("127.0.0.1", info.port, "app_user", PW)
        apps.ensure_database(admin, "shop")
        owner = apps.ensure_owner_role(admin, "shop", "shop")
        with owner.connect(autocommit=True) as c:
            c.execute("CREATE TABLE kept (x int)")
            c.execute("INSERT INTO kept VALUES (1)")

        again = apps.ensure_owner_role(admin, "shop", "shop", owner.password)  # an update, nothing changed
        assert again.url == owner.url

        engine.reset_credentials("own_db", "app_user", PW2)  # the instance's password is rotated
        admin2 = apps.Conn("127.0.0.1", info.port, "app_user", PW2)
        owner2 = apps.ensure_owner_role(admin2, "shop", "shop", owner.password)
        with owner2.connect() as c:
            assert c.execute("SELECT current_user").fetchone() == ("shop_owner",)
            assert c.execute("SELECT x FROM kept").fetchone() == (1,)
        with psycopg.connect(admin2.with_db("shop").url) as c:  # the instance's user keeps access
            assert c.execute("SELECT 1").fetchone() == (1,)
    finally:
        # the tmp_root fixture cleans its root, not the engine's data dir under it: release the port claim here
        engine.destroy("own_db")
