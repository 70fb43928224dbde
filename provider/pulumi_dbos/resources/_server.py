"""Extensions of Pulumi's dynamic provider server (``pulumi.dynamic.__main__``), installed from inside it.

Pulumi's Python dynamic provider server answers ``Diff`` with changed/unchanged and the replace keys
only, and reports every exception as ``traceback.format_exc()``. The server module is the process's
``__main__`` (``python -m pulumi.dynamic``), loaded before any provider of ours, so the extensions are
installed the first time one of our providers is called, by swapping two of that module's globals:

- ``traceback``: our own errors become their message and hint only (``PULUMI_DBOS_DEBUG=1`` keeps the
  traceback);
- ``proto``: its ``DiffResponse`` also carries the provider's field-level diff (``diffs``,
  ``detailedDiff``, ``hasDetailedDiff``), so ``pulumi preview --diff`` and ``--json`` name exactly the
  fields that change, update or replace each. The provider's ``diff()`` leaves that diff in a
  thread-local; the server builds the response in the same thread right after it returns.

- ``Read`` without the resource's provider in its state (``pulumi import``: a dynamic provider's resource
  carries its pickled provider as the input ``__provider``, which an import cannot supply, and the server
  failed with ``KeyError: '__provider'`` and a traceback) fails with one line naming ``adopt=True``. This
  one needs the server's servicer before it serves: :func:`serve` (``python -m pulumi_dbos.resources``,
  which the project's ``pulumi-resource-pulumi-python`` runs when the virtualenv has pulumi-dbos) installs
  it, and the other two, as the servicer is registered.

All rely on names of the pinned Pulumi version's server module; ``tests/unit/test_provider_server.py``
runs that module's own ``Diff`` with these extensions and fails when an upgrade breaks them.
"""

from __future__ import annotations

import os
import runpy
import sys
import threading
import traceback
from collections.abc import Callable, Mapping
from types import ModuleType
from typing import Any

from ..errors import DbosError

#: ``PropertyDiff.Kind`` by name (pulumi's provider.proto)
KINDS = ("add", "add-replace", "delete", "delete-replace", "update", "update-replace")

_pending = threading.local()


def set_detailed_diff(detail: Mapping[str, str] | None) -> None:
    """The field-level diff (field → one of :data:`KINDS`) of the ``diff()`` running in this thread."""
    _pending.detail = dict(detail) if detail is not None else None


def take_detailed_diff() -> dict[str, str] | None:
    detail: dict[str, str] | None = getattr(_pending, "detail", None)
    _pending.detail = None
    return detail


class _CleanTraceback:
    """Stands in for the ``traceback`` module in the server, which reports every exception as
    ``traceback.format_exc()``: a :class:`DbosError` becomes its message and hint only."""

    def __getattr__(self, name: str) -> Any:
        return getattr(traceback, name)

    @staticmethod
    def format_exc(*args: Any, **kwargs: Any) -> str:
        exc = sys.exc_info()[1]
        if isinstance(exc, DbosError) and not os.environ.get("PULUMI_DBOS_DEBUG"):
            return str(exc)
        return traceback.format_exc(*args, **kwargs)


class _DiffResponse:
    """``proto.DiffResponse`` (its constants too) that adds the pending field-level diff to what it builds."""

    def __init__(self, proto: Any) -> None:
        self._proto = proto

    def __getattr__(self, name: str) -> Any:
        return getattr(self._proto.DiffResponse, name)

    def __call__(self, **fields: Any) -> Any:
        detail = take_detailed_diff()
        if detail is not None:
            kind = self._proto.PropertyDiff.Kind
            fields["diffs"] = sorted(detail)
            fields["detailedDiff"] = {
                k: self._proto.PropertyDiff(kind=kind.Value(v.upper().replace("-", "_")), inputDiff=False)
                for k, v in detail.items()}
            fields["hasDetailedDiff"] = True
        return self._proto.DiffResponse(**fields)


class _Proto:
    """The server's ``proto`` module with :class:`_DiffResponse` in place of ``DiffResponse``."""

    def __init__(self, proto: Any) -> None:
        self._proto = proto
        self.DiffResponse = _DiffResponse(proto)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._proto, name)


def is_provider_server(module: ModuleType | None) -> bool:
    """Whether ``module`` is Pulumi's dynamic provider server (the names the extensions rely on)."""
    return module is not None and all(
        hasattr(module, n) for n in ("DynamicResourceProviderServicer", "_abort_with_traceback", "proto", "traceback"))


def install(module: ModuleType | None = None) -> bool:
    """Install the extensions into the server module (default: this process's ``__main__``, when it is one);
    idempotent. Returns whether the module is (now) extended."""
    main = module if module is not None else sys.modules.get("__main__")
    if main is None or not is_provider_server(main):
        return False
    if main.traceback is traceback:
        main.traceback = _CleanTraceback()  # type: ignore[attr-defined]
    if not isinstance(main.proto, _Proto):
        main.proto = _Proto(main.proto)  # type: ignore[attr-defined]
    return True


# ---------------------------------------------------------------------------- pulumi import
#: what a person does instead of ``pulumi import``, by resource type
_INSTEAD = {
    "DatabaseInstance": 'declare it in the program with adopt=True (DatabaseInstance("NAME", instance_name=..., '
                        "adopt=True)) and run `pulumi up`: that takes the existing instance over by name",
    "App": 'declare it in the program with adopt=True (App("NAME", app_name=..., source=..., instance=..., '
           "adopt=True)) and run `pulumi up`: that takes the existing app over by name",
    "RestoredInstance": "a restored instance is an instance: declare it as DatabaseInstance(..., adopt=True) in the "
                        "program and run `pulumi up`",
}
_INSTEAD_OTHER = ("declare it in the program and run `pulumi up` (it takes over what exists; instances and apps "
                  "made outside this stack are taken over with adopt=True)")


def import_refusal(urn: str) -> str:
    """The one line a ``pulumi import`` of the resource at ``urn`` fails with."""
    kind = urn.rsplit("::", 2)[-2].rsplit(":", 1)[-1] if urn.count("::") >= 2 else "resource"
    return (f"pulumi import cannot read a pulumi-dbos {kind} (a dynamic provider's resource keeps its provider in "
            f"its state, which an import does not have): {_INSTEAD.get(kind, _INSTEAD_OTHER)}")


def guard_read(servicer: Any) -> None:
    """Wrap the servicer's ``Read``: one without ``__provider`` in the state (an import) fails with
    :func:`import_refusal` as its gRPC status, the rest go on as before."""
    import grpc

    read: Callable[[Any, Any], Any] = servicer.Read

    def Read(request: Any, context: Any) -> Any:  # noqa: N802 - the gRPC method's name
        if "__provider" not in request.properties.fields:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, import_refusal(request.urn))
        return read(request, context)

    servicer.Read = Read


def serve() -> None:
    """Run Pulumi's dynamic provider server (``python -m pulumi.dynamic``) with the extensions installed
    before it serves its first call."""
    from pulumi.runtime.proto import provider_pb2_grpc

    add = provider_pb2_grpc.add_ResourceProviderServicer_to_server

    def add_extended(servicer: Any, server: Any) -> Any:
        install()  # the server module is ``__main__`` now (run_module below)
        guard_read(servicer)
        return add(servicer, server)

    provider_pb2_grpc.add_ResourceProviderServicer_to_server = add_extended
    runpy.run_module("pulumi.dynamic", run_name="__main__", alter_sys=True)
