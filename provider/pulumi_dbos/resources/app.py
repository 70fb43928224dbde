"""``AppDatabase``: an app's database on an instance, its migrations, and change-database-instance."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pulumi
from pulumi.dynamic import (
    CheckFailure,
    CheckResult,
    CreateResult,
    DiffResult,
    ReadResult,
    ResourceProvider,
    UpdateResult,
)

from .. import apps
from ..config import check_app_name, check_db_name
from ..errors import DbosError, ValidationError
from . import _common as c

REPLACE = ("app_name", "app_db_name")
DIFFED = ("app_name", "app_db_name", "instance_name", "admin_url", "migrate", "rollback", "working_dir",
          "dbos_config", "app_version", "drop_on_delete", "owner_role")
SECRET_OUTPUTS = ["admin_url", "database_url", "owner_database_url", "owner_password"]


def _rule(fn: Any, value: Any, field: str) -> list[CheckFailure]:
    try:
        fn(value)
    except ValueError as exc:
        return [CheckFailure(field, str(exc))]
    return []


class AppDatabaseProvider(ResourceProvider):
    def check(self, olds: dict[str, Any], news: dict[str, Any]) -> CheckResult:
        inputs = dict(news)
        failures: list[CheckFailure] = []
        failures += _rule(check_app_name, inputs.get("app_name"), "app_name")
        cfg_path = inputs.get("dbos_config")
        if cfg_path and not c.is_unknown(cfg_path):
            try:
                cfg = apps.read_dbos_config(cfg_path)
            except ValidationError as exc:
                failures += [CheckFailure(f, m) for f, m in exc.problems]
            else:
                # explicit inputs win over the file
                if inputs.get("app_db_name") is None:
                    inputs["app_db_name"] = cfg.app_db_name
                for key in ("migrate", "rollback"):
                    if inputs.get(key) is None:
                        inputs[key] = getattr(cfg, key)
                if inputs.get("working_dir") is None:
                    inputs["working_dir"] = str(Path(cfg_path).parent)
        if inputs.get("app_db_name") is None and not c.is_unknown(inputs.get("app_name")):
            inputs["app_db_name"] = inputs.get("app_name")
        failures += _rule(check_db_name, inputs.get("app_db_name"), "app_db_name")
        for key in ("migrate", "rollback"):
            v = inputs.get(key)
            if v is None:
                inputs[key] = []
            elif not c.is_unknown(v) and (not isinstance(v, list) or
                                          not all(isinstance(x, str) and not c.is_unknown(x) or c.is_unknown(x)
                                                  for x in v)):
                failures.append(CheckFailure(key, f"{key} must be a list of command strings"))
        wd = inputs.get("working_dir")
        if wd and not c.is_unknown(wd) and not Path(str(wd)).is_dir():
            failures.append(CheckFailure("working_dir", f"working_dir {wd} does not exist or is not a directory"))
        inputs.setdefault("drop_on_delete", False)
        inputs.setdefault("owner_role", False)
        return c.check_result(inputs, failures)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        changes, replaces = c.diff_inputs(olds, news, DIFFED, REPLACE)
        return DiffResult(changes=bool(changes), replaces=replaces, stables=[], delete_before_replace=True)

    # ------------------------------------------------------------------ helpers
    def _bind(self, props: dict[str, Any], run_migrate: bool, owner_password: str | None) -> dict[str, Any]:
        if not props.get("admin_url"):
            raise DbosError(
                f"app {props.get('app_name')!r}: the instance's credentials are not known",
                hint="bind apps to an instance resource whose password is known (for a RestoredInstance "
                "made from a name, pass password=...)")
        admin = apps.Conn.from_url(props["admin_url"])
        dbname = props["app_db_name"]
        apps.ensure_database(admin, dbname)
        app_conn = admin.with_db(dbname)
        owner_url = None
        if props.get("owner_role"):
            owner = apps.ensure_owner_role(admin, props["app_name"], dbname, owner_password)
            owner_password, owner_url = owner.password, owner.url
            app_conn = owner
        outs = {k: v for k, v in props.items() if not k.startswith("__")}
        outs.update(hostname=admin.hostname, port=admin.port, username=admin.username,
                    database_url=admin.with_db(dbname).url, owner_database_url=owner_url,
                    owner_password=owner_password if props.get("owner_role") else None)
        if run_migrate and props.get("migrate"):
            res = apps.run_commands(list(props["migrate"]), app_conn, props.get("working_dir"), "migrate")
            outs["migrated_at"] = res.finished_at
        return outs

    # ------------------------------------------------------------------ CRUD
    def create(self, props: dict[str, Any]) -> CreateResult:
        outs = self._bind(props, True, None)
        outs.setdefault("migrated_at", None)
        return CreateResult(f"{props['app_name']}", outs)

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        moved = olds.get("instance_name") != news.get("instance_name") or olds.get("admin_url") != news.get("admin_url")
        run_migrate = moved or olds.get("migrate") != news.get("migrate")
        outs = self._bind(news, run_migrate, olds.get("owner_password"))
        if "migrated_at" not in outs or not run_migrate:
            outs["migrated_at"] = olds.get("migrated_at")
        if olds.get("owner_role") and not news.get("owner_role") and olds.get("admin_url"):
            # owner role turned off: give the database back to the instance's user, drop the role
            admin = apps.Conn.from_url(news["admin_url"])
            from psycopg import sql

            with admin.connect(autocommit=True) as conn:
                conn.execute(sql.SQL("ALTER DATABASE {} OWNER TO {}").format(
                    sql.Identifier(news["app_db_name"]), sql.Identifier(admin.username)))
            with admin.with_db(news["app_db_name"]).connect(autocommit=True) as conn:
                conn.execute(sql.SQL("REASSIGN OWNED BY {} TO {}").format(
                    sql.Identifier(apps.owner_role_name(news["app_name"])), sql.Identifier(admin.username)))
            apps.drop_owner_role(admin, news["app_name"])
        return UpdateResult(outs)

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        if not props.get("admin_url"):
            return ReadResult(id_, props)
        try:
            exists = apps.database_exists(apps.Conn.from_url(props["admin_url"]), props["app_db_name"])
        except DbosError:
            return ReadResult(id_, props)  # instance unreachable: report what we know
        return ReadResult(id_ if exists else "", props if exists else {})

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        if not props.get("drop_on_delete") or not props.get("admin_url"):
            return  # like `dbos-cloud app delete` without --dropdb: the data stays
        admin = apps.Conn.from_url(props["admin_url"])
        apps.drop_database(admin, props["app_db_name"])
        if props.get("owner_role"):
            apps.drop_owner_role(admin, props["app_name"])


class AppDatabase(pulumi.dynamic.Resource, module="dbos", name="AppDatabase"):
    """An app's database on an instance (DBOS's app ↔ database binding).

    Creates ``app_db_name`` (default: ``app_name``) on ``instance`` if missing and runs ``migrate``
    there with the DBOS app environment. Pointing ``instance`` elsewhere is an in-place update
    (``app change-database-instance``). ``dbos_config`` reads app_db_name/migrate/rollback from a
    dbos-config.yaml (explicit inputs win). Deleting drops nothing unless ``drop_on_delete=True``;
    ``owner_role=True`` adds a role owning only this database (``owner_database_url``).
    """

    app_name: pulumi.Output[str]
    instance_name: pulumi.Output[str]
    hostname: pulumi.Output[str]
    port: pulumi.Output[int]
    username: pulumi.Output[str]
    app_db_name: pulumi.Output[str]
    database_url: pulumi.Output[str]
    owner_database_url: pulumi.Output[str]
    migrated_at: pulumi.Output[str]
    rollback: pulumi.Output[list[str]]
    working_dir: pulumi.Output[str]

    def __init__(
        self,
        resource_name: str,
        *,
        instance: Any,
        app_name: pulumi.Input[str] | None = None,
        app_db_name: pulumi.Input[str] | None = None,
        migrate: pulumi.Input[list[str]] | None = None,
        rollback: pulumi.Input[list[str]] | None = None,
        working_dir: str | None = None,
        dbos_config: str | None = None,
        app_version: pulumi.Input[str] | None = None,
        drop_on_delete: pulumi.Input[bool] = False,
        owner_role: pulumi.Input[bool] = False,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        if not isinstance(instance, pulumi.Resource):
            raise DbosError("AppDatabase.instance must be an instance resource "
                            "(DatabaseInstance, RestoredInstance or LinkedInstance)")
        props: dict[str, Any] = dict(
            app_name=app_name or resource_name,
            instance_name=instance.instance_name,  # type: ignore[attr-defined]
            admin_url=pulumi.Output.secret(instance.database_url),  # type: ignore[attr-defined]
            app_db_name=app_db_name, migrate=migrate, rollback=rollback,
            working_dir=os.path.abspath(working_dir) if working_dir else None,
            dbos_config=os.path.abspath(dbos_config) if dbos_config else None,
            app_version=app_version, drop_on_delete=drop_on_delete, owner_role=owner_role,
            hostname=None, port=None, username=None, database_url=None, owner_database_url=None,
            owner_password=None, migrated_at=None,
        )
        opts = pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(additional_secret_outputs=SECRET_OUTPUTS))
        super().__init__(AppDatabaseProvider(), resource_name, props, opts)
