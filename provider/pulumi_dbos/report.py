"""``pulumi preview --json`` → Markdown for a pull-request comment.

Counts by operation, one row per changed resource (fields that change, why a
replace happens), a loud warning for every instance that would be deleted or
replaced (data loss) and for protected ones that will block the update.
Secret values are never printed (``[secret]``); the output stays under
64,000 characters (GitHub's comment limit is 65,536) by summarising.
"""

from __future__ import annotations

import json
from typing import Any

from .config import UNKNOWN

MAX_CHARS = 64_000
MAX_WARNINGS = 20
INSTANCE_TYPES = ("dbos:DatabaseInstance", "dbos:RestoredInstance")
DESTRUCTIVE = {"delete", "replace", "create-replacement", "delete-replaced", "discard", "discard-replaced"}
SENSITIVE = {"password", "database_url", "admin_url", "owner_database_url", "owner_password", "__provider"}
HIDDEN = {"__provider", "owner", "status", "earliest_restorable_time", "latest_restorable_time"}
ICON = {"create": "🟢", "update": "🟡", "replace": "🔴", "delete": "🔴", "same": "⚪", "read": "🔵",
        "create-replacement": "🔴", "delete-replaced": "🔴", "refresh": "🔵", "import": "🔵"}


def _name(urn: str) -> str:
    return urn.rsplit("::", 1)[-1]


def _type(step: dict[str, Any]) -> str:
    state = step.get("newState") or step.get("oldState") or {}
    urn = str(step.get("urn", ""))
    t = str(state.get("type") or (urn.split("::")[-2] if urn.count("::") >= 3 else ""))
    return t.replace("pulumi-python:dynamic/", "")


def _fmt(key: str, value: Any) -> str:
    if key in SENSITIVE or value == "[secret]":
        return "[secret]"
    if value == UNKNOWN:
        return "(known after apply)"
    text = json.dumps(value) if not isinstance(value, str) else value
    text = text.replace("|", "\\|").replace("\n", " ")
    return text if len(text) <= 60 else text[:57] + "..."


def changed_fields(step: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(fields whose value changes, secret fields that may change) from old vs new inputs."""
    old = (step.get("oldState") or {}).get("inputs") or {}
    new = (step.get("newState") or {}).get("inputs") or {}
    changed, secret = [], []
    for key in sorted(set(old) | set(new)):
        if key in HIDDEN:
            continue
        a, b = old.get(key), new.get(key)
        if a == "[secret]" or b == "[secret]" or key in SENSITIVE:
            if step.get("op") in ("update", "replace") and (a != b or b == UNKNOWN or a == "[secret]"):
                secret.append(key)
            continue
        if a != b:
            changed.append(key)
    return changed, secret


def render(preview: dict[str, Any], title: str = "pulumi preview") -> str:
    steps = [s for s in preview.get("steps") or [] if s.get("op") != "same"]
    summary = preview.get("changeSummary") or {}
    out: list[str] = [f"## {title}", ""]

    counts = " · ".join(f"{ICON.get(op, '')} **{n}** {op}" for op, n in sorted(summary.items()) if n)
    out += [counts or "No changes.", ""]

    warnings: list[str] = []
    for s in steps:
        op, t, name = s.get("op", ""), _type(s), _name(s.get("urn", ""))
        old_inputs = (s.get("oldState") or {}).get("inputs") or {}
        if op in ("replace", "delete") and t.endswith(INSTANCE_TYPES):
            verb = "replaced (destroyed and created anew)" if op == "replace" else "deleted"
            warnings.append(f"> [!CAUTION]\n> **Data loss: instance `{name}` will be {verb}.** Every database "
                            "on it is lost unless you restore it first "
                            "(`dbos:restores` / `RestoredInstance`).")
            if old_inputs.get("deletion_protection") is True:
                warnings.append(f"> [!WARNING]\n> `{name}` has `deletion_protection=True`: `pulumi up` will "
                                "refuse this. Turn protection off in a separate change first if it is intended.")
        elif op in ("replace", "delete") and t.endswith("dbos:AppDatabase") and old_inputs.get("drop_on_delete"):
            warnings.append(f"> [!CAUTION]\n> **Data loss: app database of `{name}` will be dropped** "
                            "(`drop_on_delete=True`).")
    if len(warnings) > MAX_WARNINGS:
        rest = warnings[MAX_WARNINGS:]
        names = [w.split("`")[1] for w in rest if "`" in w]
        listed = ", ".join(f"`{n}`" for n in names[:200]) + (" …" if len(names) > 200 else "")
        warnings = warnings[:MAX_WARNINGS] + [
            f"> [!CAUTION]\n> **… and {len(rest)} more data-loss or protection warnings**, for: {listed}"]
    if warnings:
        out += ["\n\n".join(warnings), ""]

    diags = [d for d in preview.get("diagnostics") or [] if d.get("severity") == "error"]
    for d in diags[:20]:
        msg = str(d.get("message", "")).strip().replace("\n", " ")
        out += [f"> [!WARNING]\n> **error** {('`' + _name(d['urn']) + '`: ') if d.get('urn') else ''}"
                f"{msg[:500]}", ""]

    if steps:
        out += ["| | resource | type | operation | changes |", "|---|---|---|---|---|"]
    rows: list[str] = []
    for s in steps:
        op, t, name = s.get("op", ""), _type(s), _name(s.get("urn", ""))
        changed, secret = changed_fields(s)
        old = (s.get("oldState") or {}).get("inputs") or {}
        new = (s.get("newState") or {}).get("inputs") or {}
        parts = [f"`{k}`: {_fmt(k, old.get(k))} → {_fmt(k, new.get(k))}" if op not in ("create", "delete")
                 else f"`{k}`" for k in changed]
        if secret:
            parts.append("secrets: " + ", ".join(f"`{k}`" for k in secret) + " (values not shown)")
        if op == "replace":
            reasons = s.get("replaceReasons") or []
            parts.append("**replace because** " + (", ".join(f"`{r}`" for r in reasons) if reasons else
                                                   "an input it depends on is only known after apply"))
        rows.append(f"| {ICON.get(op, '')} | `{name}` | {t.split(':')[-1]} | {op} | {'<br>'.join(parts) or '—'} |")

    body = "\n".join(out)
    budget = MAX_CHARS - len(body) - 400
    shown = 0
    for r in rows:
        if budget - len(r) - 1 < 0:
            break
        body += "\n" + r
        budget -= len(r) + 1
        shown += 1
    if shown < len(rows):
        rest = rows[shown:]
        body += f"\n\n… and **{len(rest)} more** changed resources not listed (comment size limit)."
    footer = "\n\n<sub>secrets are shown as [secret]; generated by `pulumi-dbos preview-report`</sub>\n"
    if len(body) + len(footer) > MAX_CHARS:  # safety net
        body = body[: MAX_CHARS - len(footer) - 40] + "\n\n… (truncated)"
    return body + footer


def render_text(text: str, title: str = "pulumi preview") -> str:
    """Render from the raw text of ``pulumi preview --json`` (tolerates leading non-JSON lines)."""
    start = text.find("{")
    if start < 0:
        raise ValueError("no JSON object in the input: pipe `pulumi preview --json` into preview-report")
    return render(json.loads(text[start:]), title)
