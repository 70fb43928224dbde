"""``LinkedInstance``: register an existing Postgres server (``dbos-cloud db link``); destroy only unlinks."""

from __future__ import annotations

from ..config.fields import fields_of
from ..engine import Kind, Status
from . import _base as b


class LinkedInstanceProvider(b.BaseProvider):
    fields = fields_of("LinkedInstance")
    kind = Kind.LINKED
    healthy = None  # unreachable is reported, not repaired: the server is not ours

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

    fields = fields_of("LinkedInstance")
    provider = LinkedInstanceProvider
