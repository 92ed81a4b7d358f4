"""Write the generated parts of the docs from the code and the committed results.

* ``docs/RECIPES.md``: the table of Recipe fields (``attn_lib.cli.recipe_reference``);
* ``README.md``: the CPU study's summary (``attn_lib.study.report.readme_summary`` of
  ``results/cifar10-cpu/results.json``).

    python tools/write_generated_docs.py          # rewrite every generated part in place
    python tools/write_generated_docs.py --check  # exit 1 (naming the page) if one is stale
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

from attn_lib.cli import recipe_reference
from attn_lib.study.report import readme_summary

ROOT = Path(__file__).resolve().parents[1]
CPU_RESULTS = ROOT / "results" / "cifar10-cpu" / "results.json"


def cpu_study_summary() -> str:
    return readme_summary(json.loads(CPU_RESULTS.read_text(encoding="utf-8")))


#: page -> (name of its generated part, what writes it)
PARTS: dict[Path, tuple[str, Callable[[], str]]] = {
    ROOT / "docs" / "RECIPES.md": ("recipe table", recipe_reference),
    ROOT / "README.md": ("cpu study summary", cpu_study_summary),
}


def markers(name: str) -> tuple[str, str]:
    return (f"<!-- begin generated {name}: python tools/write_generated_docs.py -->\n",
            f"<!-- end generated {name} -->\n")


def with_part(text: str, name: str, body: str) -> str:
    """``text`` with the part between ``name``'s markers replaced by ``body``."""
    begin, end = markers(name)
    if begin not in text or end not in text:
        raise ValueError(f"the page has no markers for its {name}: add {begin!r} and {end!r}")
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    return head + begin + body + end + tail


def refreshed() -> dict[Path, tuple[str, str, str]]:
    """Each page with a generated part: ``(part name, text now, text with the part current)``."""
    pages = {}
    for page, (name, write) in PARTS.items():
        text = page.read_text(encoding="utf-8")
        pages[page] = (name, text, with_part(text, name, write()))
    return pages


def main(argv: list[str]) -> int:
    stale = []
    for page, (name, text, fresh) in refreshed().items():
        if fresh == text:
            continue
        if "--check" in argv:
            stale.append(f"{page.relative_to(ROOT)} ({name})")
        else:
            page.write_text(fresh, encoding="utf-8")
    if stale:
        print("stale: " + ", ".join(stale) + "; run python tools/write_generated_docs.py")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
