"""Write the generated table of docs/RECIPES.md from the Recipe dataclass (attn_lib.cli).

    python tools/write_recipes_doc.py          # rewrite the table in place
    python tools/write_recipes_doc.py --check  # exit 1 if the page is stale
"""

from __future__ import annotations

import sys
from pathlib import Path

from attn_lib.cli import recipe_reference

PAGE = Path(__file__).resolve().parents[1] / "docs" / "RECIPES.md"
BEGIN = "<!-- begin generated table: python tools/write_recipes_doc.py -->\n"
END = "<!-- end generated table -->\n"


def with_table(text: str) -> str:
    """``text`` with the part between the markers replaced by the current table."""
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return head + BEGIN + recipe_reference() + END + tail


def main(argv: list[str]) -> int:
    text = PAGE.read_text(encoding="utf-8")
    fresh = with_table(text)
    if "--check" in argv:
        return 0 if fresh == text else 1
    PAGE.write_text(fresh, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
