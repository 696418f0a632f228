"""The README and the reference pages in docs/: every relative link reaches a file and, where it
names an anchor, a heading of that file; the README stays a short start page."""

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.MULTILINE | re.DOTALL)
CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)


def prose(text: str) -> str:
    """The text without fenced code blocks (whose `# comments` are no headings) or code spans."""
    return CODE_SPAN.sub("", FENCE.sub("", text))


def anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lowercase, punctuation dropped (hyphens and underscores kept),
    spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading: its text
    text = re.sub(r"[^\w\- ]", "", text.lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for heading in HEADING.findall(FENCE.sub("", path.read_text())):
        base = anchor(heading)
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")  # a repeated heading gets -1, -2, ...
    return out


def test_the_anchor_rule():
    assert anchor("The paper's results at $0") == "the-papers-results-at-0"
    assert anchor("Parameters (`params.yaml`)") == "parameters-paramsyaml"
    assert anchor("What reproduces, where, and at what cost") == "what-reproduces-where-and-at-what-cost"
    assert anchor("The accuracy-vs-diversity curve") == "the-accuracy-vs-diversity-curve"


def test_the_docs_exist():
    names = {p.name for p in PAGES}
    assert {"README.md", "pipeline.md", "tasks.md", "parameters.md", "paper-results.md"} <= names


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_reaches_a_file_and_a_heading(page):
    broken = []
    for target in LINK.findall(prose(page.read_text())):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto: ...
            continue
        file, _, fragment = target.partition("#")
        dest = (page.parent / file).resolve() if file else page
        if not dest.exists():
            broken.append(f"{target}: no file {dest.relative_to(REPO) if dest.is_relative_to(REPO) else dest}")
        elif fragment and (dest.suffix != ".md" or fragment not in anchors(dest)):
            broken.append(f"{target}: no heading #{fragment} in {dest.relative_to(REPO)}")
    assert not broken, f"{page.relative_to(REPO)}: broken links:\n" + "\n".join(broken)


def test_every_docs_page_is_linked_from_the_readme_and_the_index():
    readme = (REPO / "README.md").read_text()
    index = (REPO / "docs/README.md").read_text()
    pages = [p.name for p in PAGES if p.parent == REPO / "docs" and p.name != "README.md"]
    assert not [p for p in pages if f"](docs/{p}" not in readme]
    assert not [p for p in pages if f"]({p}" not in index]


def test_the_readme_is_a_short_start_page_with_the_two_commands():
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) < 260
    commands = readme[readme.index("## Two commands") :]
    commands = commands[: commands.index("\n## ")]
    assert "make repro" in commands and "make test" in commands
