"""What the processes Pulumi starts for every operation do first: load the parts of the pulumi SDK they never use
only if something does use them.

Every ``pulumi preview``/``up``/``refresh``/``destroy`` starts two Python processes: the program
(``pulumi-language-python-exec``) and the dynamic provider (``python -m pulumi_dbos.resources``). Importing
``pulumi`` costs each of them ~0.2 s of CPU, and ``pulumi/__init__.py`` imports ``pulumi.automation`` (the
Automation API: workspaces, the CLI wrapper) and ``pulumi.policy`` eagerly, which neither process uses: ~35 ms
of it (17%, measured on pulumi 3.260). Here those two modules are imported lazily, with the standard library's
:class:`importlib.util.LazyLoader`: the module object exists at once, its code runs on the first attribute
access, so a program that does use ``pulumi.automation`` gets it whole. Only these two entry points do this.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import sys
from collections.abc import Sequence
from types import ModuleType

#: the pulumi SDK's modules that neither a program nor the provider server uses
UNUSED_SDK_MODULES = frozenset({"pulumi.automation", "pulumi.policy"})


class _LazyFinder(importlib.abc.MetaPathFinder):
    def __init__(self, names: frozenset[str]) -> None:
        self.names = names

    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        if fullname not in self.names:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return None
        spec.loader = importlib.util.LazyLoader(spec.loader)
        return spec


def defer_unused_sdk_modules() -> None:
    """Install the lazy loading of :data:`UNUSED_SDK_MODULES` (before ``pulumi`` is imported; idempotent)."""
    if not any(isinstance(f, _LazyFinder) for f in sys.meta_path) and "pulumi" not in sys.modules:
        sys.meta_path.insert(0, _LazyFinder(UNUSED_SDK_MODULES))
