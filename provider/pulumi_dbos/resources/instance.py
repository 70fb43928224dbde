"""``DatabaseInstance``: a Postgres instance provisioned by the engine (``dbos-cloud db provision``)."""

from __future__ import annotations

from typing import Any

from ..config.fields import fields_of
from ..engine import Engine, InstanceInfo, Kind
from ..engine.contract import STATUS_CREDENTIALS_INVALID
from . import _base as b


def instance_outputs(provider: b.BaseProvider, props: b.Props, info: InstanceInfo, password: str | None,
                     **extra: Any) -> b.Props:
    return provider.outputs(
        props, status=info.status, hostname=info.hostname, port=info.port, username=info.username,
        is_linked=info.is_linked, earliest_restorable_time=info.earliest_restorable_time,
        latest_restorable_time=info.latest_restorable_time, kept_after_destroy_hours=info.kept_after_destroy_hours,
        database_url=b.database_url(info.username, password, info.hostname, info.port), **ha_outputs(info), **extra)


def ha_outputs(info: InstanceInfo) -> dict[str, Any]:
    """The members of a high-availability instance (all None for a single server)."""
    return {"members": info.members, "leader": info.leader, "sync_standby": info.sync_standby,
            "timeline": info.timeline}


def ha_as_asked(eng: Engine, name: str, props: b.Props, info: InstanceInfo) -> InstanceInfo:
    """After a create (provision, restore, takeover): high availability turned on when asked (the engine's
    ``set_high_availability``: standbys cloned from the new server), as an update would."""
    if bool(props.get("high_availability")) != info.high_availability:
        return eng.set_high_availability(name, bool(props.get("high_availability")))
    return info


def read_instance(eng: Engine, name: str, password: str | None) -> InstanceInfo | None:
    """The instance as it is now; a running one whose password no longer authenticates is reported so."""
    info = eng.info(name)
    if info is not None and info.status == "available" and password \
            and not eng.check_credentials(name, info.username, password):
        info.status = STATUS_CREDENTIALS_INVALID
    return info


def update_instance(eng: Engine, olds: b.Props, news: b.Props, password: str | None) -> InstanceInfo:
    """In place: start it, move its port, reset a changed (or drifted) password, change retention."""
    name = news["instance_name"]
    info = eng.ensure_running(name)
    if news.get("port") is not None and b.as_int(news["port"]) != info.port:
        eng.set_port(name, int(news["port"]))
    if password and (password != olds.get("password") or olds.get("status") == STATUS_CREDENTIALS_INVALID
                     or not eng.check_credentials(name, info.username, password)):
        eng.reset_credentials(name, info.username, password)
    if news.get("retention_hours") and b.as_int(news["retention_hours"]) != info.retention_hours:
        eng.set_retention(name, int(news["retention_hours"]))
    if "high_availability" in news and bool(news.get("high_availability")) != info.high_availability:
        eng.set_high_availability(name, bool(news.get("high_availability")))  # standbys added or removed
    return eng.ensure_running(name)


def delete_instance(props: b.Props, id_: str) -> None:
    name = props.get("instance_name") or id_
    if props.get("deletion_protection"):  # second guard: Pulumi's `protect` refuses first
        raise b.protected_delete_error(name)
    b.engine_for(props).destroy(name)


class DatabaseInstanceProvider(b.BaseProvider):
    fields = fields_of("DatabaseInstance")
    kind = Kind.PROVISIONED

    def do_create(self, props: b.Props) -> tuple[str, b.Props]:
        eng = b.engine_for(props)
        name = props["instance_name"]
        # a retried create (e.g. after `pulumi up` was killed) takes over its own finished instance;
        # adopt=True takes over any instance of that name
        info = eng.takeover(name, props.get("owner"), adopt=bool(props.get("adopt")))
        if info is not None:
            eng.reset_credentials(name, props["username"], props["password"])
            info = eng.set_retention(name, int(props.get("retention_hours") or 24))
        else:
            info = eng.provision(name, props["username"], props["password"], port=b.as_int(props.get("port")),
                                 retention_hours=int(props.get("retention_hours") or 24), owner=props.get("owner"))
        return name, instance_outputs(self, props, ha_as_asked(eng, name, props, info), props["password"])

    def do_read(self, id_: str, props: b.Props) -> b.Props | None:
        info = read_instance(b.engine_for(props), props.get("instance_name") or id_, props.get("password"))
        # the newest drill comes with the instance (one list answer on dbos-cloud: no call per instance)
        return instance_outputs(self, props, info, props.get("password"), last_drill=info.last_drill) \
            if info else None

    def do_update(self, olds: b.Props, news: b.Props) -> b.Props:
        info = update_instance(b.engine_for(news), olds, news, news["password"])
        return instance_outputs(self, news, info, news["password"], last_drill=olds.get("last_drill"))

    def do_delete(self, id_: str, props: b.Props) -> None:
        delete_instance(props, id_)


class DatabaseInstance(b.DbosResource, module="dbos", name="DatabaseInstance"):
    """A real PostgreSQL instance (``dbos-cloud db provision``).

    Password changes reset the password in place; ``retention_hours``, ``deletion_protection`` and
    ``port`` update in place; ``instance_name`` and ``username`` replace the instance.
    ``deletion_protection=True`` also sets Pulumi's ``protect``. ``adopt=True`` takes over an
    existing instance of the same name (dynamic resources cannot ``pulumi import``).
    """

    fields = fields_of("DatabaseInstance")
    provider = DatabaseInstanceProvider
