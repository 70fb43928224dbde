"""The pydantic schema: field rules, one Spec per resource, and the stack config derived from them.

- ``rules``: every input rule, written once (used by ``check()`` and by the stack program);
- ``spec``: one model per resource whose field metadata drives everything about it;
- ``stack``: the ``dbos:*`` stack config model, cross-references, and the README reference table.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .rules import (
    MAX_RETENTION_HOURS,
    RESERVED_USERNAMES,
    UNKNOWN,
    check_app_name,
    check_db_name,
    check_name,
    check_password,
    check_port,
    check_restore_time,
    check_retention,
    check_username,
    is_unknown,
)
from .spec import (
    SPECS,
    AppDatabaseSpec,
    AppSpec,
    DatabaseInstanceSpec,
    LinkedInstanceSpec,
    Meta,
    RestoredInstanceSpec,
    Spec,
    input_model,
    meta_of,
    stack_model,
    validate,
)

if TYPE_CHECKING:  # loaded on first use (PEP 562): building the stack config models costs every provider
    # process and every program that does not read a stack config (a program of resources) ~0.1 s
    from .stack import (
        ENGINE_NAMES,
        ENGINE_SETTINGS,
        ENTRY_MODELS,
        PROVIDER_SETTINGS,
        SECTION_SPECS,
        SECTIONS,
        StackConfig,
        reference_markdown,
        restore_cycles,
        restore_order,
        spec_of_entry,
        stack_keys,
        validate_stack_config,
    )

_STACK_NAMES = frozenset({
    "ENGINE_NAMES", "ENGINE_SETTINGS", "ENTRY_MODELS", "PROVIDER_SETTINGS", "SECTION_SPECS", "SECTIONS", "StackConfig",
    "reference_markdown", "restore_cycles", "restore_order", "spec_of_entry", "stack_keys", "validate_stack_config"})


def __getattr__(name: str) -> Any:
    if name in _STACK_NAMES:
        from . import stack

        return getattr(stack, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ENGINE_NAMES", "ENGINE_SETTINGS", "PROVIDER_SETTINGS", "ENTRY_MODELS", "MAX_RETENTION_HOURS", "RESERVED_USERNAMES", "SECTIONS", "SECTION_SPECS",
    "SPECS",
    "UNKNOWN", "AppDatabaseSpec", "AppSpec", "DatabaseInstanceSpec", "LinkedInstanceSpec", "Meta", "RestoredInstanceSpec",
    "Spec", "StackConfig", "check_app_name", "check_db_name", "check_name", "check_password", "check_port",
    "check_restore_time", "check_retention", "check_username", "input_model", "is_unknown", "meta_of",
    "reference_markdown", "restore_cycles", "restore_order", "spec_of_entry", "stack_keys", "stack_model", "validate",
    "validate_stack_config",
]
