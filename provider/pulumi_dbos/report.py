"""``pulumi preview --json`` → Markdown for a pull-request comment.

Counts by operation, one row per changed resource (fields that change, why a
replace happens), a loud warning for every instance that would be deleted or
replaced (data loss) and for protected ones that will block the update, and the
provider's notices (an adopt: what it takes over, what `up` does to it).
A failed preview (error diagnostics) is headlined as such, each error its own
item, multi-line ones in a fenced block. Secret values are never printed
(``[secret]``), and a secret field is listed only when it may change; the
output stays under 64,000 characters (GitHub's comment limit is 65,536) by
summarising.
"""

from __future__ import annotations

import json
import re
from datetime import timedelta
from typing import Any

from .timeutil import utcnow

#: Pulumi's marker for a value not known until apply (``pulumi.runtime.rpc.UNKNOWN``)
UNKNOWN = "04da6b54-80e4-46f7-96ec-b56ff0331ba9"
MAX_CHARS = 64_000
MAX_WARNINGS = 20
MAX_ERRORS = 30
MAX_ERROR_CHARS = 3_000  # per error message
ERRORS_BUDGET = 24_000  # for the whole error section
INSTANCE_TYPES = ("dbos:DatabaseInstance", "dbos:RestoredInstance")
DESTRUCTIVE = {"delete", "replace", "create-replacement", "delete-replaced", "discard", "discard-replaced"}
SENSITIVE = {"password", "database_url", "admin_url", "owner_database_url", "owner_password", "__provider"}
HIDDEN = {"__provider", "owner", "status", "earliest_restorable_time", "latest_restorable_time"}
#: inputs a create or delete does not list: the engine's own settings (one per stack, not per resource;
#: a change of them is listed, it replaces) and what an app derives from its instance besides its name
INTERNAL = {"engine", "data_dir", "run_as", "cloud_domain", "replace_on_engine_change",
            "instance_host", "instance_port", "instance_user", "instance_password"}
#: types that are Pulumi's own bookkeeping, not something `pulumi up` makes for the reviewer to check
BOOKKEEPING = ("pulumi:pulumi:", "pulumi:providers:")
ICON = {"create": "🟢", "update": "🟡", "replace": "🔴", "delete": "🔴", "same": "⚪", "read": "🔵",
        "create-replacement": "🔴", "delete-replaced": "🔴", "refresh": "🔵", "import": "🔵"}
NOTICE = "pulumi-dbos:"  # how the provider's notices begin (resources._base.notice)
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]|<\{%[a-z]+%\}>")
_URL_PASSWORD = re.compile(r"(://[^:/@\s]*:)[^@\s]*@")


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


def _top_key(path: str) -> str:
    """The top-level property of a property path (``tags.a``, ``list[0]``, ``["a.b"].c``)."""
    if path.startswith('["'):
        end = path.find('"]')
        return path[2:end] if end > 0 else path
    return re.split(r"[.\[]", path, maxsplit=1)[0]


def diff_keys(step: dict[str, Any]) -> set[str] | None:
    """Top-level keys the engine says change: ``diffReasons`` (``diffs`` in the provider protocol) and the keys
    of ``detailedDiff``. None when the step carries neither (dynamic providers report only changed/unchanged:
    then only values that differ in the JSON are known to change)."""
    keys: set[str] = set()
    for field in ("diffReasons", "diffs"):
        value = step.get(field)
        if isinstance(value, list):
            keys |= {_top_key(str(k)) for k in value}
    detailed = step.get("detailedDiff")
    if isinstance(detailed, dict):
        keys |= {_top_key(str(k)) for k in detailed}
    return keys or None


def _is_secret(key: str, a: Any, b: Any) -> bool:
    return key in SENSITIVE or a == "[secret]" or b == "[secret]"


def changed_fields(step: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(fields whose value changes, secret fields that may change).

    pulumi-dbos's providers give each step a field-level diff (``detailedDiff``, the same fields
    `pulumi preview --diff` marks): then exactly those fields are listed. Steps without one (previews
    made by older versions) are read as before: secrets are ``[secret]`` on both sides of the JSON, so
    equal text says nothing about them; a secret is listed when the step's ``diffReasons`` name it, when
    its value differs in the JSON (e.g. only known after apply, or added/removed) or, without any diff in
    the step, when an update changes nothing visible (then a secret is what changes).
    """
    old = (step.get("oldState") or {}).get("inputs") or {}
    new = (step.get("newState") or {}).get("inputs") or {}
    if step.get("op") in ("create", "delete"):
        old, new = ({k: v for k, v in d.items() if k not in INTERNAL} for d in (old, new))
    detailed = step.get("detailedDiff")
    if isinstance(detailed, dict) and step.get("op") in ("update", "replace"):
        keys = sorted({_top_key(str(k)) for k in detailed} - HIDDEN)
        secrets = [k for k in keys if _is_secret(k, old.get(k), new.get(k))]
        return [k for k in keys if k not in secrets], secrets
    reported = diff_keys(step)
    changed: list[str] = []
    secret: list[str] = []
    hidden_secrets: list[str] = []  # "[secret]" on both sides: unknown whether they change
    for key in sorted(set(old) | set(new) | (reported or set())):
        if key in HIDDEN:
            continue
        a, b = old.get(key), new.get(key)
        if _is_secret(key, a, b):
            if step.get("op") not in ("update", "replace"):
                continue
            if a != b or (reported is not None and key in reported):
                secret.append(key)
            elif reported is None:
                hidden_secrets.append(key)
            continue
        if a != b or (reported is not None and key in reported):
            changed.append(key)
    if reported is None and step.get("op") == "update" and not changed and not secret \
            and _old_status(step) in (None, "available", "AVAILABLE"):
        secret = hidden_secrets
    return changed, secret


def _old_status(step: dict[str, Any]) -> Any:
    return ((step.get("oldState") or {}).get("outputs") or {}).get("status")


#: the status of a healthy resource of each type (others are not repaired by `up`: a linked server is not ours)
HEALTHY = {"DatabaseInstance": "available", "RestoredInstance": "available", "App": "AVAILABLE"}
#: what `pulumi up` does about a status other than the healthy one
REPAIR = {"stopped": "starts it", "credentials_invalid": "resets the password",
          "UNHEALTHY": "restarts the current version", "STOPPED": "starts it"}
#: why a bound app or app database updates, by the input it derives from its instance (or its own)
WHY = {
    "instance_name": "it moves to another instance (change-database-instance)",
    "instance_password": "its instance's password changes",
    "instance_port": "its instance moves to another port",
    "instance_host": "its instance's host changes",
    "instance_user": "its instance's user changes",
    "version": "its code changes (a new version is deployed)",
    "previous_version": "it deploys a stored version (previous_version)",
    "port": "it moves to another port (the same version, redeployed; its databases untouched)",
}


def repaired_status(step: dict[str, Any], kind: str) -> str | None:
    """The old status `pulumi up` repairs in this step, if any: the provider names ``status`` in its field-level
    diff; for a preview without one, a status other than the type's healthy one (compared exactly)."""
    if step.get("op") != "update":
        return None
    status = _old_status(step)
    detailed = step.get("detailedDiff")
    if isinstance(detailed, dict):
        return str(status) if "status" in detailed and status is not None else None
    healthy = HEALTHY.get(kind)
    return str(status) if healthy is not None and status not in (None, healthy) else None


def why(kind: str, fields: list[str]) -> str | None:
    """Why an app (or app database) updates, from the fields that change."""
    if kind not in ("App", "AppDatabase"):
        return None
    reasons = [WHY[f] for f in WHY if f in fields]
    return "; ".join(reasons) or None


def _clean(text: str) -> str:
    """A diagnostic as plain text: no colour codes, no URL passwords."""
    text = _URL_PASSWORD.sub(r"\1[secret]@", _ANSI.sub("", text)).replace("pulumi-python:dynamic/", "")
    return text.strip()


def _fence(text: str) -> str:
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    return "`" * max(3, longest + 1)


def _error_items(errors: list[dict[str, Any]]) -> list[str]:
    items: list[str] = []
    used = 0
    for i, d in enumerate(errors[:MAX_ERRORS], 1):
        msg = _clean(str(d.get("message", "")))
        if msg.startswith("error: "):
            msg = msg[len("error: "):]
        if len(msg) > MAX_ERROR_CHARS:
            msg = msg[:MAX_ERROR_CHARS] + "\n… (message truncated)"
        where = f"`{_name(str(d['urn']))}`" if d.get("urn") else "the program"
        lines = msg.splitlines() or [""]
        if len(lines) == 1 and len(lines[0]) <= 200 and "`" not in lines[0]:
            item = f"{i}. **{where}**: " + lines[0].replace("&", "&amp;").replace("<", "&lt;")
        else:
            fence = _fence(msg)
            body = "\n".join(f"   {line}" if line else "" for line in lines)
            item = f"{i}. **{where}**:\n\n   {fence}text\n{body}\n   {fence}"
        if used + len(item) > ERRORS_BUDGET:
            break
        items.append(item)
        used += len(item) + 1
    if len(items) < len(errors):
        items.append(f"… and **{len(errors) - len(items)} more** error(s) not shown; run `pulumi preview` for all.")
    return items


def _notes(preview: dict[str, Any]) -> list[str]:
    """The provider's notices of the preview (``resources._base.notice``: what an adopt takes over), each once."""
    notes: list[str] = []
    for d in preview.get("diagnostics") or []:
        msg = _clean(str(d.get("message", "")))
        if str(d.get("severity", "")).startswith("info") and msg.startswith(NOTICE):
            note = msg[len(NOTICE):].strip().replace("<", "&lt;")
            if note not in notes:
                notes.append(note)
    return notes[:MAX_WARNINGS]


def _counts(steps: Any, summary: dict[str, Any]) -> dict[str, Any]:
    """The change summary without the bookkeeping steps (the stack's own create, a StackReference's read)."""
    counts = dict(summary)
    for s in steps or []:
        op = s.get("op")
        if _bookkeeping(s) and op != "same" and isinstance(counts.get(op), int) and counts[op] > 0:
            counts[op] -= 1
    return counts


def _app_databases(kind: str, inputs: dict[str, Any]) -> str:
    """`` `a` `` or ``s `a`, `a_dbos_sys` `` (an App's system database goes too), for a data-loss warning."""
    db = inputs.get("app_db_name") or inputs.get("app_name")
    if not db or db == UNKNOWN:
        return "s" if kind.endswith("dbos:App") else ""
    return f"s `{db}`, `{db}_dbos_sys`" if kind.endswith("dbos:App") else f" `{db}`"


def _bookkeeping(step: dict[str, Any]) -> bool:
    """The stack itself, a StackReference, a provider: no row (their changes are outputs and reads)."""
    urn = str(step.get("urn", ""))
    t = str(((step.get("newState") or step.get("oldState") or {}).get("type")) or
            (urn.split("::")[-2] if urn.count("::") >= 3 else ""))
    return t.startswith(BOOKKEEPING)


def render(preview: dict[str, Any], title: str = "pulumi preview") -> str:
    steps = [s for s in preview.get("steps") or [] if s.get("op") != "same" and not _bookkeeping(s)]
    summary = _counts(preview.get("steps"), preview.get("changeSummary") or {})
    errors = [d for d in preview.get("diagnostics") or [] if d.get("severity") == "error"]
    out: list[str] = [f"## {title}", ""]

    counts = " · ".join(f"{ICON.get(op, '')} **{n}** {op}" for op, n in sorted(summary.items()) if n)
    if errors:
        out += [f"❌ **preview failed** — {len(errors)} error(s); nothing will be applied until they are fixed.", ""]
        out += ["\n\n".join(_error_items(errors)), ""]
        if counts or steps:
            out += ["Planned before the failure (incomplete): " + (counts or "no changes"), ""]
    else:
        out += [counts or "No changes.", ""]

    warnings: list[str] = []
    for s in steps:
        op, t, name = s.get("op", ""), _type(s), _name(s.get("urn", ""))
        old_inputs = (s.get("oldState") or {}).get("inputs") or {}
        if op in ("replace", "delete") and t.endswith(INSTANCE_TYPES):
            verb = "replaced (destroyed and created anew)" if op == "replace" else "deleted"
            old_outputs = (s.get("oldState") or {}).get("outputs") or {}
            kept = old_outputs.get("kept_after_destroy_hours")
            iname = old_outputs.get("instance_name") or old_inputs.get("instance_name") or name
            if isinstance(kept, int) and kept > 0:
                until = (utcnow() + timedelta(hours=kept)).strftime("%Y-%m-%d %H:%M UTC")
                warnings.append(
                    f"> [!CAUTION]\n> **Instance `{name}` will be {verb}.** Its backups stay in the backup "
                    f"repository for {kept} h: until about {until} it can be restored by name "
                    f"(`RestoredInstance(source=\"{iname}\")`, `pulumi-dbos db restore {iname} NEW`); after "
                    "that its data is gone.")
            else:
                warnings.append(f"> [!CAUTION]\n> **Data loss: instance `{name}` will be {verb}.** Every database "
                                "on it is lost unless you restore it first "
                                "(`dbos:restores` / `RestoredInstance`).")
            if old_inputs.get("deletion_protection") is True:
                warnings.append(f"> [!WARNING]\n> `{name}` has `deletion_protection=True`: `pulumi up` will "
                                "refuse this. Turn protection off in a separate change first if it is intended.")
        elif op in ("replace", "delete") and t.endswith(("dbos:AppDatabase", "dbos:App")) \
                and old_inputs.get("drop_on_delete"):
            dbs = _app_databases(t, old_inputs)
            verb = "replaced (deleted first)" if op == "replace" else "deleted"
            warnings.append(f"> [!CAUTION]\n> **Data loss: `{name}` will be {verb} and its database{dbs} dropped** "
                            "(`drop_on_delete=True`): its rows are lost unless you copy them first.")
    if len(warnings) > MAX_WARNINGS:
        rest = warnings[MAX_WARNINGS:]
        names = [w.split("`")[1] for w in rest if "`" in w]
        listed = ", ".join(f"`{n}`" for n in names[:200]) + (" …" if len(names) > 200 else "")
        warnings = warnings[:MAX_WARNINGS] + [
            f"> [!CAUTION]\n> **… and {len(rest)} more data-loss or protection warnings**, for: {listed}"]
    if warnings:
        out += ["\n\n".join(warnings), ""]
    notes = _notes(preview)
    if notes:
        out += ["> [!NOTE]\n" + "\n".join(f"> {n}" for n in notes), ""]

    if steps:
        out += ["| | resource | type | operation | changes |", "|---|---|---|---|---|"]
    rows: list[str] = []
    for s in steps:
        op, t, name = s.get("op", ""), _type(s), _name(s.get("urn", ""))
        changed, secret = changed_fields(s)
        old = (s.get("oldState") or {}).get("inputs") or {}
        new = (s.get("newState") or {}).get("inputs") or {}
        parts = [f"`{k}`: {_fmt(k, new.get(k))}" if op == "create" else
                 f"`{k}`: {_fmt(k, old.get(k))}" if op == "delete" else
                 f"`{k}`: {_fmt(k, old.get(k))} → {_fmt(k, new.get(k))}" for k in changed]
        kind = t.split(":")[-1]
        status = repaired_status(s, kind)
        if status is not None:
            parts.append(f"`status`: {_fmt('status', status)} (`pulumi up` {REPAIR.get(status, 'repairs it')})")
        if secret:
            parts.append("secrets: " + ", ".join(f"`{k}`" for k in secret) + " (values not shown)")
        reason = why(kind, changed + secret) if op == "update" else None
        if reason:
            parts.append(f"**why**: {reason}")
        if op == "replace":
            reasons = s.get("replaceReasons") or []
            parts.append("**replace because** " + (", ".join(f"`{r}`" for r in reasons) if reasons else
                                                   "an input it depends on is only known after apply"))
        if not parts and op == "update":
            continue  # only outputs move (a component's, known after apply): nothing for a reviewer
        rows.append(f"| {ICON.get(op, '')} | `{name}` | {kind} | {op} | {'<br>'.join(parts) or '—'} |")

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
