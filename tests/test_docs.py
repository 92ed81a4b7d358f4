"""The README and the pages under docs/ link to files and headings that exist."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import load_script

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted([ROOT / "README.md", ROOT / "notebooks" / "README.md",
                *(ROOT / "docs").glob("*.md"), *(ROOT / "results").glob("*/RESULTS.md")])
#: [text](target) and ![alt](target), not inside code spans.
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading: lower case, punctuation dropped, spaces -> -."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors_of(page: Path) -> set[str]:
    text = page.read_text(encoding="utf-8")
    return {github_anchor(m.group(1)) for m in re.finditer(r"^#+\s+(.*)$", text, re.MULTILINE)}


def local_links(page: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.DOTALL)
    return [t for t in LINK.findall(text) if not re.match(r"[a-z]+://|mailto:", t)]


def test_anchor_rule_matches_github():
    assert github_anchor("Use a model") == "use-a-model"
    assert github_anchor("Several GPUs: torchrun") == "several-gpus-torchrun"
    assert github_anchor("The `cpu` scale's size") == "the-cpu-scales-size"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_local_link_resolves(page: Path):
    broken = []
    for target in local_links(page):
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{target}: no such file")
        elif anchor and file.suffix == ".md" and anchor not in anchors_of(file):
            broken.append(f"{target}: no heading with that anchor in {file.name}")
    assert not broken, f"{page.relative_to(ROOT)}: " + "; ".join(broken)


def test_readme_links_every_docs_page():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    missing = [p.name for p in sorted((ROOT / "docs").glob("*.md"))
               if f"docs/{p.name}" not in readme]
    assert not missing, f"README.md does not link {missing}"


def test_generated_parts_are_current_and_their_markers_are_checked():
    tool = load_script("write_generated_docs", "tools")
    stale = [f"{page.relative_to(ROOT)} ({name})"
             for page, (name, text, fresh) in tool.refreshed().items() if fresh != text]
    assert not stale, f"stale: {stale}; run python tools/write_generated_docs.py"
    with pytest.raises(ValueError, match="no markers for its cpu study summary"):
        tool.with_part("no markers here", "cpu study summary", "x")
    begin, end = tool.markers("part")
    assert tool.with_part(f"a\n{begin}old\n{end}b\n", "part", "new\n") == (
        f"a\n{begin}new\n{end}b\n")
