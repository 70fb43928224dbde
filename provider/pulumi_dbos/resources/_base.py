"""The shared skeleton of every dynamic provider and resource class, driven by the resource's Spec.

A resource module declares its :class:`~pulumi_dbos.config.Spec` and implements only what is
its own (``do_create``/``do_read``/``do_update``/``do_delete`` and optional check hooks); this
base derives the input, replace, diff and secret lists from the Spec, validates in ``check()``
(so mistakes fail at preview, naming the field), asks the engine's ``preflight`` there, refuses
silent data loss (engine moves, protected replaces), and turns errors into one clear message.

Provider classes hold no state on ``self`` (they are pickled into the state by reference) and
open any connection inside each method.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any, ClassVar

import pulumi
from pulumi.dynamic import (
    CheckFailure,
    CheckResult,
    CreateResult,
    DiffResult,
    ReadResult,
    ResourceProvider,
    UpdateResult,
)

from ..config.fields import UNKNOWN, Fields, is_unknown
from ..engine import Kind, Preflight
from ..engine.urls import url_for
from ..errors import DbosError
from . import _server

# where a resource's engine comes from (its settings, the provider-only ones, its owner id) and notices;
# re-exported: the resource modules use ``b.engine_for``, ``b.owner``, ``b.notice``
from ._engine import configure_provider, engine_defaults, engine_for, notice, owner, repo_settings
from .stack_config import check_stack_config

__all__ = ["configure_provider", "engine_defaults", "engine_for", "notice", "owner", "repo_settings"]

Props = dict[str, Any]


# ---------------------------------------------------------------------------- the provider server's extensions
@contextlib.contextmanager
def _clean_errors() -> Iterator[None]:
    """Around every provider call: errors without tracebacks, field-level diffs (see ``_server``)."""
    _server.install()
    yield


# ---------------------------------------------------------------------------- helpers
def as_int(v: Any) -> int | None:
    """Numbers cross the Pulumi wire as floats."""
    return None if v is None or is_unknown(v) else int(v)


def database_url(username: str, password: str | None, host: str, port: int, dbname: str = "postgres") -> str | None:
    return url_for(username, password, host, port, dbname) if password else None




def protected_delete_error(name: str) -> DbosError:
    return DbosError(
        f"instance {name!r} has deletion_protection=True and was not deleted",
        hint="set deletion_protection=False (in code or `dbos:instances.<name>.deletionProtection: false`), "
        "run `pulumi up`, then run `pulumi destroy` (or remove the resource) again")


# ---------------------------------------------------------------------------- the provider skeleton
class BaseProvider(ResourceProvider):
    """check → diff → create/read/update/delete, from the Spec; subclasses implement the ``do_*`` steps."""

    fields: ClassVar[Fields]
    #: the engine kind for preflight (None: the resource does not create instances)
    kind: ClassVar[Kind | None] = None
    #: the status of a healthy resource; any other in the state (a refresh saw it) makes `up` repair it
    healthy: ClassVar[str | None] = "available"

    def configure(self, req: Any) -> None:
        configure_provider(req.config)

    # ------------------------------------------------------------ check
    def defaults(self, inputs: Props) -> list[CheckFailure]:
        """Fill derived defaults into ``inputs`` (e.g. from a config file); return problems found."""
        return []

    def carry(self, olds: Props, inputs: Props) -> None:
        """Keep in ``inputs`` what the resource already has and the program does not say (yet); called
        before anything is compared.

        A bound resource takes its instance's host, port and user from the instance's outputs. While that
        instance is updated in place, a preview knows only its inputs (Pulumi previews an update's outputs
        as its inputs), so those come as unknown, or None for an allocated port. ``instance_name`` is the
        instance resource's id, known exactly when the instance is the same one updated in place (a
        create or replace has no id yet), and an update in place keeps its host, user and allocated port:
        the bound resource's own values stand, and the preview names only what really changes (say
        ``instance_password``). `up` itself sees the instance's real outputs."""
        if "instance_host" not in self.fields.inputs:
            return
        name = inputs.get("instance_name")
        if not is_unknown(name) and name is not None and name == olds.get("instance_name"):
            for key in ("instance_host", "instance_port", "instance_user"):
                if inputs.get(key) is None or is_unknown(inputs.get(key)):
                    inputs[key] = olds.get(key)
        elif inputs.get("instance_port") is None:
            inputs["instance_port"] = UNKNOWN  # an instance always has a port: this one's is allocated at apply

    def same(self, key: str, old: Any, new: Any) -> bool:
        """Whether input ``key`` is unchanged: equal, an unset port (whatever was allocated stays), or an
        input added since the state was recorded that is at its default."""
        return old == new or (key == "port" and new is None) \
            or (old is None and new is not None and new == self.fields.default(key))

    def check(self, olds: Props, news: Props) -> CheckResult:
        # Inputs are what the program gave plus defaults (and values derived from them, such as an app's
        # version): never outputs. A stack that recorded outputs as inputs (an allocated port) before is
        # migrated silently: they compare as unchanged, and the next `up` records the inputs as given.
        with _clean_errors():
            inputs = dict(news)
            for name, _ in self.fields.defaults:
                if inputs.get(name) is None:
                    inputs[name] = self.fields.default(name)
            failures = self.defaults(inputs)
            if olds:
                self.carry(olds, inputs)
            if not failures and olds and all(self.same(k, olds.get(k), inputs.get(k)) for k in self.fields.inputs):
                # the inputs this resource was last created or updated with: validated and checked then,
                # and nothing the engine could say changes the plan (a no-op preview asks it nothing)
                return _check_result(inputs, [])
            from ..config.derive import input_model, validate  # pydantic: only for inputs that changed

            values = {k: v for k, v in inputs.items() if k in self.fields.inputs and v is not None}
            failures += [CheckFailure(f, r) for f, r in validate(input_model(self.fields.model()), values)]
            if not failures and self.kind is not None:
                failures += self._moves(olds, inputs) or self._preflight(olds, inputs)
            if not failures:
                failures += self.extra_checks(olds, inputs)
            if not failures:
                self._warn_dropping(olds, inputs)
            return _check_result(inputs, failures)

    def dropped_on_delete(self, props: Props) -> list[str]:
        """The databases a delete of this resource drops (``drop_on_delete=True``)."""
        return []

    def _warn_dropping(self, olds: Props, news: Props) -> None:
        """A replace deletes the old resource with its recorded inputs: one that drops its databases on delete
        says so at preview (a warning), and how to keep them."""
        dropped = self.dropped_on_delete(olds) if olds else []
        if not dropped:
            return
        replacing = [k for k in self.replace_keys(olds, news) if k in self.fields.diff_keys
                     and not is_unknown(news.get(k)) and not self.same(k, olds.get(k), news.get(k))]
        if not replacing:
            return
        kind = type(self).__name__.removesuffix("Provider")
        dbs = " and ".join(repr(d) for d in dropped)
        notice(f"{kind} {olds.get(self.fields.name_field)!r}: changing {', '.join(replacing)} replaces it, and the "
               f"old one is deleted with drop_on_delete=True: its database{'s' if len(dropped) > 1 else ''} {dbs} "
               "will be dropped (every row lost). To keep them, first set drop_on_delete=False and run `pulumi up`, "
               "then make this change", warning=True)

    def extra_checks(self, olds: Props, news: Props) -> list[CheckFailure]:
        """Checks of the resource's own that need the engine (after the field rules passed)."""
        return []

    def _moving(self, olds: Props, news: Props) -> list[str]:
        return [k for k in self.fields.engine_keys
                if olds and k in olds and not is_unknown(news.get(k)) and olds.get(k) != news.get(k)]

    def _moves(self, olds: Props, news: Props) -> list[CheckFailure]:
        """Refuse replaces that would delete data: an engine move (unless opted in), a protected instance."""
        name = olds.get("instance_name") if olds else None
        moving = self._moving(olds, news)
        if moving and self.kind is not Kind.LINKED and not news.get("replace_on_engine_change"):
            what = ", ".join(f"{k} {olds.get(k)!r} -> {news.get(k)!r}" for k in moving)
            return [CheckFailure(moving[0], (
                f"changing {what} would replace instance {name!r}: a new, empty instance is made by the new "
                "engine and the old one is deleted with all its data (data loss). Move the data first (e.g. "
                "pg_dump/pg_restore), then allow it with replace_on_engine_change=True "
                "(stack config: `dbos:replaceOnEngineChange: true`); or keep the old engine settings"))]
        if olds and olds.get("deletion_protection"):
            changing = [k for k in self.fields.replace_keys if k in olds and olds.get(k) != news.get(k)
                        and not is_unknown(news.get(k))]
            if changing:
                return [CheckFailure(changing[0], (
                    f"changing {', '.join(changing)} replaces instance {name!r}, which has deletion_protection=True: "
                    "first set deletion_protection=False and run `pulumi up`, then make this change"))]
        return []

    def preflight_request(self, olds: Props, news: Props) -> Preflight | None:
        name = news.get("instance_name")
        if self.kind is None or is_unknown(name) or not name:
            return None
        same = bool(olds) and olds.get("instance_name") == name and not self._moving(olds, news)

        def asked(key: str) -> int | None:  # a number asked for on a create or a change (None: unknown, unset)
            return None if same and news.get(key) == olds.get(key) else as_int(news.get(key))

        return Preflight(
            kind=self.kind, name=str(name), owner=news.get("owner"), creating=not same,
            adopt=bool(news.get("adopt")), port=asked("port"), retention_hours=asked("retention_hours"),
            source=None if is_unknown(news.get("source")) else news.get("source"),
            restore_time=None if is_unknown(news.get("restore_time")) else news.get("restore_time"),
            username=None if self.kind not in (Kind.PROVISIONED, Kind.LINKED) or is_unknown(news.get("username"))
            else news.get("username"),
            high_availability=news.get("high_availability") is True and not (same and olds.get("high_availability")))

    def _preflight(self, olds: Props, news: Props) -> list[CheckFailure]:
        req = self.preflight_request(olds, news)
        if req is None:
            return []
        if olds and req.restore_time and olds.get("source") == req.source \
                and olds.get("restore_time") == req.restore_time:
            req = Preflight(**{**req.__dict__, "restore_time": None})  # already restored: the window moved on
        try:
            eng = engine_for(news)
            problems = eng.preflight(req)
            if req.adopt and req.creating and not problems and eng.info(req.name) is not None:
                notice(f"instance {req.name!r} exists and will be adopted (adopt=True): `pulumi up` makes this "
                       "stack its manager and resets its user's password to the one given")
        except DbosError as exc:
            field = "data_dir" if news.get("engine", "local") == "local" else "engine"
            return [CheckFailure(field, exc.message + (f"; {exc.hint}" if exc.hint else ""))]
        return [CheckFailure(p.field, p.message) for p in problems]

    # ------------------------------------------------------------ diff
    def replace_keys(self, olds: Props, news: Props) -> list[str]:
        return list(self.fields.replace_keys)

    def diff(self, _id: str, olds: Props, news: Props) -> DiffResult:
        """Changed/unchanged and the replace keys for Pulumi, plus the field-level diff (field -> add, update,
        delete, with ``-replace`` where the field replaces) that ``pulumi preview --diff``/``--json`` show:
        ``olds`` are the recorded outputs (which hold the inputs), ``news`` the checked inputs."""
        with _clean_errors():
            _server.set_detailed_diff(None)
            replace_keys = self.replace_keys(olds, news)
            changes = [k for k in self.fields.diff_keys if not self.same(k, olds.get(k), news.get(k))]
            replaces = [k for k in changes if k in replace_keys]
            detail = {k: _kind(olds.get(k), news.get(k), k in replaces) for k in changes}
            if self.healthy and olds.get("status") not in (None, self.healthy) and not replaces:
                changes.append("status")  # stopped, crashed or password drifted out of band: `up` repairs it
                detail["status"] = "update"
            same_place = olds.get(self.fields.name_field) == news.get(self.fields.name_field) \
                and not self._moving(olds, news)
            _server.set_detailed_diff(detail)
            return DiffResult(changes=bool(changes), replaces=replaces, stables=[],
                              delete_before_replace=bool(replaces) and same_place)

    # ------------------------------------------------------------ CRUD
    def outputs(self, props: Props, **outs: Any) -> Props:
        """The full outputs (``update`` must return all of them): the inputs, then ``outs``."""
        result = {k: v for k, v in props.items() if not k.startswith("__")}
        result.update(outs)
        return result

    def do_create(self, props: Props) -> tuple[str, Props]:
        raise NotImplementedError

    def do_read(self, id_: str, props: Props) -> Props | None:
        raise NotImplementedError

    def do_update(self, olds: Props, news: Props) -> Props:
        raise NotImplementedError

    def do_delete(self, id_: str, props: Props) -> None:
        raise NotImplementedError

    def create(self, props: Props) -> CreateResult:
        with _clean_errors():
            id_, outs = self.do_create(props)
            return CreateResult(id_, outs)

    def read(self, id_: str, props: Props) -> ReadResult:
        with _clean_errors():
            outs = self.do_read(id_, props)
            return ReadResult(id_, outs) if outs is not None else ReadResult("", {})  # "" = gone: drop it

    def update(self, _id: str, olds: Props, news: Props) -> UpdateResult:
        with _clean_errors():
            return UpdateResult(self.do_update(olds, news))

    def delete(self, id_: str, props: Props) -> None:
        with _clean_errors():
            self.do_delete(id_, props)


def _kind(old: Any, new: Any, replace: bool) -> str:
    kind = "add" if old is None else "delete" if new is None else "update"
    return f"{kind}-replace" if replace else kind


def _check_result(inputs: Props, failures: list[CheckFailure]) -> CheckResult:
    """Pulumi prints a failure's property *value* next to it (secrets included), so failures are
    reported without a property, the field named in the reason instead."""
    out = []
    for f in failures:
        reason = f.reason if not f.property or f.reason.startswith(f.property) else f"{f.property}: {f.reason}"
        out.append(CheckFailure("", reason))
    return CheckResult(inputs, out)


# ---------------------------------------------------------------------------- the resource classes
class DbosResource(pulumi.dynamic.Resource):
    """Registers a resource's props from its Spec: the arguments the Spec names (others are a TypeError),
    inputs with defaults, secrets wrapped, outputs declared, engine settings from the stack config, the
    owner, and Pulumi's ``protect`` for ``deletion_protection=True``. Inputs accept plain values or Outputs."""

    fields: ClassVar[Fields]
    provider: ClassVar[type[BaseProvider]]

    def __init__(self, resource_name: str, opts: pulumi.ResourceOptions | None = None, **arguments: Any) -> None:
        fields = self.fields
        unexpected = sorted(set(arguments) - set(fields.arguments))
        if unexpected:
            raise TypeError(f"{type(self).__name__}() got unexpected argument(s) {', '.join(unexpected)}; "
                            f"it takes: {', '.join(fields.arguments)}")
        self._register(resource_name, {fields.name_field: resource_name, **arguments}, opts)

    def _register(self, resource_name: str, inputs: Props, opts: pulumi.ResourceOptions | None) -> None:
        check_stack_config(inputs.get("engine"))  # the first registration of a program: its dbos:* keys
        fields = self.fields
        props: Props = {}
        for name in fields.inputs:
            value = inputs.get(name)
            if value is None:
                value = fields.default(name)
            props[name] = pulumi.Output.secret(value) if name in fields.secrets and value is not None else value
        props.update(engine_defaults(inputs.get("engine"), inputs.get("data_dir"), inputs.get("run_as"),
                                     inputs.get("cloud_domain")))
        if inputs.get("replace_on_engine_change") is not None:
            props["replace_on_engine_change"] = inputs["replace_on_engine_change"]
        props["owner"] = owner(resource_name)
        for name in fields.outputs:
            props.setdefault(name, None)
        extra = pulumi.ResourceOptions(additional_secret_outputs=list(fields.secrets))
        if props.get("deletion_protection") is True:
            extra.protect = True
        super().__init__(self.provider(), resource_name, props, pulumi.ResourceOptions.merge(opts, extra))

    def __getattr__(self, name: str) -> pulumi.Output[Any]:  # the Spec's fields, set by Pulumi at runtime
        raise AttributeError(name)


class BoundResource(DbosResource):
    """A resource bound to an instance resource (``instance=``): it takes the instance's name, host, port,
    user and password as its own inputs, known at preview for an existing instance."""

    def __init__(self, resource_name: str, opts: pulumi.ResourceOptions | None = None, **arguments: Any) -> None:
        cls = type(self).__name__
        unexpected = sorted(set(arguments) - set(self.fields.arguments))
        if unexpected:
            raise TypeError(f"{cls}() got unexpected argument(s) {', '.join(unexpected)}; "
                            f"it takes: {', '.join(self.fields.arguments)}")
        given = arguments.pop("instance", None)
        if not isinstance(given, pulumi.Resource):
            raise DbosError(f"{cls}.instance must be an instance resource "
                            "(DatabaseInstance, RestoredInstance or LinkedInstance)")
        inst: Any = given
        for key in self.fields.paths:
            if arguments.get(key):
                arguments[key] = os.path.abspath(arguments[key])
        self._register(resource_name, {
            self.fields.name_field: resource_name, **arguments,
            "instance_name": inst.id,  # = its instance_name, unknown at preview while it is created (carry())
            "instance_host": inst.hostname, "instance_port": inst.port, "instance_user": inst.username,
            "instance_password": inst.password}, opts)
