"""The docs a newcomer walks (issue 20, reproduction 7): a short README whose links resolve, with the two
commands of the Quick start, and the reference in docs/ built by MkDocs with --strict."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.unit
README = ROOT / "README.md"
LINK = re.compile(r"\]\(([^)\s]+)\)")


def test_the_readme_is_short_and_keeps_the_two_commands() -> None:
    text = README.read_text()
    assert len(text.encode()) <= 15_000, f"README.md is {len(text.encode())} bytes: move reference material to docs/"
    assert "make up      # set up what is missing, then `pulumi up` of the example stack" in text
    assert "make test    # set up what is missing, then the whole test suite" in text
    for section in ("## Quick start", "## Your own project", "## Where to read next"):
        assert section in text


@pytest.mark.parametrize("doc", [README, *sorted((ROOT / "docs").glob("*.md"))], ids=lambda p: p.name)
def test_relative_links_resolve(doc: Path) -> None:
    for target in LINK.findall(doc.read_text()):
        if re.match(r"^[a-z]+:", target) or target.startswith("#"):
            continue
        path = (doc.parent / target.split("#", 1)[0]).resolve()
        assert path.exists(), f"{doc.name}: link to {target} does not resolve"


def test_every_doc_page_is_in_the_nav() -> None:
    nav = (ROOT / "mkdocs.yml").read_text()
    for page in (ROOT / "docs").glob("*.md"):
        assert f" {page.name}" in nav, f"docs/{page.name} is not in mkdocs.yml's nav"


def test_mkdocs_build_strict(tmp_path: Path) -> None:
    mkdocs = shutil.which("mkdocs") or str(Path(sys.executable).parent / "mkdocs")
    if not Path(mkdocs).exists():
        pytest.fail("mkdocs is not installed: the test extras have mkdocs-material (scripts/setup.sh installs them)")
    cp = subprocess.run([mkdocs, "build", "--strict", "--quiet", "-f", str(ROOT / "mkdocs.yml"),  # noqa: S603
                         "-d", str(tmp_path / "site")], capture_output=True, text=True, timeout=300,
                        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"}, check=False)
    assert cp.returncode == 0, cp.stdout + cp.stderr
    assert (tmp_path / "site" / "reference" / "index.html").is_file()


EXPORT = re.compile(r"""pulumi\.export\(\s*["']([a-z_]+)["']""")
STACK_OUTPUT = re.compile(r"pulumi stack output ([a-z_]+)")


def readme_section(title: str) -> str:
    text = README.read_text()
    body = text[text.index(f"## {title}\n") + 1:]
    return body[:body.index("\n## ")] if "\n## " in body else body


@pytest.mark.parametrize(("section", "program"), [
    ("Quick start", ROOT / "stacks" / "__main__.py"),  # the example stack of `make up`
    ("Your own project", ROOT / "templates" / "dbos-python" / "__main__.py"),
])
def test_the_stack_outputs_the_readme_names_are_the_programs_exports(section: str, program: Path) -> None:
    """Issue 32: README's "Your own project" said `pulumi stack output database_urls`, which the template's
    stacks do not have (it exports `database_url`): every output a README section names is one its program
    exports."""
    named = set(STACK_OUTPUT.findall(readme_section(section)))
    assert named, f"README's {section} names no stack output"
    exported = set(EXPORT.findall(program.read_text()))
    assert named <= exported, f"README's {section} names {sorted(named - exported)}; {program.name} exports {sorted(exported)}"
