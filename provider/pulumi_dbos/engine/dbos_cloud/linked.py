"""Linked servers on DBOS Cloud (``db link``/``db unlink``): a server of one's own, registered by address.

DBOS Cloud has no update of a link: a new address or password is an unlink and a new link.
"""

from __future__ import annotations

from typing import Any

from ...cloudapi import paths
from ...cloudapi.models import LinkRequest, dump
from ...errors import AlreadyExistsError, DbosError, EngineError, NotFoundError, ValidationError
from ..contract import InstanceInfo
from .session import CloudSession

LINKED_USER = "dbosadmin"  # DBOS Cloud links every server as this user


def link(s: CloudSession, name: str, hostname: str, port: int, username: str, password: str, *,
         owner: str | None) -> InstanceInfo:
    if not s.serve and username != LINKED_USER:
        raise ValidationError([("username", f"DBOS Cloud links a server as the user {LINKED_USER!r} only: create "
                                            f"that role on your server and use it")])
    existing = s.get(name)
    if existing is not None and not existing.IsLinked:
        raise AlreadyExistsError(f"an instance named {name!r} already exists in {s.describe()} and is not "
                                 "linked", hint="choose another instance_name")
    ext: dict[str, Any] = dict(Username=username, Owner=owner) if s.serve else {}
    body = dump(LinkRequest(Name=name, HostName=hostname, Port=port, Password=password, **ext))
    with s.mutating():
        if existing is not None:
            # a new address or password of a linked server: DBOS Cloud links anew (there is no update)
            s.call("DELETE", paths.UNLINK, what=f"re-linking instance {name!r}", name=name)
        try:
            s.call("POST", paths.LINK, what=f"linking instance {name!r} to {hostname}:{port}", body=body,
                   secrets=[password])
        except DbosError as exc:
            if existing is not None:
                raise EngineError(f"{exc.message} (its previous link was removed: `pulumi up` links it again "
                                  "once the server is reachable)", hint=exc.hint) from None
            raise
    return s.current(name)


def unlink(s: CloudSession, name: str) -> None:
    db = s.get(name)
    if db is None:
        return
    if not db.IsLinked:
        raise EngineError(f"{name!r} is not a linked instance", hint="destroy it instead")
    with s.mutating():
        try:
            s.call("DELETE", paths.UNLINK, what=f"unlinking instance {name!r}", name=name)
        except NotFoundError:
            pass
