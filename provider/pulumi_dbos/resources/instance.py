"""``DatabaseInstance``: a Postgres instance provisioned by the engine (``dbos-cloud db provision``)."""

from __future__ import annotations

from typing import Any

import pulumi
from pulumi.dynamic import CheckFailure, CheckResult, CreateResult, ReadResult, ResourceProvider, UpdateResult

from ..config import InstanceArgs, validate
from ..engine.base import InstanceInfo
from . import _common as c

INPUTS = ("instance_name", "username", "password", "retention_hours", "deletion_protection", "port", "adopt",
          "owner", *c.ENGINE_KEYS)
REPLACE = ("instance_name", "username", *c.ENGINE_KEYS)
DIFFED = ("instance_name", "username", "password", "retention_hours", "deletion_protection", "port",
          *c.ENGINE_KEYS)
SECRET_OUTPUTS = ["password", "database_url"]


def instance_outputs(props: dict[str, Any], info: InstanceInfo, password: str | None) -> dict[str, Any]:
    outs = {k: props.get(k) for k in props if not k.startswith("__")}
    outs.update(
        status=info.status, hostname=info.hostname, port=info.port, username=info.username,
        is_linked=info.is_linked, earliest_restorable_time=info.earliest_restorable_time,
        latest_restorable_time=info.latest_restorable_time,
        database_url=c.database_url(info.username, password, info.hostname, info.port) if password else None,
    )
    return outs


def port_failures(olds: dict[str, Any], news: dict[str, Any]) -> list[CheckFailure]:
    port, name = news.get("port"), news.get("instance_name")
    if port is None or c.is_unknown(port) or c.is_unknown(name) or (olds and olds.get("port") == port):
        return []
    if isinstance(port, float) and port.is_integer():
        port = int(port)  # numbers cross the Pulumi wire as floats
    if not isinstance(port, int):
        return []
    try:
        problem = c.engine_for(news).port_problem(port, str(name))
    except Exception:  # noqa: BLE001 - engine problems are reported by the data_dir check
        return []
    return [CheckFailure("port", problem)] if problem else []


def exists_failures(olds: dict[str, Any], news: dict[str, Any], adopt: bool = False) -> list[CheckFailure]:
    name = news.get("instance_name")
    if adopt or c.is_unknown(name) or not name or (olds and olds.get("instance_name") == name
                                                    and olds.get("data_dir") == news.get("data_dir")):
        return []
    try:
        eng = c.engine_for(news)
        exists = eng.data_dir.joinpath("catalog.db").exists() and eng.exists(str(name))
        # our own instance (a replace re-checks with no olds): not a conflict
        ours = exists and news.get("owner") is not None and eng.owner(str(name)) == news.get("owner")
    except Exception:  # noqa: BLE001
        return []
    if exists and not ours:
        return [CheckFailure("instance_name", f"an instance named {name!r} already exists in {eng.data_dir}; "
                             "choose another instance_name, or set adopt=True to take it over")]
    return []


class DatabaseInstanceProvider(ResourceProvider):
    def check(self, olds: dict[str, Any], news: dict[str, Any]) -> CheckResult:
        inputs = {k: news.get(k) for k in news}
        inputs.setdefault("retention_hours", 24)
        inputs.setdefault("deletion_protection", False)
        inputs.setdefault("adopt", False)
        values = {k: v for k, v in inputs.items() if k in INPUTS and v is not None}
        failures = [CheckFailure(f, r) for f, r in validate(InstanceArgs, values)]
        failures += c.check_engine(inputs)
        if not failures:
            failures += c.protection_failure(olds, inputs, REPLACE)
            failures += exists_failures(olds, inputs, bool(inputs.get("adopt")))
            failures += port_failures(olds, inputs)
        return c.check_result(inputs, failures)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> Any:
        return c.make_diff(olds, news, DIFFED, REPLACE)

    def create(self, props: dict[str, Any]) -> CreateResult:
        eng = c.engine_for(props)
        name = props["instance_name"]
        # a retried create (e.g. after `pulumi up` was killed) takes over its own finished instance
        retried = eng.data_dir.joinpath("catalog.db").exists() and eng.settle_retry(name, props.get("owner"))
        if (props.get("adopt") and eng.exists(name)) or retried:
            eng.adopt(name)
            info = eng.reset_credentials(name, props["username"], props["password"])
            if props.get("retention_hours"):
                info = eng.set_retention(name, int(props["retention_hours"]))
        else:
            info = eng.provision(name, props["username"], props["password"], port=c.as_int(props.get("port")),
                                 retention_hours=int(props.get("retention_hours") or 24), owner=props.get("owner"))
        return CreateResult(name, instance_outputs(props, info, props["password"]))

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        info = c.engine_for(props).info(props.get("instance_name") or id_)
        if info is None:
            return ReadResult("", {})  # deleted out of band: drop it from the state
        return ReadResult(id_, instance_outputs(props, info, props.get("password")))

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        eng = c.engine_for(news)
        name = news["instance_name"]
        eng.start(name)
        if news.get("port") is not None and news.get("port") != olds.get("port"):
            eng.change_port(name, int(news["port"]))
        if news.get("password") != olds.get("password"):
            eng.reset_credentials(name, news["username"], news["password"])
        if news.get("retention_hours") != olds.get("retention_hours"):
            eng.set_retention(name, int(news.get("retention_hours") or 24))
        info = eng.info(name)
        if info is None:
            raise c.DbosError(f"instance {name!r} disappeared during the update",
                              hint="run `pulumi refresh`, then `pulumi up` to recreate it")
        return UpdateResult(instance_outputs(news, info, news["password"]))

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        if props.get("deletion_protection"):
            raise c.protected_delete_error(props.get("instance_name") or _id)
        c.engine_for(props).destroy(props.get("instance_name") or _id)


class DatabaseInstance(pulumi.dynamic.Resource, module="dbos", name="DatabaseInstance"):
    """A real PostgreSQL instance (``dbos-cloud db provision``).

    Password changes reset the password in place; ``retention_hours``,
    ``deletion_protection`` and ``port`` update in place; ``instance_name`` and
    ``username`` replace the instance. ``adopt=True`` takes over an existing
    instance of the same name (dynamic resources cannot ``pulumi import``).
    """

    instance_name: pulumi.Output[str]
    username: pulumi.Output[str]
    status: pulumi.Output[str]
    hostname: pulumi.Output[str]
    port: pulumi.Output[int]
    database_url: pulumi.Output[str]
    is_linked: pulumi.Output[bool]
    earliest_restorable_time: pulumi.Output[str]
    latest_restorable_time: pulumi.Output[str]

    def __init__(
        self,
        resource_name: str,
        *,
        username: pulumi.Input[str],
        password: pulumi.Input[str],
        instance_name: pulumi.Input[str] | None = None,
        retention_hours: pulumi.Input[int] = 24,
        deletion_protection: pulumi.Input[bool] = False,
        port: pulumi.Input[int] | None = None,
        adopt: pulumi.Input[bool] = False,
        engine: str | None = None,
        data_dir: str | None = None,
        run_as: str | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        props: dict[str, Any] = dict(
            instance_name=instance_name or resource_name, username=username, password=pulumi.Output.secret(password),
            retention_hours=retention_hours, deletion_protection=deletion_protection, port=port, adopt=adopt,
            **c.engine_defaults(engine, data_dir, run_as), owner=c.owner(resource_name),
            status=None, hostname=None, database_url=None, is_linked=None,
            earliest_restorable_time=None, latest_restorable_time=None,
        )
        opts = pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(additional_secret_outputs=SECRET_OUTPUTS))
        super().__init__(DatabaseInstanceProvider(), resource_name, props, opts)
