"""``App``: a DBOS app deployed and running on an instance (``dbos-cloud app deploy``).

Each distinct content of ``source`` is an immutable version whose id is computed at preview (so
``pulumi preview`` shows ``version: OLD -> NEW`` for a code change and nothing for an unchanged
directory). An ``instance`` change is ``app change-database-instance``; ``previous_version``
is ``--previous-version``: both in one ``pulumi up`` are DBOS's recovery step after a restore.
"""

from __future__ import annotations

from pathlib import Path

from pulumi.dynamic import CheckFailure

from ..appsource import pack
from ..config.fields import fields_of, is_unknown
from ..dbos_config import read_app
from ..engine import AppDatabaseAccess, AppDeploy, AppInfo, AppStatus
from ..engine.contract import whose_app
from ..engine.urls import url_for
from ..errors import DbosError, ValidationError
from . import _base as b
from .app_database import _admin

#: inputs whose change needs no redeploy: the bound instance's password (the instance's own update carries it
#: to the running app) and what only a delete reads (``drop_on_delete``)
CARRIED = frozenset({"instance_password", "drop_on_delete"})


class AppProvider(b.BaseProvider):
    fields = fields_of("App")
    healthy = AppStatus.AVAILABLE.value

    def defaults(self, inputs: b.Props) -> list[CheckFailure]:
        """Check the source directory, default app_db_name from it, and compute the version to deploy."""
        src, name, prev = inputs.get("source"), inputs.get("app_name"), inputs.get("previous_version")
        if not src or is_unknown(src):
            return []
        try:
            cfg = read_app(Path(src), None if is_unknown(name) else name)
        except ValidationError as exc:
            return [CheckFailure(f, m) for f, m in exc.problems]
        if inputs.get("app_db_name") is None and not is_unknown(name):
            inputs["app_db_name"] = cfg.app_db_name or name
        inputs["version"] = prev if prev and not is_unknown(prev) else pack(Path(src))[0]
        return []

    def extra_checks(self, olds: b.Props, news: b.Props) -> list[CheckFailure]:
        prev, port, name = news.get("previous_version"), news.get("port"), str(news.get("app_name"))
        try:
            eng = b.engine_for(news)
            problems = eng.apps.preflight(
                name, port=None if port is None or is_unknown(port) else b.as_int(port),
                version=None if not prev or is_unknown(prev) else str(prev), owner=news.get("owner"),
                creating=not olds, adopt=bool(news.get("adopt")))
            if news.get("adopt") and not olds and not problems:
                self._adopt_notice(eng.apps.info(name), news)
        except DbosError as exc:
            return [CheckFailure("data_dir", exc.message)]
        return [CheckFailure(p.field, p.message) for p in problems]

    @staticmethod
    def _adopt_notice(info: AppInfo | None, news: b.Props) -> None:
        """An adopt that takes over an app this stack does not manage says so at preview (and which version
        `up` deploys over which)."""
        if info is None or (info.owner is not None and info.owner == news.get("owner")):
            return
        version = news.get("version")
        new = f"version {version}" if version and not is_unknown(version) else "a new version"
        b.notice(f"app {info.name!r} exists ({whose_app(info.owner)}) and will be adopted (adopt=True): `pulumi up` "
                 f"makes this stack its manager and deploys {new} of it over the running one "
                 f"(version {info.version or 'none'}){AppProvider._adopt_move(info, news)}; `pulumi destroy` then "
                 "deletes it")

    @staticmethod
    def _adopt_move(info: AppInfo, news: b.Props) -> str:
        """What an adopt bound to another instance than the running app's does to its data (change-database-
        instance: the app's database there, empty unless that instance already holds it; nothing is copied)."""
        target, db = news.get("instance_name"), news.get("app_db_name") or info.app_db_name
        if not info.instance_name or target == info.instance_name:
            return ""
        where = f"instance {target!r}" if target and not is_unknown(target) else "the instance made in this update"
        return (f", and moves it from instance {info.instance_name!r} to {where} (change-database-instance) onto an "
                f"empty database {db!r} unless that instance already holds one (a restore does): nothing is copied, "
                f"the app's rows stay on {info.instance_name!r}")

    @staticmethod
    def _version(props: b.Props, info: AppInfo, server_version: str | None) -> str | None:
        """The deployed version in the inputs' terms. DBOS Cloud numbers each deploy itself: the number this
        stack's deploy got (``server_version``) stands for the version it deployed (content id or
        ``previous_version``); another number (a deploy made elsewhere) is reported as it is, a change."""
        if server_version is not None and info.version == server_version and props.get("version"):
            return str(props["version"])
        return info.version

    def _outs(self, props: b.Props, info: AppInfo, server_version: str | None = None) -> b.Props:
        host, port, user = props["instance_host"], int(props["instance_port"]), props["instance_user"]
        password = props.get("instance_password")
        return self.outputs(
            props, version=self._version(props, info, server_version), server_version=server_version,
            status=info.status, app_url=info.app_url, port=props.get("port"),
            versions=[{"version": v.version, "created_at": v.created_at} for v in info.versions],
            database_url=url_for(user, password, host, port, info.app_db_name),
            system_database_url=url_for(user, password, host, port, f"{info.app_db_name}_dbos_sys"))

    def _deploy(self, props: b.Props) -> b.Props:
        prev = props.get("previous_version")
        version, archive = (str(prev), None) if prev else pack(Path(props["source"]))
        if not props.get("instance_password"):
            raise DbosError(f"app {props['app_name']!r}: the password of instance {props.get('instance_name')!r} "
                            "is not known", hint="bind the app to an instance resource whose password is known "
                            "(a RestoredInstance made from a source name takes password=...)")
        info = b.engine_for(props).apps.deploy(AppDeploy(
            app_name=props["app_name"], version=version, archive=archive,
            database=AppDatabaseAccess(props["instance_name"], props["instance_host"], int(props["instance_port"]),
                                       props["instance_user"], props["instance_password"]),
            app_db_name=props["app_db_name"], env=dict(props.get("env") or {}), port=b.as_int(props.get("port")),
            owner=props.get("owner")))
        return self._outs(props, info, info.version)

    def do_create(self, props: b.Props) -> tuple[str, b.Props]:
        return props["app_name"], self._deploy(props)

    def do_update(self, olds: b.Props, news: b.Props) -> b.Props:
        return self._carried(olds, news) or self._deploy(news)

    def _carried(self, olds: b.Props, news: b.Props) -> b.Props | None:
        """A rotation of the bound instance's password is no redeploy: the instance's own update carried it
        to the running app (the engine rewrote the app's password file in the same step as the reset; DBOS
        Cloud holds its apps' credentials itself), so this update only records the new value; nor is a change
        of ``drop_on_delete`` (read by a delete only). Not for a linked instance (its password changed on its
        own server) nor an app that is not serving."""
        changed = {k for k in self.fields.diff_keys if olds.get(k) != news.get(k)}
        if not changed or not changed <= CARRIED or olds.get("status") != self.healthy:
            return None
        eng = b.engine_for(news)
        inst = eng.info(str(news["instance_name"]))
        if inst is None or (inst.is_linked and "instance_password" in changed):
            return None
        info = eng.apps.info(str(news["app_name"]))
        server_version = olds.get("server_version")
        if info is None or info.status != self.healthy or info.instance_name != news["instance_name"] \
                or self._version(news, info, server_version) != news.get("version"):
            return None
        return self._outs(news, info, server_version)

    def do_read(self, id_: str, props: b.Props) -> b.Props | None:
        info = b.engine_for(props).apps.info(props.get("app_name") or id_)
        return self._outs(props, info, props.get("server_version")) if info else None

    def dropped_on_delete(self, props: b.Props) -> list[str]:
        db = props.get("app_db_name")
        return [db, f"{db}_dbos_sys"] if props.get("drop_on_delete") and db and not is_unknown(db) else []

    def do_delete(self, id_: str, props: b.Props) -> None:
        from .. import apps  # psycopg, only when a database is touched

        b.engine_for(props).apps.delete(props.get("app_name") or id_)
        if props.get("instance_password"):  # `app delete --dropdb`
            admin = _admin(props)
            for db in self.dropped_on_delete(props):
                apps.drop_database(admin, db)


class App(b.BoundResource, module="dbos", name="App"):
    """A DBOS app deployed and running, bound to an instance (``dbos-cloud app deploy``)."""

    fields = fields_of("App")
    provider = AppProvider
