"""The package's import graph has no cycle, counting imports inside functions too.

A module imported inside a function is still a dependency: a cycle through one only moves the
failure from import time to call time. Imports under `if TYPE_CHECKING:` are annotations only and
do not count. Read from the source (no module is imported), so it costs milliseconds.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import networkx as nx

PACKAGE = Path(__file__).resolve().parent.parent / "onnxshap"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _targets(node: ast.Import | ast.ImportFrom, module: str, is_package: bool, known: set[str]) -> set[str]:
    """The onnxshap modules an import statement loads (`from pkg import sub` loads pkg.sub)."""
    if isinstance(node, ast.Import):
        return {a.name for a in node.names if a.name in known}
    base = node.module or ""
    if node.level:
        package = module.split(".") if is_package else module.split(".")[:-1]
        base = ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else []))
    found = {f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in known}
    return found or ({base} & known)


def _is_type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def import_edges() -> list[tuple[str, str, int]]:
    """(importer, imported, line) for every import of one onnxshap module by another."""
    paths = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    known = set(paths)
    edges = []
    for module, path in paths.items():
        stack: list[ast.AST] = [ast.parse(path.read_text(encoding="utf-8"))]
        while stack:
            for child in ast.iter_child_nodes(stack.pop()):
                if _is_type_checking(child):
                    continue
                if isinstance(child, ast.Import | ast.ImportFrom):
                    for target in _targets(child, module, path.name == "__init__.py", known) - {module}:
                        edges.append((module, target, child.lineno))
                else:
                    stack.append(child)
    return edges


def import_graph() -> nx.DiGraph:
    # Parsed in a fresh interpreter: CPython 3.11's ast.parse can fail with "AST constructor
    # recursion depth mismatch" late in a long test session (the C recursion counter it checks is
    # off by then), which says nothing about the files.
    done = subprocess.run([sys.executable, __file__], capture_output=True, text=True, check=True, timeout=120)
    graph = nx.DiGraph()
    graph.add_nodes_from(_module_name(p) for p in PACKAGE.rglob("*.py"))
    for a, b, line in json.loads(done.stdout):
        graph.add_edge(a, b, line=line)
    return graph


def test_the_import_graph_has_no_cycle() -> None:
    graph = import_graph()
    assert graph.number_of_edges() > 50  # the walk found the package's imports
    cycles = sorted(nx.simple_cycles(graph), key=len)
    shown = [" -> ".join(f"{a} (line {graph.edges[a, b]['line']})" for a, b in zip(c, [*c[1:], c[0]])) for c in cycles]
    assert not cycles, f"{len(cycles)} import cycle(s), shortest first:\n" + "\n".join(shown[:10])


def test_the_check_sees_imports_inside_functions() -> None:
    # `onnxshap.__main__` imports the command line inside a function: without that edge the cycle
    # check above would miss every lazy import.
    graph = import_graph()
    assert graph.has_edge("onnxshap._load", "onnxshap._control")
    assert graph.has_edge("onnxshap.__main__", "onnxshap.cli")


if __name__ == "__main__":  # the parse that import_graph runs in a child process
    print(json.dumps(import_edges()))
