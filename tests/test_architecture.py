"""The tree is the architecture: no import cycle anywhere in the product (imports made
only for type checking included), and the layering itself is import-linter's contracts
in pyproject.toml, run by `lint-imports` in the test command."""

from __future__ import annotations

import ast
from pathlib import Path

import grimp

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("exchange", "buyers")


def _cycles() -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan's algorithm)."""
    graph = grimp.build_graph(*PACKAGES, include_external_packages=False)
    modules = sorted(graph.modules)
    edges = {m: sorted(graph.find_modules_directly_imported_by(m)) for m in modules}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for imported in edges[module]:
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in on_stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == module:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for module in modules:
        if module not in index:
            visit(module)
    return found


def test_no_module_imports_itself_back_through_others() -> None:
    assert _cycles() == []


def test_the_core_reads_no_clock() -> None:
    """The core is given the time; it never reads it (STYLE.md: the clock is passed in)."""
    reads = ("datetime.now(", "time.time(", "time.monotonic(", "date.today(", "utcnow(")
    offenders = []
    for path in sorted((REPO / "exchange" / "core").glob("*.py")):
        text = path.read_text()
        ast.parse(text)  # a module that does not parse is its own failure
        offenders += [f"{path.name}: {r}" for r in reads if r in text]
    assert offenders == []
