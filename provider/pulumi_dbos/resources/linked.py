"""``LinkedInstance``: register an existing Postgres server (``dbos-cloud db link``); destroy only unlinks."""

from __future__ import annotations

from typing import ClassVar

import pulumi

from ..config import LinkedInstanceSpec
from ..engine import Kind, Status
from . import _base as b


class LinkedInstanceProvider(b.BaseProvider):
    spec = LinkedInstanceSpec
    kind = Kind.LINKED

    def _outs(self, props: b.Props, status: str) -> b.Props:
        return self.outputs(props, status=status, is_linked=True, database_url=b.database_url(
            props["username"], props["password"], props["hostname"], int(props["port"])))

    def _link(self, props: b.Props) -> b.Props:
        # the password is reset on the server by its owner: linking verifies that this one works
        b.engine_for(props).link(props["instance_name"], props["hostname"], int(props["port"]), props["username"],
                                 props["password"], owner=props.get("owner"))
        return self._outs(props, Status.AVAILABLE.value)

    def do_create(self, props: b.Props) -> tuple[str, b.Props]:
        return props["instance_name"], self._link(props)

    def do_read(self, id_: str, props: b.Props) -> b.Props | None:
        eng, name = b.engine_for(props), props.get("instance_name") or id_
        info = eng.info(name)
        if info is None:
            return None
        ok = eng.check_credentials(name, info.username, props.get("password") or "")
        return self._outs(props, Status.AVAILABLE.value if ok else Status.UNREACHABLE.value)

    def do_update(self, olds: b.Props, news: b.Props) -> b.Props:
        return self._link(news)

    def do_delete(self, id_: str, props: b.Props) -> None:
        b.engine_for(props).unlink(props.get("instance_name") or id_)  # never touches the external server


class LinkedInstance(b.DbosResource, module="dbos", name="LinkedInstance"):
    """An existing Postgres server, registered (create verifies it connects); destroy only unlinks."""

    spec: ClassVar = LinkedInstanceSpec

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
        replace_on_engine_change: bool | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__(LinkedInstanceProvider(), resource_name, dict(
            instance_name=instance_name or resource_name, hostname=hostname, port=port, username=username,
            password=password, engine=engine, data_dir=data_dir, run_as=run_as,
            replace_on_engine_change=replace_on_engine_change,
        ), opts)
