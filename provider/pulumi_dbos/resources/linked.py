"""``LinkedInstance``: register an existing Postgres server (``dbos-cloud db link``); destroy only unlinks."""

from __future__ import annotations

from typing import Any

import pulumi
from pulumi.dynamic import CheckFailure, CheckResult, CreateResult, ReadResult, ResourceProvider, UpdateResult

from ..config import LinkedArgs, validate
from ..engine.local import verify_connection
from . import _common as c

INPUTS = ("instance_name", "hostname", "port", "username", "password", "owner", *c.ENGINE_KEYS)
REPLACE = ("instance_name", *c.ENGINE_KEYS)
DIFFED = ("instance_name", "hostname", "port", "username", "password", *c.ENGINE_KEYS)


def _outs(props: dict[str, Any], status: str) -> dict[str, Any]:
    outs = {k: v for k, v in props.items() if not k.startswith("__")}
    outs.update(status=status, is_linked=True,
                database_url=c.database_url(props["username"], props["password"], props["hostname"],
                                            int(props["port"])))
    return outs


class LinkedInstanceProvider(ResourceProvider):
    def check(self, olds: dict[str, Any], news: dict[str, Any]) -> CheckResult:
        inputs = dict(news)
        inputs.setdefault("port", 5432)
        values = {k: v for k, v in inputs.items() if k in INPUTS and v is not None}
        failures = [CheckFailure(f, r) for f, r in validate(LinkedArgs, values)]
        failures += c.check_engine(inputs)
        return c.check_result(inputs, failures)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> Any:
        changes, replaces = c.diff_inputs(olds, news, DIFFED, REPLACE)
        from pulumi.dynamic import DiffResult

        return DiffResult(changes=bool(changes), replaces=replaces, stables=[], delete_before_replace=True)

    def create(self, props: dict[str, Any]) -> CreateResult:
        c.engine_for(props).link(props["instance_name"], props["hostname"], int(props["port"]),
                                 props["username"], props["password"], owner=props.get("owner"))
        return CreateResult(props["instance_name"], _outs(props, "available"))

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        info = c.engine_for(props).linked_status(props.get("instance_name") or id_, props.get("password") or "")
        if info is None:
            return ReadResult("", {})
        return ReadResult(id_, _outs(props, info.status))

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        # The password is reset on the server by its owner; we only verify the new one works and store it.
        verify_connection(news["hostname"], int(news["port"]), news["username"], news["password"])
        c.engine_for(news).link(news["instance_name"], news["hostname"], int(news["port"]), news["username"],
                                news["password"], owner=news.get("owner"))
        return UpdateResult(_outs(news, "available"))

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        c.engine_for(props).unlink(props.get("instance_name") or _id)  # never touches the external server


class LinkedInstance(pulumi.dynamic.Resource, module="dbos", name="LinkedInstance"):
    """An existing Postgres server, registered (create verifies it connects); destroy only unlinks."""

    instance_name: pulumi.Output[str]
    status: pulumi.Output[str]
    hostname: pulumi.Output[str]
    port: pulumi.Output[int]
    username: pulumi.Output[str]
    database_url: pulumi.Output[str]
    is_linked: pulumi.Output[bool]

    def __init__(
        self,
        resource_name: str,
        *,
        hostname: pulumi.Input[str],
        username: pulumi.Input[str],
        password: pulumi.Input[str],
        port: pulumi.Input[int] = 5432,
        instance_name: pulumi.Input[str] | None = None,
        engine: str | None = None,
        data_dir: str | None = None,
        run_as: str | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        props: dict[str, Any] = dict(
            instance_name=instance_name or resource_name, hostname=hostname, port=port, username=username,
            password=pulumi.Output.secret(password), **c.engine_defaults(engine, data_dir, run_as),
            owner=c.owner(resource_name), status=None, database_url=None, is_linked=None,
            earliest_restorable_time=None, latest_restorable_time=None,
        )
        opts = pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(
            additional_secret_outputs=["password", "database_url"]))
        super().__init__(LinkedInstanceProvider(), resource_name, props, opts)
