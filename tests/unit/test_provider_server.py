"""The extensions of Pulumi's dynamic provider server (resources/_server.py) against the pinned Pulumi's
own server module: its ``Diff`` answers with our field-level diff, and its errors lose their traceback.

The server module (``pulumi/dynamic/__main__.py``) starts a gRPC server when imported, so it is loaded
here from its source without its final ``main()`` call. A Pulumi upgrade that renames what the
extensions rely on (the module's ``proto`` and ``traceback`` globals, ``DiffResponse(**fields)``) fails
these tests.
"""

from __future__ import annotations

import ast
import asyncio
import base64
import importlib.util
import types
from typing import Any

import dill
import pytest
from pulumi.runtime import rpc
from pulumi.runtime.proto import provider_pb2

from pulumi_dbos.errors import DbosError
from pulumi_dbos.resources import _server
from pulumi_dbos.resources.app import AppProvider
from pulumi_dbos.resources.instance import DatabaseInstanceProvider

pytestmark = pytest.mark.unit

PW, PW2 = "Server-test-pw1", "Server-test-pw2"


def server_module() -> types.ModuleType:
    spec = importlib.util.find_spec("pulumi.dynamic.__main__")
    assert spec is not None and spec.origin is not None
    tree = ast.parse(open(spec.origin).read())  # noqa: PTH123, SIM115
    last = tree.body[-1]
    assert isinstance(last, ast.Expr) and isinstance(last.value, ast.Call) and ast.unparse(last) == "main()", \
        "pulumi.dynamic.__main__ no longer ends with main(): update this test and resources/_server.py"
    tree.body.pop()
    module = types.ModuleType("pulumi_dynamic_server_under_test")
    exec(compile(tree, spec.origin, "exec"), module.__dict__)  # noqa: S102
    module.configure = lambda settings: None  # type: ignore[attr-defined]  # leave this process's settings alone
    return module


class Aborted(Exception):
    pass


class Context:
    def abort(self, code: Any, details: str) -> None:
        raise Aborted(details)


def struct(props: dict[str, Any]) -> Any:
    return asyncio.run(rpc.serialize_properties(props, {}))


def diff(provider: Any, olds: dict[str, Any], news: dict[str, Any]) -> provider_pb2.DiffResponse:
    module = server_module()
    assert _server.install(module)
    key = base64.b64encode(dill.dumps(provider)).decode()
    olds, news = {**olds, "__provider": key}, {**news, "__provider": key}
    req = provider_pb2.DiffRequest(id="x", urn="urn:pulumi:s::p::t::x", olds=struct(olds), news=struct(news))
    return module.DynamicResourceProviderServicer().Diff(req, Context())  # type: ignore[no-any-return]


def instance(**kw: Any) -> dict[str, Any]:
    base = {"engine": "local", "data_dir": "/nonexistent", "run_as": None, "cloud_domain": None,
            "replace_on_engine_change": False, "owner": "p/s/x#1", "instance_name": "srv_db", "username": "srv_user",
            "password": PW, "retention_hours": 24, "deletion_protection": False, "port": None, "adopt": False}
    return {**base, **kw}


def kinds(resp: provider_pb2.DiffResponse) -> dict[str, str]:
    names = {v: k.lower().replace("_", "-") for k, v in provider_pb2.PropertyDiff.Kind.items()}
    return {k: names[v.kind] for k, v in resp.detailedDiff.items()}


def test_a_password_rotation_is_one_update_of_password() -> None:
    olds = {**instance(), "hostname": "127.0.0.1", "port": 54320, "status": "available"}  # recorded outputs
    resp = diff(DatabaseInstanceProvider(), olds, instance(password=PW2))
    assert resp.changes == provider_pb2.DiffResponse.DIFF_SOME
    assert resp.hasDetailedDiff and kinds(resp) == {"password": "update"}
    assert list(resp.diffs) == ["password"] and list(resp.replaces) == []


def test_a_replace_names_its_field_as_replace_and_others_as_update() -> None:
    olds = {**instance(), "hostname": "127.0.0.1", "port": 54320, "status": "available"}
    resp = diff(DatabaseInstanceProvider(), olds, instance(username="other_user", retention_hours=48))
    assert kinds(resp) == {"username": "update-replace", "retention_hours": "update"}
    assert list(resp.replaces) == ["username"] and resp.deleteBeforeReplace


def test_no_change_is_an_empty_detailed_diff_and_an_unset_port_is_no_change() -> None:
    olds = {**instance(), "hostname": "127.0.0.1", "port": 54320, "status": "available"}
    resp = diff(DatabaseInstanceProvider(), olds, instance())
    assert resp.changes == provider_pb2.DiffResponse.DIFF_NONE
    assert resp.hasDetailedDiff and kinds(resp) == {}


def test_a_bound_apps_derived_password_is_named() -> None:
    app = {"engine": "local", "data_dir": "/nonexistent", "run_as": None, "cloud_domain": None,
           "replace_on_engine_change": False, "owner": "p/s/g#1", "instance_name": "srv_db",
           "instance_host": "127.0.0.1", "instance_port": 54320, "instance_user": "srv_user",
           "instance_password": PW, "app_name": "greet", "source": "/src", "app_db_name": "greet",
           "previous_version": None, "env": {}, "port": None, "drop_on_delete": False, "version": "v1", "adopt": False}
    olds = {**app, "status": "AVAILABLE", "app_url": "http://127.0.0.1:1"}
    resp = diff(AppProvider(), olds, {**app, "instance_password": PW2})
    assert kinds(resp) == {"instance_password": "update"}


def test_errors_of_ours_lose_their_traceback() -> None:
    module = server_module()
    assert _server.install(module)
    try:
        raise DbosError("it broke", hint="do this")
    except DbosError:
        text = module.traceback.format_exc()
    assert text == str(DbosError("it broke", hint="do this")) and "Traceback" not in text


def test_install_leaves_other_main_modules_alone() -> None:
    assert not _server.install(types.ModuleType("__main__"))


def test_a_read_without_its_provider_is_refused_with_one_line_and_others_go_on() -> None:
    """`pulumi import` (issue 32): the server's own ``Read`` with no ``__provider`` in the state (all an import
    has) raised ``KeyError: '__provider'``; guarded, it aborts with one line naming ``adopt=True``. A ``Read``
    with its provider (a refresh) reaches the server's own as before."""
    module = server_module()
    servicer = module.DynamicResourceProviderServicer()
    with pytest.raises(Aborted, match="KeyError: '__provider'"):  # the server as Pulumi ships it: a traceback
        servicer.Read(provider_pb2.ReadRequest(id="hello_db", urn="urn:x"), Context())
    _server.guard_read(servicer)
    urn = "urn:pulumi:dev::proj::pulumi-python:dynamic/dbos:DatabaseInstance::other"
    with pytest.raises(Aborted) as err:
        servicer.Read(provider_pb2.ReadRequest(id="hello_db", urn=urn), Context())
    line = str(err.value)
    assert "\n" not in line and "pulumi-dbos DatabaseInstance" in line and "adopt=True" in line
    seen: list[str] = []
    servicer_read = servicer.Read

    def fake_read(request: Any, context: Any) -> str:
        seen.append(request.id)
        return "read"

    servicer.Read = fake_read
    _server.guard_read(servicer)
    props = struct({"__provider": "x", "instance_name": "hello_db"})
    assert servicer.Read(provider_pb2.ReadRequest(id="hello_db", urn=urn, properties=props), Context()) == "read"
    assert seen == ["hello_db"] and servicer_read is not None
