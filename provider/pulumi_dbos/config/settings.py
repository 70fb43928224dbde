"""The top-level ``dbos:*`` keys of a stack config, checked without pydantic.

Every program using the resources reads its engine settings from these keys (``resources._base``), so the
resources check them on the first registration of any program (``resources._stack``): an unknown key (a
typo such as ``dbos:engin``) must fail the preview, not silently fall back to the local engine. The example
program (``stacks/``) validates the whole config, sections included, with the pydantic models of
``config.stack``, which take these names and the cross-key rules from here.
"""

from __future__ import annotations

import difflib
from typing import Any

#: top-level ``dbos:*`` keys that are not sections: stack key -> resource field
ENGINE_SETTINGS = {"engine": "engine", "dataDir": "data_dir", "runAs": "run_as", "cloudDomain": "cloud_domain",
                   "replaceOnEngineChange": "replace_on_engine_change"}
#: top-level keys read by the provider process itself, never resource inputs (a token that rotates must not
#: show as a change of every resource): the ``dbos-cloud`` engine's bearer token (a secret), the CA
#: certificate it trusts (``pulumi-dbos serve``'s self-signed one), and the local engine's backup repository
#: (``config.backup_repo``: its S3 key and passphrase are secrets)
PROVIDER_SETTINGS = ("cloudToken", "cloudCaCert", "backupRepo")
#: the engines a stack may name
ENGINE_NAMES = ("local", "dbos-cloud")
#: the sections the example program turns into resources (the Specs' ``stack_section``s; a unit test keeps
#: this in step): known keys for every program, checked in depth only by the example program
SECTION_NAMES = ("instances", "restores", "linked", "apps")
#: settings that only the dbos-cloud engine uses, and those it never uses
CLOUD_ONLY = ("cloudDomain", "cloudToken", "cloudCaCert")
LOCAL_ONLY = ("dataDir", "runAs", "backupRepo")


def known_keys() -> list[str]:
    return [*ENGINE_SETTINGS, *PROVIDER_SETTINGS, *SECTION_NAMES]


def suggest(word: str, choices: list[str]) -> str:
    """``; did you mean 'x'?`` for the closest choice, else the list of choices."""
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    if not close:  # a case slip (`dbos:datadir`) is closer than difflib's ratio says
        close = [c for c in choices if c.lower() == word.lower()]
    return f"; did you mean {close[0]!r}?" if close else f" (known keys: {', '.join(choices)})"


def unknown_key_message(key: str) -> str:
    """Why a top-level key ``dbos:<key>`` is unknown, and what was probably meant."""
    section = key.split(".", 1)[0]
    if "." in key and section in SECTION_NAMES:
        return (f"unknown key: `dbos:{key}` was set as one flat key; nested keys need "
                f"`pulumi config set --path 'dbos:{key}' ...` (add --secret for a password)")
    return "unknown key" + suggest(key, known_keys())


def engine_problems(raw: dict[str, Any], engine: str | None = None) -> list[str]:
    """Rules across the engine settings: a known engine, cloud settings only with ``dbos-cloud``, local ones
    only with ``local``. ``engine``: the engine a program passes explicitly (it wins over ``dbos:engine``)."""
    problems: list[str] = []
    name = raw.get("engine", "local")
    if not isinstance(name, str):
        return problems  # a type error, reported by the caller's type check
    if name not in ENGINE_NAMES:
        problems.append(f"dbos:engine: {name!r} is not available (use one of: {', '.join(ENGINE_NAMES)})")
    effective = engine or name
    cloud_keys = [k for k in CLOUD_ONLY if raw.get(k) is not None]
    if effective == "local" and cloud_keys:
        problems.append(f"dbos:{cloud_keys[0]}: only used with `dbos:engine: dbos-cloud` (the engine is 'local'; "
                        "set `pulumi config set dbos:engine dbos-cloud`, or remove the key)")
    if effective == "dbos-cloud":
        problems += [f"dbos:{k}: not used by the dbos-cloud engine (instances live in DBOS Cloud)"
                     for k in LOCAL_ONLY if raw.get(k) is not None]
    return problems


def _type_problem(key: str, value: Any) -> str | None:
    if key == "replaceOnEngineChange":
        ok = isinstance(value, bool) or (isinstance(value, str) and value.lower() in ("true", "false"))
        return None if ok else f"dbos:{key}: must be true or false, not {type(value).__name__}"
    if key in SECTION_NAMES:
        return None if isinstance(value, dict) else (
            f"dbos:{key}: must be a map of entries by name (set them with `pulumi config set --path "
            f"'dbos:{key}.<name>.<key>' ...`), not {type(value).__name__}")
    if key == "backupRepo":
        from .backup_repo import parse

        try:
            parse(value)
        except ValueError as exc:
            return str(exc)
        return None
    if key == "cloudToken":
        return None if isinstance(value, str) else "dbos:cloudToken: must be a string (a secret)"
    return None if isinstance(value, str) and value else (
        f"dbos:{key}: must be a non-empty string, not {type(value).__name__ if value != '' else 'empty'}")


def settings_problems(raw: dict[str, Any], engine: str | None = None) -> list[str]:
    """Every problem of the top-level ``dbos:*`` keys (``raw``: key without ``dbos:`` -> parsed value), each
    with its config path: unknown keys (with the closest known one), wrong types, engine rules."""
    problems: list[str] = []
    for key, value in raw.items():
        if key not in known_keys():
            problems.append(f"dbos:{key}: {unknown_key_message(key)}")
        elif (p := _type_problem(key, value)) is not None:
            problems.append(p)
    return problems + engine_problems(raw, engine)
