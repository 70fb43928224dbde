"""The pydantic schema: field rules, one Spec per resource, and the stack config derived from them.

- ``fields``: what the resources need of each Spec, generated ahead of time (no pydantic);
- ``rules``: every input rule, written once (used by ``check()`` and by the stack program);
- ``spec``: one model per resource whose field metadata drives everything about it;
- ``derive``: what is derived from the Specs (validation models, field lists, change rows);
- ``settings``: the top-level ``dbos:*`` keys, checked for every program (no pydantic);
- ``stack``: the ``dbos:*`` stack config model, cross-references, and the README reference table.

Every name loads its module on first use (PEP 562): a program of resources, and a provider process
answering a preview in which nothing changed, never load pydantic (see ``fields``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .derive import input_model, stack_model, validate
    from .fields import UNKNOWN, Fields, fields_of, is_unknown
    from .rules import (
        MAX_RETENTION_HOURS,
        RESERVED_USERNAMES,
        check_app_name,
        check_db_name,
        check_name,
        check_password,
        check_port,
        check_restore_time,
        check_retention,
        check_username,
    )
    from .settings import ENGINE_NAMES, ENGINE_SETTINGS, PROVIDER_SETTINGS, settings_problems
    from .spec import (
        SPECS,
        AppDatabaseSpec,
        AppSpec,
        DatabaseInstanceSpec,
        LinkedInstanceSpec,
        Meta,
        RestoredInstanceSpec,
        Spec,
        meta_of,
    )
    from .stack import (
        ENTRY_MODELS,
        SECTION_SPECS,
        SECTIONS,
        StackConfig,
        changes_markdown,
        reference_markdown,
        restore_cycles,
        restore_order,
        spec_of_entry,
        stack_keys,
        validate_stack_config,
    )

_MODULES = {
    "fields": ("UNKNOWN", "Fields", "fields_of", "is_unknown"),
    "rules": ("MAX_RETENTION_HOURS", "RESERVED_USERNAMES", "check_app_name", "check_db_name", "check_name",
              "check_password", "check_port", "check_restore_time", "check_retention", "check_username"),
    "spec": ("SPECS", "AppDatabaseSpec", "AppSpec", "DatabaseInstanceSpec", "LinkedInstanceSpec", "Meta",
             "RestoredInstanceSpec", "Spec", "meta_of"),
    "derive": ("input_model", "stack_model", "validate"),
    "settings": ("ENGINE_NAMES", "ENGINE_SETTINGS", "PROVIDER_SETTINGS", "settings_problems"),
    "stack": ("ENTRY_MODELS", "SECTION_SPECS", "SECTIONS",
              "StackConfig", "changes_markdown", "reference_markdown", "restore_cycles", "restore_order",
              "spec_of_entry", "stack_keys",
              "validate_stack_config"),
}
_WHERE = {name: module for module, names in _MODULES.items() for name in names}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_WHERE})


__all__ = [
    "AppDatabaseSpec", "AppSpec", "DatabaseInstanceSpec", "ENGINE_NAMES", "ENGINE_SETTINGS", "ENTRY_MODELS",
    "Fields", "LinkedInstanceSpec", "MAX_RETENTION_HOURS", "Meta", "PROVIDER_SETTINGS",
    "RESERVED_USERNAMES", "RestoredInstanceSpec", "SECTIONS", "SECTION_SPECS", "SPECS", "Spec",
    "StackConfig", "UNKNOWN", "check_app_name", "check_db_name", "check_name", "check_password",
    "changes_markdown", "check_port", "check_restore_time", "check_retention", "check_username", "fields_of",
    "input_model",
    "is_unknown", "meta_of", "reference_markdown", "restore_cycles", "restore_order", "settings_problems",
    "spec_of_entry", "stack_keys", "stack_model", "validate", "validate_stack_config",
]
