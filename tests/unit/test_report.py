"""preview-report rendered from real `pulumi preview --json` outputs (captured by the e2e tests)."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest

from pulumi_dbos.report import MAX_CHARS, render, render_text
from pulumi_dbos.report import UNKNOWN as UNK

FIX = Path(__file__).parent / "fixtures"
SECRETS = ("dev-Passw0rd-throwaway", "stg-Passw0rd", "Fixture-Passw0rd-one", "Fixture-Passw0rd-two", "postgresql://")
# the secret fields each fixture's report lists per resource (every fixture must be here)
EXPECTED_SECRETS: dict[str, dict[str, list[str]]] = {
    "preview_dev_create.json": {},
    "preview_dev_replace.json": {"shop": ["admin_url"]},  # old admin_url [secret] -> known after apply
    "preview_staging_replace.json": {"stg_shop": ["admin_url"]},
    "preview_check_failure.json": {},
    "preview_stack_config_failure.json": {},
    "preview_retention_update.json": {},
    "preview_password_update.json": {"fx_db": ["password"]},
    "preview_rotation_detailed.json": {"a": ["password"], "greet": ["instance_password"]},
}


def load(name: str) -> dict:
    return json.loads((FIX / name).read_text())


def test_create_counts() -> None:
    md = render(load("preview_dev_create.json"))
    assert "**2** create" in md  # the two resources; the stack itself is not counted (issue 32)
    assert "Data loss" not in md
    assert "`dev_db`" in md and "`shop`" in md
    # a create's row says what it creates: fields with their values (secrets never)
    row = next(line for line in md.splitlines() if "`dev_db`" in line and "| create |" in line)
    assert "`username`: dbos_user" in row and "`retention_hours`: 24" in row, row


def without_kept_hours(preview: dict) -> dict:
    """The preview as an engine that keeps no backups after a destroy reports it (dbos-cloud, older state)."""
    for step in preview.get("steps") or []:
        ((step.get("oldState") or {}).get("outputs") or {}).pop("kept_after_destroy_hours", None)
    return preview


def test_replace_has_data_loss_warning_and_reasons() -> None:
    md = render(without_kept_hours(load("preview_dev_replace.json")))
    assert "Data loss: instance `dev_db` will be replaced" in md
    assert "**replace because** `username`" in md
    assert "`username`: dbos_user → other_user" in md
    assert "**1** replace" in md


def test_staging_replace_and_protected_block() -> None:
    data = load("preview_staging_replace.json")
    md = render(data)
    assert md.count("[!CAUTION]") == 2
    # mark the old instance protected: the report says the update will be refused
    step = next(s for s in data["steps"] if s["urn"].endswith("::stg_db"))
    step["oldState"]["inputs"]["deletion_protection"] = True
    assert "will refuse this" in render(data)


def secrets_listed(md: str) -> dict[str, list[str]]:
    """resource -> the secret fields its table row lists."""
    out: dict[str, list[str]] = {}
    for row in md.splitlines():
        m = re.match(r"\| [^|]* \| `([^`]+)` \|.*secrets: ((?:`[^`]+`(?:, )?)+) \(values not shown\)", row)
        if m:
            out[m.group(1)] = re.findall(r"`([^`]+)`", m.group(2))
    return out


def test_no_secret_values_in_any_report() -> None:
    fixtures = sorted(f.name for f in FIX.glob("*.json"))
    assert fixtures == sorted(EXPECTED_SECRETS)
    for name in fixtures:
        md = render(load(name))
        for s in SECRETS:
            assert s not in md, (name, s)
        assert secrets_listed(md) == EXPECTED_SECRETS[name], name


# ---------------------------------------------------------------------- secrets: only when they may change
def test_retention_only_update_lists_no_secret() -> None:
    md = render(load("preview_retention_update.json"))
    assert "| 🟡 | `fx_db` | DatabaseInstance | update | `retention_hours`: 24 → 48 |" in md
    assert "secrets:" not in md and "password" not in md


def test_password_only_update_lists_the_password() -> None:
    md = render(load("preview_password_update.json"))
    assert "| 🟡 | `fx_db` | DatabaseInstance | update | secrets: `password` (values not shown) |" in md


def _step(data: dict[str, Any], name: str) -> dict[str, Any]:
    return next(s for s in data["steps"] if s["urn"].endswith("::" + name))


@pytest.mark.parametrize("field", ["diffReasons", "diffs"])
def test_diff_keys_in_the_step_decide_which_secrets_change(field: str) -> None:
    # what a provider that reports its changed keys produces: the step names the keys
    data = load("preview_retention_update.json")
    _step(data, "fx_db")[field] = ["retention_hours", "password"]
    assert secrets_listed(render(data)) == {"fx_db": ["password"]}
    _step(data, "fx_db")[field] = ["retention_hours"]
    assert secrets_listed(render(data)) == {}


def test_detailed_diff_decides_which_secrets_change() -> None:
    data = load("preview_password_update.json")
    _step(data, "fx_db")["detailedDiff"] = {"retention_hours": {"kind": "update", "inputDiff": True}}
    assert secrets_listed(render(data)) == {}  # the step says only retention changes
    _step(data, "fx_db")["detailedDiff"] = {"password": {"kind": "update", "inputDiff": True}}
    assert secrets_listed(render(data)) == {"fx_db": ["password"]}


def test_stopped_instance_update_is_explained_not_blamed_on_secrets() -> None:
    data = load("preview_password_update.json")
    step = _step(data, "fx_db")
    step["oldState"]["outputs"]["status"] = "stopped"
    md = render(data)
    assert "`status`: stopped (`pulumi up` starts it)" in md and "secrets:" not in md


# ---------------------------------------------------------------------- failed previews
def test_failed_preview_headlines_the_failure() -> None:
    md = render(load("preview_check_failure.json"))
    lines = md.splitlines()
    assert lines[2] == "❌ **preview failed** — 1 error(s); nothing will be applied until they are fixed."
    assert "1. **`fx_db`**: dbos:DatabaseInstance resource 'fx_db' has a problem: password must be 8-128 " \
           "characters long (got 5)" in lines
    # what was planned before the failure is labelled as such, never as the headline
    assert not any(line.startswith("🟢") for line in lines)
    # only the stack itself was planned (Pulumi's bookkeeping, issue 32): nothing to list
    assert not any(line.startswith("Planned before the failure") for line in lines)


def test_failed_preview_keeps_multiline_errors_readable() -> None:
    md = render(load("preview_stack_config_failure.json"))
    assert "❌ **preview failed** — 2 error(s)" in md
    lines = md.splitlines()
    assert "1. **the program**:" in lines and any(line.startswith("2. **the program**: an unhandled error") for line in lines)
    # each problem on its own line, inside a fenced block
    start = lines.index("   ```text")
    block = [line.strip() for line in lines[start + 1:lines.index("   ```", start)]]
    message = load("preview_stack_config_failure.json")["diagnostics"][0]["message"]
    assert block == [line.strip() for line in message.removeprefix("error: ").strip().splitlines()]
    assert len(block) == 5 and block[2] == "dbos:instances.bad_db.password: password must be 8-128 characters long (got 5)"


def test_failed_preview_error_text_cannot_break_out_of_its_block() -> None:
    data = load("preview_stack_config_failure.json")
    data["diagnostics"][0]["message"] = "error: two lines\n```\n# not a heading\n"
    md = render(data)
    assert "   ````text" in md and "   # not a heading" in md


def test_many_long_errors_stay_under_the_limit_and_hide_url_passwords() -> None:
    data = load("preview_stack_config_failure.json")
    diag = data["diagnostics"][0]
    long_msg = "error: " + "\n".join(f"  problem {i}: postgresql://app_user:Leaked-passw0rd@127.0.0.1:5432/db "
                                     + "x" * 200 for i in range(40))
    data["diagnostics"] = [dict(diag, message=long_msg) for _ in range(500)]
    md = render(data)
    assert len(md) < MAX_CHARS
    assert "❌ **preview failed** — 500 error(s)" in md and "more** error(s) not shown" in md
    assert "Leaked-passw0rd" not in md and "postgresql://app_user:[secret]@127.0.0.1" in md


def test_large_previews_are_summarised_under_the_limit() -> None:
    data = load("preview_dev_replace.json")
    step = next(s for s in data["steps"] if s["op"] != "same")
    data["steps"] = []
    for i in range(3000):
        s = copy.deepcopy(step)
        s["urn"] = s["urn"].rsplit("::", 1)[0] + f"::inst_{i:04d}"
        data["steps"].append(s)
    md = render(data)
    assert len(md) < MAX_CHARS
    assert "more** changed resources not listed" in md


def test_render_text_tolerates_noise() -> None:
    text = "warning: something\n" + (FIX / "preview_dev_create.json").read_text()
    assert "create" in render_text(text)


# ---------------------------------------------------------------------- field-level diffs (issue 19)
def test_a_rotation_lists_exactly_the_fields_of_the_detailed_diff_and_why_the_app_updates() -> None:
    md = render(load("preview_rotation_detailed.json"))  # captured by tests/e2e/test_previews.py
    assert "| 🟡 | `a` | DatabaseInstance | update | secrets: `password` (values not shown) |" in md
    assert "| 🟡 | `greet` | App | update | secrets: `instance_password` (values not shown)<br>**why**: its " \
           "instance's password changes |" in md
    assert "status" not in md  # an AVAILABLE app is healthy: nothing to start


def test_detailed_diff_is_the_field_list_even_when_old_inputs_recorded_outputs() -> None:
    data = load("preview_rotation_detailed.json")
    _step(data, "a")["oldState"]["inputs"].update(hostname="127.0.0.1", port=54320)  # a state made before the fix
    md = render(data)
    assert "hostname" not in md and "54320" not in md


@pytest.mark.parametrize(("kind", "status", "says"), [
    ("App", "UNHEALTHY", "`status`: UNHEALTHY (`pulumi up` restarts the current version)"),
    ("DatabaseInstance", "credentials_invalid", "`status`: credentials_invalid (`pulumi up` resets the password)"),
    ("DatabaseInstance", "stopped", "`status`: stopped (`pulumi up` starts it)"),
])
def test_status_lines_say_what_up_does(kind: str, status: str, says: str) -> None:
    data = load("preview_rotation_detailed.json")
    step = _step(data, "greet" if kind == "App" else "a")
    step["oldState"]["outputs"]["status"] = status
    step["detailedDiff"]["status"] = {"kind": "update", "inputDiff": False}
    assert says in render(data)
    # without a field-level diff (an older preview): the type's healthy status, compared exactly
    del step["detailedDiff"]
    assert says in render(data)


def test_a_healthy_app_without_a_detailed_diff_is_not_started() -> None:
    data = load("preview_rotation_detailed.json")
    step = _step(data, "greet")
    del step["detailedDiff"]
    assert "AVAILABLE" not in render(data)


def test_the_providers_notices_are_notes_once_each() -> None:
    """An adopt's notice (what it takes over, what `up` does) is a note of the report; checks run it more than
    once, it is shown once; error diagnostics stay errors."""
    pv = load("preview_dev_create.json")
    note = ("pulumi-dbos: app 'greet' exists (managed by proj/test/greet) and will be adopted (adopt=True): "
            "`pulumi up` makes this stack its manager and deploys version abc of it over the running one")
    pv["diagnostics"] = [{"message": note, "severity": "info"}, {"message": note + "\n", "severity": "info#err"},
                         {"message": "some other line", "severity": "info"}]
    md = render(pv)
    assert md.count("will be adopted") == 1 and "> [!NOTE]\n> app 'greet' exists (managed by proj/test/greet)" in md
    assert "some other line" not in md and "preview failed" not in md
    assert "[!NOTE]" not in render(load("preview_dev_create.json"))


def test_a_destroy_says_until_when_the_instance_can_be_restored() -> None:
    """An instance of the local engine keeps its backups after a destroy (issue 29): the report of a delete or a
    replace says for how long and how to restore it by name, instead of 'every database is lost'."""
    preview = load("preview_dev_replace.json")
    step = next(s for s in preview["steps"] if s.get("op") == "replace" and "DatabaseInstance" in s.get("urn", ""))
    step.setdefault("oldState", {}).setdefault("outputs", {}).update(
        kept_after_destroy_hours=168, instance_name="dev_db")
    md = render(preview)
    assert "Its backups stay in the backup repository for 168 h" in md
    assert 'RestoredInstance(source="dev_db")' in md and "pulumi-dbos db restore dev_db NEW" in md
    assert "every database on it is lost" not in md.lower()
    # without the output (the dbos-cloud engine, older state): the old caution, unchanged
    assert "Data loss: instance `dev_db` will be replaced" in render(without_kept_hours(load("preview_dev_replace.json")))


# ---------------------------------------------------------------------- issue 32: only what a reviewer needs
def _made(op: str, name: str, type_: str, old: dict[str, Any] | None = None, new: dict[str, Any] | None = None,
          **extra: Any) -> dict[str, Any]:
    urn = f"urn:pulumi:pr-7::proj::{type_}::{name}"
    step: dict[str, Any] = {"op": op, "urn": urn, **extra}
    if old is not None:
        step["oldState"] = {"type": type_, "inputs": old, "outputs": old}
    if new is not None:
        step["newState"] = {"type": type_, "inputs": new, "outputs": new}
    return step


ENGINE_INPUTS = {"engine": "local", "data_dir": "/var/lib/pulumi-dbos", "run_as": "postgres",
                 "replace_on_engine_change": False, "owner": "proj/pr-7/x#abc"}


def test_pr_stack_report_lists_only_user_facing_inputs_and_no_stack_rows() -> None:
    """A PR stack's first preview: the stack, a StackReference read, a component and its two resources. The
    report lists the two resources with the inputs the user gave (no engine settings, no values an app derives
    from its instance but the instance's name), and neither the stack nor the StackReference."""
    restore = {"instance_name": "hello_pr7", "source": "hello_db", "restore_time": "latest", "password": "[secret]",
               "deletion_protection": False, **ENGINE_INPUTS}
    app = {"app_name": "hello_pr7", "source": "/src/app", "instance_name": "hello_pr7", "instance_host": UNK,
           "instance_port": UNK, "instance_user": UNK, "instance_password": "[secret]", "version": "abc123",
           "env": {}, "drop_on_delete": False, **ENGINE_INPUTS}
    preview = {"changeSummary": {"create": 4, "read": 1}, "steps": [
        _made("create", "proj-pr-7", "pulumi:pulumi:Stack", new={}),
        _made("read", "dev", "pulumi:pulumi:StackReference", old={}, new={"name": "dev"}),
        _made("create", "preview", "dbos:PreviewEnvironment", new={}),
        _made("create", "preview-db", "pulumi-python:dynamic/dbos:RestoredInstance", new=restore),
        _made("create", "preview-app", "pulumi-python:dynamic/dbos:App", new=app)]}
    md = render(preview)
    for hidden in ("data_dir", "run_as", "replace_on_engine_change", "`engine`", "instance_host", "instance_port",
                   "instance_user", "instance_password", "owner", "pulumi:pulumi", "StackReference", "proj-pr-7",
                   "`name`"):
        assert hidden not in md, (hidden, md)
    assert "**3** create" in md and "read" not in md, md
    assert "`restore_time`: latest" in md and "`instance_name`: hello_pr7" in md and "`version`: abc123" in md


def test_an_update_that_moves_only_outputs_has_no_row() -> None:
    """A rotation: the component whose outputs are known only after apply is no row (was `~ instance : { }`)."""
    preview = {"changeSummary": {"update": 2, "same": 1}, "steps": [
        _made("same", "proj-dev", "pulumi:pulumi:Stack", old={}, new={}),
        _made("update", "preview", "dbos:PreviewEnvironment", old={}, new={}),
        _made("update", "db", "pulumi-python:dynamic/dbos:DatabaseInstance",
              old={"password": "[secret]"}, new={"password": "[secret]"}, detailedDiff={"password": {"kind": "UPDATE"}},
              diffReasons=["password"])]}
    md = render(preview)
    assert "`preview`" not in md and "`db`" in md and "secrets: `password`" in md, md


def test_app_port_change_and_data_loss_of_a_dropping_app() -> None:
    app = {"app_name": "greet", "app_db_name": "greet", "drop_on_delete": True, "port": None, **ENGINE_INPUTS}
    moved = _made("update", "greet", "pulumi-python:dynamic/dbos:App", old=app, new={**app, "port": 18080},
                  detailedDiff={"port": {"kind": "ADD"}}, diffReasons=["port"])
    md = render({"changeSummary": {"update": 1}, "steps": [moved]})
    assert "`port`: null → 18080" in md and "it moves to another port" in md and "CAUTION" not in md, md
    replaced = _made("replace", "greet", "pulumi-python:dynamic/dbos:App", old=app,
                     new={**app, "app_db_name": "greet2"}, detailedDiff={"app_db_name": {"kind": "UPDATE_REPLACE"}},
                     replaceReasons=["app_db_name"])
    md = render({"changeSummary": {"replace": 1}, "steps": [replaced]})
    assert "[!CAUTION]" in md and "`greet` will be replaced (deleted first)" in md, md
    assert "databases `greet`, `greet_dbos_sys` dropped" in md, md
    deleted = _made("delete", "greet", "pulumi-python:dynamic/dbos:App", old=app)
    assert "`greet` will be deleted and its databases `greet`" in render({"steps": [deleted]})
    kept = _made("delete", "greet", "pulumi-python:dynamic/dbos:App", old={**app, "drop_on_delete": False})
    assert "CAUTION" not in render({"steps": [kept]})
