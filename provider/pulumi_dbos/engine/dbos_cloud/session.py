"""What every part of the dbos-cloud engine shares: the client, the cached instance list, single reads.

Preview and refresh of N resources cost O(1) calls: ``list()`` is cached for ``LIST_TTL`` seconds per
engine object and dropped by every mutation made through :meth:`CloudSession.mutating`; ``info(name)``
reads that list. Reads of one instance *now* (``get``/``require``/``current``) are never cached.
"""

from __future__ import annotations

import builtins
import dataclasses
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from pydantic import BaseModel

from ...cloudapi import paths
from ...cloudapi.models import UserDBInstance
from ...errors import AlreadyExistsError, NotFoundError
from ..contract import InstanceInfo
from . import checks, convert
from .answers import parse, parse_list
from .client import CloudClient, poll

LIST_TTL = 2.0

M = TypeVar("M", bound=BaseModel)


class CloudSession:
    """One organization (the token's) at one domain; thread-safe."""

    def __init__(self, client: CloudClient, deadline: float, sleep: Callable[[float], None]) -> None:
        self.client = client
        #: how long a provision, restore or removal may take
        self.deadline = deadline
        self.sleep = sleep
        self._lock = threading.Lock()
        self._cache: tuple[float, list[InstanceInfo]] | None = None
        self._generation = 0

    # ---------------------------------------------------------------- where
    @property
    def domain(self) -> str:
        return self.client.domain

    @property
    def serve(self) -> bool:
        """Whether the server is ``pulumi-dbos serve`` (extensions understood)."""
        return self.client.profile.serve

    def describe(self) -> str:
        prof = self.client.cached_profile()  # never a call: describe() words errors, also unreachable ones
        if prof is None:
            return f"DBOS Cloud at {self.domain}"
        what = "pulumi-dbos serve" if prof.serve else "DBOS Cloud"
        return f"{what} at {self.domain} (organization {prof.organization})"

    def require_served(self, what: str, field: str) -> None:
        if not self.serve:
            raise checks.not_supported(what, field)

    # ---------------------------------------------------------------- calls
    def call(self, method: str, template: str, *, what: str, **kw: Any) -> Any:
        return self.client.call(method, template, what=what, **kw)

    def read(self, model: type[M], template: str, *, what: str, label: str, **segments: str) -> M | None:
        """``GET template`` as ``model``, or None when the server says it is not there."""
        try:
            data = self.call("GET", template, what=what, **segments)
        except NotFoundError:
            return None
        return parse(model, data, label)

    def invalidate(self) -> None:
        """Forget the cached list (after a mutation; also one still in flight must not be stored)."""
        with self._lock:
            self._cache = None
            self._generation += 1

    @contextmanager
    def mutating(self) -> Iterator[None]:
        self.invalidate()
        try:
            yield
        finally:
            self.invalidate()

    # ---------------------------------------------------------------- instances
    def list(self) -> builtins.list[InstanceInfo]:
        with self._lock:
            if self._cache is not None and time.monotonic() - self._cache[0] < LIST_TTL:
                return [dataclasses.replace(i) for i in self._cache[1]]
            generation = self._generation
        data = self.call("GET", paths.DATABASES, what="listing instances")
        items = [convert.instance_info(db) for db in parse_list(UserDBInstance, data, "the instance list")]
        with self._lock:
            if generation == self._generation:
                self._cache = (time.monotonic(), items)
        return [dataclasses.replace(i) for i in items]

    def info(self, name: str) -> InstanceInfo | None:
        return next((i for i in self.list() if i.name == name), None)

    def get(self, name: str) -> UserDBInstance | None:
        """The instance now (not cached), or None."""
        return self.read(UserDBInstance, paths.DB_INFO, what=f"reading instance {name!r}",
                         label=f"instance {name!r}", name=name)

    def require(self, name: str, *, changed: bool = False) -> UserDBInstance:
        """The instance now, or NotFoundError (``changed``: it was there a moment ago, ours just changed it)."""
        db = self.get(name)
        if db is None and changed:
            raise NotFoundError(f"instance {name!r} disappeared from {self.describe()}",
                                hint="run `pulumi refresh`, then `pulumi up` to recreate it")
        if db is None:
            raise NotFoundError(f"instance {name!r} does not exist in {self.describe()}",
                                hint="`pulumi-dbos db list` shows the instances of this organization")
        return db

    def current(self, name: str) -> InstanceInfo:
        """The instance after a change of ours."""
        return convert.instance_info(self.require(name, changed=True))

    def refuse_taken(self, name: str) -> None:
        if self.get(name) is not None:
            raise AlreadyExistsError(f"an instance named {name!r} already exists in {self.describe()}",
                                     hint="choose another instance_name, or set adopt=True to take it over")

    def wait_gone(self, name: str, timeout: float) -> None:
        poll(lambda: True if self.get(name) is None else None, timeout,
             f"instance {name!r} was not removed", sleep=self.sleep)
