"""Shared glue for the dynamic providers: engine selection, outputs, diff helpers.

Provider classes hold no state on ``self`` (they are pickled into the state by
reference) and open any connection inside each method.
"""

from __future__ import annotations

from typing import Any

import pulumi
from pulumi.dynamic import CheckFailure, CheckResult, DiffResult

from ..config import UNKNOWN
from ..engine import LocalEngine, check_data_dir, default_data_dir, default_run_as, get_engine
from ..errors import DbosError as DbosError
from ..resources_util import url_for

ENGINE_KEYS = ("engine", "data_dir", "run_as")  # "owner" is informative: never diffed


def engine_for(props: dict[str, Any]) -> LocalEngine:
    return get_engine(props.get("engine") or "local", props.get("data_dir"), props.get("run_as"))


def engine_defaults(engine: str | None, data_dir: str | None, run_as: str | None) -> dict[str, Any]:
    """Engine inputs for a resource: explicit arguments, else stack config ``dbos:*``, else defaults."""
    cfg = pulumi.Config("dbos")
    return {
        "engine": engine or cfg.get("engine") or "local",
        "data_dir": str(data_dir or cfg.get("dataDir") or default_data_dir()),
        "run_as": run_as or cfg.get("runAs") or default_run_as(),
    }


def owner(resource_name: str) -> str:
    """Who manages an instance: recorded in the engine's catalog at create."""
    return f"{pulumi.get_project()}/{pulumi.get_stack()}/{resource_name}"


def check_engine(news: dict[str, Any]) -> list[CheckFailure]:
    from pathlib import Path

    dd = news.get("data_dir")
    if not dd or dd == UNKNOWN:
        return []
    run_as = news.get("run_as")
    import os

    problems = check_data_dir(Path(str(dd)).expanduser(), run_as if os.geteuid() == 0 else None)
    return [CheckFailure("data_dir", p) for p in problems]


def as_int(v: Any) -> int | None:
    """Numbers cross the Pulumi wire as floats."""
    return None if v is None else int(v)


def check_result(inputs: dict[str, Any], failures: list[CheckFailure]) -> CheckResult:
    """The engine prints a failure's property *value* next to it (secrets included), so failures are
    reported without a property, the field named in the reason instead."""
    out = []
    for f in failures:
        reason = f.reason if not f.property or f.reason.startswith(f.property) else f"{f.property}: {f.reason}"
        out.append(CheckFailure("", reason))
    return CheckResult(inputs, out)


def database_url(username: str, password: str, host: str, port: int, dbname: str = "postgres") -> str:
    return url_for(username, password, host, port, dbname)


def is_unknown(v: Any) -> bool:
    return isinstance(v, str) and v == UNKNOWN


def diff_inputs(olds: dict[str, Any], news: dict[str, Any], keys: tuple[str, ...],
                replace_keys: tuple[str, ...]) -> tuple[list[str], list[str]]:
    # ``olds`` is the state (outputs): an unset ``port`` means "whatever was allocated".
    changes = [k for k in keys if olds.get(k) != news.get(k) and not (k == "port" and news.get(k) is None)]
    replaces = [k for k in changes if k in replace_keys]
    return changes, replaces


def make_diff(olds: dict[str, Any], news: dict[str, Any], keys: tuple[str, ...],
              replace_keys: tuple[str, ...]) -> DiffResult:
    changes, replaces = diff_inputs(olds, news, keys, replace_keys)
    if olds.get("status") not in (None, "available") and not replaces:
        changes.append("status")  # stopped out of band: the next `up` starts it
    same_name = olds.get("instance_name") == news.get("instance_name")
    return DiffResult(
        changes=bool(changes),
        replaces=replaces,
        stables=[],
        delete_before_replace=bool(replaces) and same_name,
    )


def protection_failure(olds: dict[str, Any], news: dict[str, Any], replace_keys: tuple[str, ...]) -> list[CheckFailure]:
    """A replace of a protected instance would delete it: refuse at preview."""
    if not olds or not olds.get("deletion_protection"):
        return []
    changing = [k for k in replace_keys if k in olds and olds.get(k) != news.get(k) and not is_unknown(news.get(k))]
    if not changing:
        return []
    return [CheckFailure(
        changing[0],
        f"changing {', '.join(changing)} replaces instance {olds.get('instance_name')!r}, which has "
        "deletion_protection=True: first set deletion_protection=False and run `pulumi up`, then make this change")]


def protected_delete_error(name: str) -> DbosError:
    return DbosError(
        f"instance {name!r} has deletion_protection=True and was not deleted",
        hint="set deletion_protection=False (in code or `dbos:instances.<name>.deletionProtection: false`), "
        "run `pulumi up`, then run `pulumi destroy` (or remove the resource) again",
    )
