"""preview-report rendered from real `pulumi preview --json` outputs (captured by the e2e tests)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

from pulumi_dbos.report import MAX_CHARS, render, render_text

FIX = Path(__file__).parent / "fixtures"
SECRETS = ("dev-Passw0rd-throwaway", "stg-Passw0rd", "postgresql://")


def load(name: str) -> dict:
    return json.loads((FIX / name).read_text())


def test_create_counts() -> None:
    md = render(load("preview_dev_create.json"))
    assert "**3** create" in md
    assert "Data loss" not in md
    assert "`dev_db`" in md and "`shop`" in md


def test_replace_has_data_loss_warning_and_reasons() -> None:
    md = render(load("preview_dev_replace.json"))
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


def test_no_secret_values_in_any_report() -> None:
    for f in FIX.glob("*.json"):
        md = render(load(f.name))
        for s in SECRETS:
            assert s not in md, (f.name, s)
        assert "[secret]" in md or "values not shown" in md or "create" in md


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
