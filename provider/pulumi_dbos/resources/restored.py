"""``RestoredInstance``: point-in-time restore of an instance into a new one (``dbos-cloud db restore``)."""

from __future__ import annotations

from typing import Any

import pulumi
from pulumi.dynamic import CheckFailure, CheckResult, CreateResult, ReadResult, ResourceProvider, UpdateResult

from ..config import RestoreArgs, validate
from ..timeutil import parse_rfc3339, to_rfc3339, utcnow
from . import _common as c
from .instance import exists_failures, instance_outputs, port_failures

INPUTS = ("instance_name", "source", "restore_time", "deletion_protection", "port", "retention_hours", "owner",
          *c.ENGINE_KEYS)
REPLACE = ("instance_name", "source", "restore_time", *c.ENGINE_KEYS)
DIFFED = ("instance_name", "source", "restore_time", "deletion_protection", "port", "retention_hours",
          "password", *c.ENGINE_KEYS)


def window_failures(olds: dict[str, Any], news: dict[str, Any]) -> list[CheckFailure]:
    """Restore-time rules that need the engine: linked source, window, future. Creates nothing."""
    src, when = news.get("source"), news.get("restore_time")
    if c.is_unknown(src) or c.is_unknown(when) or not src or not when:
        return []
    if olds and olds.get("source") == src and olds.get("restore_time") == when:
        return []
    if when != "latest":
        target = parse_rfc3339(str(when))
        if target > utcnow():
            return [CheckFailure("restore_time", f"restore_time {when} is in the future (now is {to_rfc3339(utcnow())})")]
    try:
        eng = c.engine_for(news)
        row = eng.catalog.get(str(src)) if eng.data_dir.joinpath("catalog.db").exists() else None
    except Exception:  # noqa: BLE001
        return []
    if row is None:
        return []  # created in this same update: checked when the restore runs
    if row["kind"] == "linked":
        return [CheckFailure("source", f"{src!r} is a linked instance: point-in-time restore needs an instance "
                             "whose WAL this engine archives")]
    if when == "latest":
        return []
    try:
        earliest, latest = eng.restore_window(str(src))
    except c.DbosError as exc:
        return [CheckFailure("source", exc.message)]
    if not earliest <= target <= latest:
        return [CheckFailure("restore_time", f"restore_time {when} is outside {src!r}'s restorable window "
                             f"[{to_rfc3339(earliest)}, {to_rfc3339(latest)}]")]
    return []


class RestoredInstanceProvider(ResourceProvider):
    def check(self, olds: dict[str, Any], news: dict[str, Any]) -> CheckResult:
        inputs = dict(news)
        inputs.setdefault("deletion_protection", False)
        values = {k: v for k, v in inputs.items() if k in INPUTS and v is not None}
        failures = [CheckFailure(f, r) for f, r in validate(RestoreArgs, values)]
        failures += c.check_engine(inputs)
        if not failures:
            failures += c.protection_failure(olds, inputs, REPLACE)
            failures += exists_failures(olds, inputs)
            failures += port_failures(olds, inputs)
            failures += window_failures(olds, inputs)
        return c.check_result(inputs, failures)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> Any:
        # A restore is independent of its source's lifecycle (like DBOS Cloud's): when the source is
        # itself being replaced, `source` is unknown here, and that alone must not replace the restore.
        known_replace = tuple(k for k in REPLACE if not c.is_unknown(news.get(k)))
        return c.make_diff(olds, news, DIFFED, known_replace)

    def _outs(self, props: dict[str, Any], info: Any) -> dict[str, Any]:
        outs = instance_outputs(props, info, props.get("password"))
        outs.update(source_instance=info.source_instance, restored_to=info.restored_to, username=info.username)
        return outs

    def create(self, props: dict[str, Any]) -> CreateResult:
        eng = c.engine_for(props)
        if eng.settle_retry(props["instance_name"], props.get("owner")):
            info = eng.start(props["instance_name"])  # finished by an interrupted run: take it over
            return CreateResult(props["instance_name"], self._outs(props, info))
        info = eng.restore_to_new(props["source"], props["instance_name"], props["restore_time"],
                                  port=c.as_int(props.get("port")), retention_hours=c.as_int(props.get("retention_hours")),
                                  owner=props.get("owner"))
        return CreateResult(props["instance_name"], self._outs(props, info))

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        info = c.engine_for(props).info(props.get("instance_name") or id_)
        if info is None:
            return ReadResult("", {})
        return ReadResult(id_, self._outs(props, info))

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        eng = c.engine_for(news)
        name = news["instance_name"]
        eng.start(name)
        if news.get("port") is not None and news.get("port") != olds.get("port"):
            eng.change_port(name, int(news["port"]))
        if news.get("retention_hours") and news.get("retention_hours") != olds.get("retention_hours"):
            eng.set_retention(name, int(news["retention_hours"]))
        info = eng.info(name)
        if info is None:
            raise c.DbosError(f"instance {name!r} disappeared during the update", hint="run `pulumi refresh`")
        return UpdateResult(self._outs(news, info))

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        if props.get("deletion_protection"):
            raise c.protected_delete_error(props.get("instance_name") or _id)
        c.engine_for(props).destroy(props.get("instance_name") or _id)


class RestoredInstance(pulumi.dynamic.Resource, module="dbos", name="RestoredInstance"):
    """A new, independent instance holding ``source``'s data as of ``restore_time`` (RFC3339 or ``latest``).

    Username and password are the source's. Changing ``source`` or
    ``restore_time`` replaces it (refused while ``deletion_protection=True``).
    """

    instance_name: pulumi.Output[str]
    username: pulumi.Output[str]
    status: pulumi.Output[str]
    hostname: pulumi.Output[str]
    port: pulumi.Output[int]
    database_url: pulumi.Output[str]
    is_linked: pulumi.Output[bool]
    source_instance: pulumi.Output[str]
    restored_to: pulumi.Output[str]
    earliest_restorable_time: pulumi.Output[str]
    latest_restorable_time: pulumi.Output[str]

    def __init__(
        self,
        resource_name: str,
        *,
        source: Any,
        restore_time: pulumi.Input[str],
        instance_name: pulumi.Input[str] | None = None,
        deletion_protection: pulumi.Input[bool] = False,
        port: pulumi.Input[int] | None = None,
        retention_hours: pulumi.Input[int] | None = None,
        password: pulumi.Input[str] | None = None,
        engine: str | None = None,
        data_dir: str | None = None,
        run_as: str | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        if isinstance(source, pulumi.Resource):
            if password is None:
                password = getattr(source, "password", None)
            source_name: Any = source.instance_name  # type: ignore[attr-defined]
        else:
            source_name = source
        props: dict[str, Any] = dict(
            instance_name=instance_name or resource_name, source=source_name, restore_time=restore_time,
            deletion_protection=deletion_protection, port=port, retention_hours=retention_hours,
            password=pulumi.Output.secret(password) if password is not None else None,
            **c.engine_defaults(engine, data_dir, run_as), owner=c.owner(resource_name),
            status=None, hostname=None, username=None, database_url=None, is_linked=None,
            source_instance=None, restored_to=None, earliest_restorable_time=None, latest_restorable_time=None,
        )
        opts = pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(
            additional_secret_outputs=["password", "database_url"]))
        super().__init__(RestoredInstanceProvider(), resource_name, props, opts)
