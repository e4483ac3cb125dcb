"""No module of src/scardio imports another in a cycle.

The graph is read from the source files with ast: every ``import`` and
``from ... import`` of the package, at module level and inside functions
alike (a lazy import hides a cycle, it does not remove it).  Imports under
``if TYPE_CHECKING:`` are left out: they never run, they only name types
for mypy.  The arrows should only point down: front ends (cli, aio) ->
monitor -> reader -> card -> runner/session -> sequences -> codecs."""

from __future__ import annotations

import ast
import os
from typing import Optional

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PKG = os.path.join(ROOT, "src", "scardio")


def _module_name(path: str) -> str:
    rel = os.path.relpath(path, os.path.dirname(PKG))[:-3].replace(os.sep, ".")
    return rel[:-len(".__init__")] if rel.endswith(".__init__") else rel


def _modules() -> dict[str, str]:
    found = {}
    for dirpath, _, files in os.walk(PKG):
        for f in files:
            if f.endswith(".py"):
                path = os.path.join(dirpath, f)
                found[_module_name(path)] = path
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


class _Imports(ast.NodeVisitor):
    def __init__(self, module: str, is_package: bool, known: set[str]) -> None:
        self.module = module
        self.package = module if is_package else module.rpartition(".")[0]
        self.known = known
        self.found: set[str] = set()

    def visit_If(self, node: ast.If) -> None:
        if _is_type_checking(node.test):
            for child in node.orelse:
                self.visit(child)
            return
        self.generic_visit(node)

    def _add(self, name: Optional[str]) -> None:
        # "scardio.reader.Reader" -> the longest prefix that is a module
        while name:
            if name in self.known:
                if name != self.module:
                    self.found.add(name)
                return
            name = name.rpartition(".")[0]

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(alias.name)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            base = self.package.split(".")
            base = base[:len(base) - (node.level - 1)]
            mod = ".".join(base + ([node.module] if node.module else []))
        else:
            mod = node.module or ""
        if not mod.startswith("scardio"):
            return
        for alias in node.names:  # `from . import errors` imports a module
            if f"{mod}.{alias.name}" in self.known:
                self._add(f"{mod}.{alias.name}")
            else:
                self._add(mod)


def import_graph() -> dict[str, set[str]]:
    mods = _modules()
    graph = {}
    for name, path in mods.items():
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), path)
        v = _Imports(name, path.endswith("__init__.py"), set(mods))
        v.visit(tree)
        graph[name] = v.found
    return graph


def find_cycle(graph: dict[str, set[str]]) -> Optional[list[str]]:
    """One cycle as [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1: on the path, 2: done
    path: list[str] = []

    def visit(n: str) -> Optional[list[str]]:
        state[n] = 1
        path.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 1:
                return path[path.index(m):] + [m]
            if m not in state:
                found = visit(m)
                if found:
                    return found
        path.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state:
            found = visit(n)
            if found:
                return found
    return None


def test_the_package_has_no_import_cycle():
    if not os.path.isdir(PKG):
        pytest.skip("needs the source tree")
    graph = import_graph()
    # the graph was really read: the known arrows are there
    assert "scardio.session" in graph["scardio.reader"]
    assert "scardio.sequences.transmit" in graph["scardio.card"]
    assert "scardio.monitor" in graph["scardio.cli"]  # a function-level import
    # the package itself re-exports: leave its own edges out (nothing imports it)
    graph.pop("scardio", None)
    for edges in graph.values():
        edges.discard("scardio")
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_cycle_finder_finds_cycles_through_function_level_imports(tmp_path):
    # the checker itself: a lazy import that closes a circle is reported
    g = {"a": {"b"}, "b": {"c"}, "c": set()}
    assert find_cycle(g) is None
    g["c"].add("a")
    assert find_cycle(g) == ["a", "b", "c", "a"]
    src = "def f():\n    from .card import Card\n"
    v = _Imports("scardio.reader", False, {"scardio.reader", "scardio.card"})
    v.visit(ast.parse(src))
    assert v.found == {"scardio.card"}
    typed = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .card import Card\n"
    v = _Imports("scardio.reader", False, {"scardio.reader", "scardio.card"})
    v.visit(ast.parse(typed))
    assert v.found == set()
