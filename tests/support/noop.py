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
