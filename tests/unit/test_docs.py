"""The docs a newcomer walks (issue 20, reproduction 7): a short README whose links resolve, with the two
commands of the Quick start, and the reference in docs/ built by MkDocs with --strict."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
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


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The docs site, built once with `mkdocs build --strict` (any warning fails it)."""
    mkdocs = shutil.which("mkdocs") or str(Path(sys.executable).parent / "mkdocs")
    if not Path(mkdocs).exists():
        pytest.fail("mkdocs is not installed: the test extras have mkdocs-material (scripts/setup.sh installs them)")
    out = tmp_path_factory.mktemp("site")
    cp = subprocess.run([mkdocs, "build", "--strict", "--quiet", "-f", str(ROOT / "mkdocs.yml"),  # noqa: S603
                         "-d", str(out)], capture_output=True, text=True, timeout=300,
                        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"}, check=False)
    assert cp.returncode == 0, cp.stdout + cp.stderr
    return out


def test_mkdocs_build_strict(site: Path) -> None:
    assert (site / "reference" / "index.html").is_file()


class Page(HTMLParser):
    """What the checks read of a built page: headings, links, ids, table headers, stylesheets, the text."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.h1s: list[str] = []
        self.links: list[str] = []
        self.ids: set[str] = set()
        self.th: list[str] = []
        self.css: list[str] = []
        self.text: list[str] = []
        self._in: str | None = None
        self._buf = ""
        self.feed(path.read_text())

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if a.get("id"):
            self.ids.add(str(a["id"]))
        if tag == "a" and a.get("href"):
            self.links.append(str(a["href"]))
        if tag == "link" and a.get("rel") == "stylesheet":
            self.css.append(str(a.get("href")))
        if tag in ("h1", "th"):
            self._in, self._buf = tag, ""

    def handle_endtag(self, tag: str) -> None:
        if tag == self._in:
            (self.h1s if tag == "h1" else self.th).append(self._buf.replace("¶", "").strip())
            self._in = None

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._in:
            self._buf += data


def pages(site: Path) -> list[Path]:
    return sorted(p for p in site.rglob("*.html") if p.name != "404.html" and "assets" not in p.parts)


def test_the_site_reads_well_in_a_browser(site: Path) -> None:
    """Issue 32: the home page showed its title twice and sent readers to README sections the site lacks; a
    reference table had an untitled column. Every built page: one title (h1), every header cell titled, the
    site's stylesheet linked (it wraps long code lines and keeps table names whole), no link to README.md,
    and every link inside the site reaching a page and, with a #fragment, an element of that id."""
    css = (ROOT / "docs" / "stylesheets" / "extra.css").read_text()
    assert "white-space: pre-wrap" in css and "word-break: keep-all" in css
    parsed = {p: Page(p) for p in pages(site)}
    assert len(parsed) >= 10
    for path, page in parsed.items():
        name = path.relative_to(site)
        assert len(page.h1s) == 1, f"{name}: {len(page.h1s)} titles {page.h1s}"
        assert all(page.th), f"{name}: a table column without a title: {page.th}"
        assert any(c.endswith("stylesheets/extra.css") for c in page.css), f"{name}: extra.css not linked"
        for href in page.links:
            if re.match(r"^[a-z]+:", href):
                continue
            assert "README" not in href, f"{name}: links to {href}, which the site does not have"
            target, _, frag = href.partition("#")
            dest = (path.parent / target).resolve() if target else path
            if dest.is_dir():
                dest = dest / "index.html"
            assert dest.is_file(), f"{name}: link {href} reaches nothing"
            if frag and dest in parsed:
                assert frag in parsed[dest].ids, f"{name}: link {href}: no #{frag} there"
    home = "".join(parsed[site / "index.html"].text)
    assert "README" not in home
    for line in (ROOT / "README.md").read_text().split("[start:own-project] -->\n")[1].split("\n```")[0].splitlines()[1:]:
        assert line in home, f"the home page lacks README's line {line!r}"

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
