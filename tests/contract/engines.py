"""The engines the contract suite runs against, by name: each factory yields a fresh, empty engine and
removes everything it made afterwards, also when tests fail.

``dbos-cloud`` runs against a real ``pulumi-dbos serve`` (its own process, data dir and TLS
certificate) with a token of an organization of its own per run. To add an engine, add its factory here.
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager

from pulumi_dbos.engine import get_engine
from pulumi_dbos.engine.contract import Engine
from tests.conftest import _short_tmpdir, cleanup_data_dir
from tests.support.serve import running_serve


@contextlib.contextmanager
def local_engine() -> Iterator[Engine]:
    """The embedded engine in a throwaway data dir (like tests/conftest.py's ``tmp_root``/``data_dir``)."""
    root = _short_tmpdir("pc")
    data_dir = root / "d"
    try:
        yield get_engine("local", str(data_dir), None)
    finally:
        cleanup_data_dir(data_dir)
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def dbos_cloud_engine() -> Iterator[Engine]:
    """The dbos-cloud engine against a local ``pulumi-dbos serve``, in a fresh organization; the serve and
    everything it made are removed afterwards."""
    with running_serve() as serve:
        token = serve.token(org=f"ct{secrets.token_hex(3)}", user="contract")
        engine = get_engine("dbos-cloud", domain=serve.domain, token=token, ca_cert=str(serve.ca_cert))
        try:
            yield engine
        finally:
            close = getattr(engine, "close", None)
            if close is not None:
                close()


ENGINE_FACTORIES: dict[str, Callable[[], AbstractContextManager[Engine]]] = {
    "local": local_engine,
    "dbos-cloud": dbos_cloud_engine,
}
