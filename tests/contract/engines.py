"""The engines the contract suite runs against, by name: each factory yields a fresh, empty engine and
removes everything it made afterwards, also when tests fail.

To add an engine (e.g. ``dbos-cloud`` against a local ``pulumi-dbos serve``), add its factory here.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager

from pulumi_dbos.engine import get_engine
from pulumi_dbos.engine.contract import Engine
from tests.conftest import _short_tmpdir, cleanup_data_dir


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


ENGINE_FACTORIES: dict[str, Callable[[], AbstractContextManager[Engine]]] = {
    "local": local_engine,
}
