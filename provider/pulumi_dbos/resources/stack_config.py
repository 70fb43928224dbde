"""The program's stack config as the resources see it: the ``dbos:*`` keys, read once and checked on the
first registration of any resource, so a typo'd ``dbos:engin`` fails the preview of every program (not
only the example's), naming the key and the closest known one."""

from __future__ import annotations

import json
import threading
from typing import Any

import pulumi

from ..config.settings import SECTION_NAMES, settings_problems

_lock = threading.Lock()
_checked = False


def _config_values() -> dict[str, Any]:
    """Every ``namespace:key`` of the program's config (secrets decrypted), as the SDK holds it."""
    values: dict[str, Any] = dict(pulumi.runtime.get_config_env())
    from pulumi.runtime import config as runtime_config

    held = getattr(runtime_config, "CONFIG", None)  # what the language host passed (the SDK's own map)
    if held is not None:
        values.update(held.get())
    return values


def raw_config() -> dict[str, Any]:
    """The ``dbos:*`` keys (without ``dbos:``): sections and other JSON values parsed, the rest as strings."""
    raw: dict[str, Any] = {}
    for full, value in _config_values().items():
        ns, _, key = str(full).partition(":")
        if ns != "dbos" or not key:
            continue
        if isinstance(value, str) and (key in SECTION_NAMES or value[:1] in ("{", "[")):
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                pass
        raw[key] = value
    return raw


def check_stack_config(engine: str | None = None) -> None:
    """Fail the program (once, before the first resource registers) when its top-level ``dbos:*`` keys have
    problems. ``engine``: the engine the resource was given explicitly (it wins over ``dbos:engine``)."""
    global _checked
    with _lock:
        if _checked:
            return
        _checked = True
    problems = settings_problems(raw_config(), engine if isinstance(engine, str) else None)
    if problems:
        raise pulumi.RunError(
            f"the stack config has {len(problems)} problem(s); nothing was changed:\n  " + "\n  ".join(problems)
            + "\n(set keys with `pulumi config set dbos:<key> VALUE`, remove one with `pulumi config rm dbos:<key>`)")
