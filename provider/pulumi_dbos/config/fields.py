"""What the Pulumi glue needs of each resource's Spec, without pydantic.

The Specs (``config/spec.py``) are the one description of every resource; the field lists the
resource classes and providers use (inputs, defaults, outputs, secrets, replace and diff keys,
arguments) are derived from them ahead of time into ``fields_table.py`` by
``python -m pulumi_dbos.config.fields``, and ``tests/unit/test_specs.py`` fails when that file is not
what the Specs give. So a program of resources, and a provider process answering a preview in which
nothing changed, start without pydantic and the Spec models (~0.2 s each, the larger part of a no-op
preview's cost); a ``check()`` of changed inputs loads them to validate.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from .spec import Spec

# Pulumi's marker for a value not known until apply (pulumi.runtime.rpc.UNKNOWN).
UNKNOWN = "04da6b54-80e4-46f7-96ec-b56ff0331ba9"


def is_unknown(v: Any) -> bool:
    """A value known only after apply: Pulumi's sentinel string, or the SDK's ``Unknown`` object."""
    if isinstance(v, str):
        return v == UNKNOWN
    return type(v).__name__ == "Unknown" and type(v).__module__.startswith("pulumi")


@dataclass(frozen=True)
class Fields:
    """One resource's field lists, as its Spec gives them (see the module docstring)."""

    spec: str  #: the Spec's class name in ``config.spec``
    name_field: str
    is_instance: bool
    inputs: tuple[str, ...]  #: the provider's inputs, in the Spec's order
    defaults: tuple[tuple[str, Any], ...]  #: (input, default) for the inputs whose default is not None
    outputs: tuple[str, ...]
    secrets: tuple[str, ...]
    replace_keys: tuple[str, ...]
    diff_keys: tuple[str, ...]
    arguments: tuple[str, ...]  #: what the resource class takes
    paths: tuple[str, ...]  #: fields holding paths

    engine_keys: ClassVar[tuple[str, ...]] = ("engine", "data_dir", "run_as", "cloud_domain")

    def default(self, name: str) -> Any:
        """``name``'s default (a copy: defaults such as ``{}`` are never shared), None when it has none."""
        for key, value in self.defaults:
            if key == name:
                return copy.deepcopy(value)
        return None

    def model(self) -> type[Spec]:
        """The Spec itself (loads pydantic): for validation."""
        from . import spec

        return getattr(spec, self.spec)  # type: ignore[no-any-return]


def fields_of(resource: str) -> Fields:
    """The field lists of ``resource`` (``DatabaseInstance``, ``RestoredInstance``, ...)."""
    from .fields_table import TABLE

    return TABLE[resource]


if __name__ == "__main__":  # python -m pulumi_dbos.config.fields: regenerate fields_table.py from the Specs
    from .derive import write_fields_table

    print(f"wrote {write_fields_table()}")
