"""A pull request's preview names (issue 22): `<base>_pr<N>` within the 3-16 character rule, long bases cut with a
digest of the whole base, numbers kept whole or refused; and the staged copy the preview's app deploys from."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pulumi_dbos.appsource import files, pack, staged_copy
from pulumi_dbos.config.rules import MAX_PR_DIGITS, check_name, preview_name
from pulumi_dbos.dbos_config import read_app
from tests.conftest import ROOT

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(("base", "number", "name"), [
    ("hello", 7, "hello_pr7"),
    ("hello", "42", "hello_pr42"),
    ("abc", 9_999_999, "abc_pr9999999"),
    ("hello_world_ap", 42, None),  # 19 characters: cut, with a digest
])
def test_names_fit_the_rule_and_keep_the_number(base: str, number: int | str, name: str | None) -> None:
    got = preview_name(base, number)
    check_name(got)
    if name is not None:
        assert got == name
    else:
        assert re.fullmatch(rf"hello_[0-9a-f]{{4}}_pr{int(number)}", got), got


def test_long_bases_sharing_a_prefix_stay_apart_and_every_length_fits() -> None:
    assert preview_name("hello_world_app", 42) != preview_name("hello_world_apq", 42)
    for length in range(3, 17):
        for digits in range(1, MAX_PR_DIGITS + 1):
            check_name(preview_name("a" * length, int("9" * digits)))
    assert preview_name("x" * 16, 1) != preview_name("x" * 15 + "y", 1)


@pytest.mark.parametrize("number", [0, -3, "4a", "", 10 ** MAX_PR_DIGITS, True, 1.5, None])
def test_bad_numbers_are_refused_naming_the_field_and_rule(number: object) -> None:
    with pytest.raises(ValueError, match=rf"pr_number must be a positive integer of at most {MAX_PR_DIGITS} digits"):
        preview_name("hello", number)


def test_a_bad_base_is_refused() -> None:
    with pytest.raises(ValueError, match=r"\[a-z0-9_\]\{3,16\}"):
        preview_name("Hello", 1)


def test_the_staged_copy_deploys_the_same_code_under_the_previews_name(tmp_path: Path) -> None:
    src = ROOT / "examples" / "greet"
    dest = staged_copy(src, tmp_path / "greet_pr3", name="greet_pr3", app_db_name="greet")
    cfg = read_app(dest, "greet_pr3")
    assert cfg.app_db_name == "greet" and cfg.start == read_app(src).start
    assert files(dest) == files(src)
    for rel in files(src):
        if rel.name != "dbos-config.yaml":
            assert (dest / rel).read_bytes() == (src / rel).read_bytes()
    assert "#" in (dest / "dbos-config.yaml").read_text()  # its comments kept
    version = pack(dest)[0]
    (dest / "stale.py").write_text("gone on the next staging")
    staged_copy(src, dest, name="greet_pr3", app_db_name="greet")
    assert pack(dest)[0] == version  # unchanged source: same version, stale files removed
