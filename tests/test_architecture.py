"""The package's import graph: no cycles, and no module imports a layer above its own.

The layers are those of docs/ARCHITECTURE.md ("Where things are"); every ``import`` of an
``attn_lib`` module counts, at module level or inside a function (a lazy import hides a cycle
from Python, not from this test). Imports under ``if TYPE_CHECKING:`` are not executed and do
not count.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "attn_lib"
ARCHITECTURE = PACKAGE.parent / "docs" / "ARCHITECTURE.md"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST, module: str, is_package: bool,
             modules: set[str] | None = None) -> set[str]:
    """The attn_lib modules ``module`` imports anywhere in its body. ``from P import m`` of a
    submodule ``m`` of ``modules`` counts as ``P.m`` alone (``P`` is already being imported
    when ``P.m`` runs it); of any other name, as ``P``."""
    found: set[str] = set()
    package = module if is_package else module.rpartition(".")[0]

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "attn_lib")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] == "attn_lib":
                names = [f"{target}.{a.name}" for a in node.names]
                submodules = [n for n in names if modules is None or n in modules]
                found.update(submodules)
                if modules is None or len(submodules) < len(names):
                    found.add(target)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def import_graph() -> dict[str, set[str]]:
    """Module -> the attn_lib modules it imports (only those that exist)."""
    paths = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in paths.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        targets = _imports(tree, name, path.name == "__init__.py", set(paths))
        graph[name] = {t for t in targets if t in paths and t != name}
    return graph


def layers() -> list[list[str]]:
    """The layer table of docs/ARCHITECTURE.md, bottom first: lists of module prefixes."""
    text = ARCHITECTURE.read_text(encoding="utf-8")
    rows = re.findall(r"^\|\s*(\d+)\s*\|([^|]+)\|", text, re.MULTILINE)
    assert rows, f"{ARCHITECTURE} has no layer table"
    return [re.findall(r"`([\w.]+)`", cell) for _, cell in sorted(rows, key=lambda r: int(r[0]))]


def layer_of(module: str, table: list[list[str]]) -> int:
    """The layer of the longest prefix that names ``module`` or a package holding it."""
    best, level = "", None
    for index, prefixes in enumerate(table):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > len(best):
                best, level = prefix, index
    assert level is not None, f"{module} is in no layer of {ARCHITECTURE.name}"
    return level


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle (its modules in order, the first repeated at the end), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                return stack[stack.index(target):] + [target]
            if target not in state:
                cycle = visit(target)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def upward_imports(graph: dict[str, set[str]], table: list[list[str]]) -> list[str]:
    """``a -> b`` for every import of a module in a higher layer than the importer's. A
    package's ``__init__`` may import its own modules (it is their front door)."""
    found = []
    for module, targets in sorted(graph.items()):
        for target in sorted(targets):
            if target.startswith(module + "."):
                continue
            if layer_of(target, table) > layer_of(module, table):
                found.append(f"{module} -> {target}")
    return found


def test_the_package_has_no_import_cycle():
    assert find_cycle(import_graph()) is None


def test_no_module_imports_a_layer_above_its_own():
    assert upward_imports(import_graph(), layers()) == []


def test_every_module_has_a_layer():
    table = layers()
    for module in import_graph():
        layer_of(module, table)


def test_the_checks_catch_a_cycle_and_an_upward_import():
    graph = import_graph()
    broken = {m: set(t) for m, t in graph.items()}
    broken["attn_lib.models.registry"].add("attn_lib.training.loop")  # models -> training
    assert "attn_lib.models.registry -> attn_lib.training.loop" in upward_imports(broken,
                                                                                  layers())
    assert find_cycle(broken) is not None  # training imports models: a cycle too


def test_a_lazy_import_counts(tmp_path):
    source = "def f():\n    from ..training import train\n"
    assert _imports(ast.parse(source), "attn_lib.models.registry", False) == {
        "attn_lib.training", "attn_lib.training.train"}
    guarded = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..training import x\n"
    assert _imports(ast.parse(guarded), "attn_lib.models.registry", False) == set()


@pytest.mark.parametrize("module", ["attn_lib.training", "attn_lib.data", "attn_lib.models"])
def test_training_data_and_models_do_not_import_figures_or_maps(module):
    graph = import_graph()
    reach, todo = set(), [m for m in graph if m == module or m.startswith(module + ".")]
    while todo:
        current = todo.pop()
        if current not in reach:
            reach.add(current)
            todo.extend(graph[current])
    assert not {m for m in reach if m.startswith(("attn_lib.maps", "attn_lib.figures"))}
