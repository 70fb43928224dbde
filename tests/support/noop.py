"""``Noop``: a trivial dynamic resource that does no I/O.

Used by the toolchain smoke test, as a consumer of other resources' outputs in e2e programs,
and as the baseline provider of ``bench/scale.py`` (the same Pulumi overhead without any
database work). Programs import it as ``tests.support.noop`` with the repository root on
PYTHONPATH (the provider process imports it by reference too).
"""

from __future__ import annotations

import hashlib
from typing import Any

import pulumi
from pulumi.dynamic import CreateResult, DiffResult, ReadResult, ResourceProvider, UpdateResult


class NoopProvider(ResourceProvider):
    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        changed = olds.get("value") != news.get("value")
        return DiffResult(changes=changed, replaces=[], stables=[], delete_before_replace=False)

    def create(self, props: dict[str, Any]) -> CreateResult:
        # ids are never secret: derive it from a digest, not from the (possibly secret) value
        digest = hashlib.sha256(str(props.get("value")).encode()).hexdigest()[:16]
        return CreateResult(f"noop-{digest}", {"value": props.get("value"), "length": len(str(props.get("value")))})

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        return ReadResult(id_, props)

    def update(self, _id: str, _olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        return UpdateResult({"value": news.get("value"), "length": len(str(news.get("value")))})


class Noop(pulumi.dynamic.Resource, module="dbos", name="Noop"):
    value: pulumi.Output[str]
    length: pulumi.Output[int]

    def __init__(self, resource_name: str, value: pulumi.Input[str], opts: pulumi.ResourceOptions | None = None):
        # a dynamic provider's outputs lose the secretness of their inputs unless listed here
        opts = pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(additional_secret_outputs=["value"]))
        super().__init__(NoopProvider(), resource_name, {"value": value, "length": None}, opts)


class MirrorProvider(ResourceProvider):
    """No I/O, like NoopProvider, on a pulumi_dbos resource's property set (see :class:`Mirror`)."""

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        changed = any(olds.get(k) != v for k, v in news.items() if not k.startswith("__"))
        return DiffResult(changes=changed, replaces=[], stables=[], delete_before_replace=False)

    def create(self, props: dict[str, Any]) -> CreateResult:
        digest = hashlib.sha256(str(sorted(props)).encode()).hexdigest()[:16]
        return CreateResult(f"mirror-{digest}", self._outputs(props))

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        return ReadResult(id_, props)

    def update(self, _id: str, _olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        return UpdateResult(self._outputs(news))

    @staticmethod
    def _outputs(props: dict[str, Any]) -> dict[str, Any]:
        port = props.get("port") or props.get("instance_port") or 5432
        return {**{k: v for k, v in props.items() if not k.startswith("__")}, "hostname": "127.0.0.1",
                "port": port, "status": "available", "username": props.get("username") or "bench_user",
                "database_url": f"postgresql://bench_user@127.0.0.1:{port}/postgres"}


class Mirror(pulumi.dynamic.Resource, module="dbos", name="Mirror"):
    """A resource with exactly the properties (inputs, defaults, secrets, outputs) a pulumi_dbos resource
    registers, from the same generated field lists, and a provider that does no I/O: the baseline of
    ``bench/scale.py`` that prices Pulumi's own handling of those properties apart from our provider's work."""

    def __init__(self, resource_name: str, resource: str, inputs: dict[str, Any],
                 opts: pulumi.ResourceOptions | None = None):
        from pulumi_dbos.config.fields import fields_of

        fields = fields_of(resource)
        props: dict[str, Any] = {}
        for name in fields.inputs:
            value = inputs.get(name)
            value = fields.default(name) if value is None else value
            props[name] = pulumi.Output.secret(value) if name in fields.secrets and value is not None else value
        for name in fields.outputs:
            props.setdefault(name, None)
        opts = pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(additional_secret_outputs=list(fields.secrets)))
        super().__init__(MirrorProvider(), resource_name, props, opts)
