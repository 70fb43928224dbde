"""``RestoredInstance``: point-in-time restore of an instance into a new one (``dbos-cloud db restore``)."""

from __future__ import annotations

import contextlib
from typing import Any

import pulumi
from pulumi.dynamic import CheckFailure

from ..config.fields import fields_of, is_unknown
from ..engine import InstanceInfo, Kind
from ..errors import DbosError, NotFoundError
from . import _base as b
from .instance import delete_instance, ha_as_asked, instance_outputs, read_instance, update_instance


class RestoredInstanceProvider(b.BaseProvider):
    fields = fields_of("RestoredInstance")
    kind = Kind.RESTORED

    def replace_keys(self, olds: b.Props, news: b.Props) -> list[str]:
        # A restore is independent of its source's lifecycle (like DBOS Cloud's): when the source is
        # itself being replaced, `source` is unknown here, and that alone must not replace the restore.
        return [k for k in self.fields.replace_keys if not is_unknown(news.get(k))]

    def carry(self, olds: b.Props, inputs: b.Props) -> None:
        # Its password defaults to the source's; once the source has left the program (given by name
        # now), the restore keeps the password it has: the state holds what its server accepts.
        if inputs.get("password") is None and olds.get("password"):
            inputs["password"] = olds["password"]

    def extra_checks(self, olds: b.Props, news: b.Props) -> list[CheckFailure]:
        if not olds and news.get("password") is None:
            return [CheckFailure("password", f"restore {news.get('instance_name')!r}: no password for its user: pass "
                                 "the source instance resource (its password is used) or password=...")]
        return self._brand_new_source(olds, news)

    @staticmethod
    def _brand_new_source(olds: b.Props, news: b.Props) -> list[CheckFailure]:
        """A restore at a past time from a source that does not exist yet (made in this same update, e.g. its
        resource renamed) can only fail halfway through `up`: a brand-new instance holds nothing as of a past
        time. Refused at preview, naming the restore, its source and (a rename) the source's old name."""
        source, when, name = news.get("source"), news.get("restore_time"), news.get("instance_name")
        if not source or is_unknown(source) or not when or is_unknown(when) or when == "latest":
            return []
        if olds and olds.get("source") == source and olds.get("restore_time") == when:
            return []  # already restored: its source may be gone since
        eng = b.engine_for(news)
        try:
            if eng.info(str(source)) is not None:
                return []
            eng.restore_window(str(source))  # destroyed or lost, its backups kept: the preflight checked the window
            return []
        except NotFoundError:
            pass  # nothing of that name, nor backups of it
        except DbosError:
            return []
        renamed = ""
        old_source = olds.get("source") if olds else None
        if old_source and not is_unknown(old_source) and old_source != source:
            with contextlib.suppress(DbosError):
                old = eng.info(str(old_source))
                whose = f" (resource {_resource(old.owner)!r})" if old is not None and old.owner else ""
                renamed = (f"; its source changes from {old_source!r}{whose}: keep that instance's name, or name "
                           f"the restore's source by it (source={old_source!r})")
        return [CheckFailure("source", (
            f"restore {name!r} (resource {_resource(news.get('owner'))!r}) restores {source!r} as of {when}, but "
            f"instance {source!r} does not exist yet: it would be made in this same update, and a brand-new instance holds "
            f"no data as of a past time{renamed}; or restore at 'latest'"))]

    def _outs(self, props: b.Props, info: InstanceInfo) -> b.Props:
        return instance_outputs(self, props, info, props.get("password"), source_instance=info.source_instance,
                                restored_to=info.restored_to)

    def do_create(self, props: b.Props) -> tuple[str, b.Props]:
        eng, name = b.engine_for(props), props["instance_name"]
        if not props.get("password"):
            raise DbosError(f"restore {name!r}: no password for its user",
                            hint="pass the source instance resource (its password is used) or password=...")
        info = eng.takeover(name, props.get("owner"))  # finished by an interrupted run: take it over
        if info is not None:
            info = eng.reset_credentials(name, info.username, props["password"])
        else:
            info = eng.restore_to_new(props["source"], name, props["restore_time"], password=props["password"],
                                      port=b.as_int(props.get("port")),
                                      retention_hours=b.as_int(props.get("retention_hours")), owner=props.get("owner"))
        return name, self._outs(props, ha_as_asked(eng, name, props, info))

    def do_read(self, id_: str, props: b.Props) -> b.Props | None:
        info = read_instance(b.engine_for(props), props.get("instance_name") or id_, props.get("password"))
        return self._outs(props, info) if info else None

    def do_update(self, olds: b.Props, news: b.Props) -> b.Props:
        return self._outs(news, update_instance(b.engine_for(news), olds, news, news.get("password")))

    def do_delete(self, id_: str, props: b.Props) -> None:
        delete_instance(props, id_)


def _resource(owner: Any) -> str:
    """The resource name in an owner id (``project/stack/resource#digest``)."""
    return str(owner or "?").split("#", 1)[0].rsplit("/", 1)[-1]


class RestoredInstance(b.DbosResource, module="dbos", name="RestoredInstance"):
    """A new, independent instance holding ``source``'s data as of ``restore_time`` (RFC3339 or ``latest``).

    Its user is the source's; its password is ``password``, by default the source's (given the
    source resource): whatever the state holds is what the server accepts, also when the restore
    point predates a password reset. Changing ``source`` or ``restore_time`` replaces it (refused
    while ``deletion_protection=True``). ``high_availability=True`` (local engine): restored, then made the
    leader of 3 members, as ``DatabaseInstance``'s; turning it on or off later is an update.
    """

    fields = fields_of("RestoredInstance")
    provider = RestoredInstanceProvider

    def __init__(self, resource_name: str, opts: pulumi.ResourceOptions | None = None, **arguments: Any) -> None:
        source = arguments.get("source")
        if isinstance(source, pulumi.Resource):  # given the source resource: its name, and its password
            if arguments.get("password") is None:
                arguments["password"] = getattr(source, "password", None)
            arguments["source"] = source.instance_name  # type: ignore[attr-defined]
        super().__init__(resource_name, opts, **arguments)
