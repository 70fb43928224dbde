"""``AppDatabase``: an app's database on an instance, its migrations, and change-database-instance."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from pulumi.dynamic import CheckFailure

from .. import dbos_config
from ..config.fields import fields_of, is_unknown
from ..errors import DbosError, ValidationError
from . import _base as b

if TYPE_CHECKING:
    from .. import apps


def _admin(props: b.Props) -> apps.Conn:
    from .. import apps  # psycopg, only when a database is touched

    if not props.get("instance_password") or not props.get("instance_host"):
        raise DbosError(
            f"app {props.get('app_name')!r}: the instance's credentials are not known",
            hint="bind apps to an instance resource whose password is known (for a RestoredInstance "
            "made from a name, pass password=...)")
    return apps.Conn(props["instance_host"], int(props["instance_port"]), props["instance_user"],
                     props["instance_password"])


class AppDatabaseProvider(b.BaseProvider):
    fields = fields_of("AppDatabase")
    healthy = None

    def defaults(self, inputs: b.Props) -> list[CheckFailure]:
        """Fill app_db_name/migrate/rollback/working_dir from the dbos-config.yaml (explicit inputs win)."""
        failures: list[CheckFailure] = []
        cfg_path = inputs.get("dbos_config")
        if cfg_path and not is_unknown(cfg_path):
            try:
                cfg = dbos_config.read_binding(cfg_path)
            except ValidationError as exc:
                failures += [CheckFailure(f, m) for f, m in exc.problems]
            else:
                for key in ("app_db_name", "migrate", "rollback"):
                    if inputs.get(key) is None:
                        inputs[key] = getattr(cfg, key)
                if inputs.get("working_dir") is None:
                    inputs["working_dir"] = str(Path(cfg_path).parent)
        if inputs.get("app_db_name") is None and not is_unknown(inputs.get("app_name")):
            inputs["app_db_name"] = inputs.get("app_name")
        for key in ("migrate", "rollback"):
            if inputs.get(key) is None:
                inputs[key] = []
        wd = inputs.get("working_dir")
        if wd and not is_unknown(wd) and not Path(str(wd)).is_dir():
            failures.append(CheckFailure("working_dir", f"working_dir {wd} does not exist or is not a directory"))
        return failures

    def _bind(self, props: b.Props, migrate: bool, owner_password: str | None) -> b.Props:
        """Ensure the database (and owner role) on the bound instance; run ``migrate`` when asked or when
        the database had to be created (a new or replaced instance)."""
        from .. import apps  # psycopg, only when a database is touched

        admin = _admin(props)
        dbname = props["app_db_name"]
        created = apps.ensure_database(admin, dbname)
        app_conn, owner_url = admin.with_db(dbname), None
        if props.get("owner_role"):
            owner = apps.ensure_owner_role(admin, props["app_name"], dbname, owner_password)
            owner_password, owner_url, app_conn = owner.password, owner.url, owner
        outs = self.outputs(props, hostname=admin.hostname, port=admin.port, username=admin.username,
                            database_url=admin.with_db(dbname).url, owner_database_url=owner_url,
                            owner_password=owner_password if props.get("owner_role") else None)
        if (migrate or created) and props.get("migrate"):
            ran = apps.run_commands(list(props["migrate"]), app_conn, props.get("working_dir"), "migrate")
            outs["migrated_at"] = ran.finished_at
            for line in ran.output.strip().splitlines()[-40:]:  # what the migration said (secrets masked)
                b.notice(f"{props['app_name']} migrate: {line}")
        return outs

    def do_create(self, props: b.Props) -> tuple[str, b.Props]:
        outs = self._bind(props, True, None)
        outs.setdefault("migrated_at", None)
        return props["app_name"], outs

    def do_update(self, olds: b.Props, news: b.Props) -> b.Props:
        from .. import apps  # psycopg, only when a database is touched

        # migrations run on an instance change (change-database-instance) or a changed list, never for a
        # password rotation or a port move of the same instance
        moved = olds.get("instance_name") != news.get("instance_name")
        outs = self._bind(news, moved or olds.get("migrate") != news.get("migrate"), olds.get("owner_password"))
        if outs.get("migrated_at") is None:
            outs["migrated_at"] = olds.get("migrated_at")
        if olds.get("owner_role") and not news.get("owner_role"):
            apps.release_owner_role(_admin(news), news["app_name"], news["app_db_name"])
        return outs

    def do_read(self, id_: str, props: b.Props) -> b.Props | None:
        from .. import apps  # psycopg, only when a database is touched

        try:
            exists = apps.database_exists(_admin(props), props["app_db_name"])
        except DbosError:
            return props  # instance unreachable: report what we know
        return props if exists else None

    def dropped_on_delete(self, props: b.Props) -> list[str]:
        db = props.get("app_db_name")
        return [db] if props.get("drop_on_delete") and db and not is_unknown(db) else []

    def do_delete(self, id_: str, props: b.Props) -> None:
        from .. import apps  # psycopg, only when a database is touched

        if not props.get("drop_on_delete") or not props.get("instance_password"):
            return  # like `dbos-cloud app delete` without --dropdb: the data stays
        admin = _admin(props)
        apps.drop_database(admin, props["app_db_name"])
        if props.get("owner_role"):
            apps.drop_owner_role(admin, props["app_name"])


class AppDatabase(b.BoundResource, module="dbos", name="AppDatabase"):
    """An app's database on an instance (DBOS's app ↔ database binding).

    Creates ``app_db_name`` (default: ``app_name``) on ``instance`` if missing and runs ``migrate``
    there with the DBOS app environment. Pointing ``instance`` elsewhere is an in-place update
    (``app change-database-instance``). ``dbos_config`` reads app_db_name/migrate/rollback from a
    dbos-config.yaml (explicit inputs win). Deleting drops nothing unless ``drop_on_delete=True``;
    ``owner_role=True`` adds a role owning only this database (``owner_database_url``).
    """

    fields = fields_of("AppDatabase")
    provider = AppDatabaseProvider
