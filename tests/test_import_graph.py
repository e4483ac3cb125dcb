"""The package's imports: no module of src/scardio imports another in a
cycle, ``import scardio`` loads the binding and not the layers above it
(every public name loads on first use), and the command line imports what
the command it runs needs.

The graph is read from the source files with ast: every ``import`` and
``from ... import`` of the package, at module level and inside functions
alike (a lazy import hides a cycle, it does not remove it).  Imports under
``if TYPE_CHECKING:`` are left out: they never run, they only name types
for mypy.  The arrows should only point down: front ends (cli, aio) ->
monitor -> reader -> card -> runner/session -> sequences -> codecs."""

from __future__ import annotations

import ast
import functools
import importlib
import json
import os
import subprocess
import sys
from typing import Optional

import pytest

import scardio

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
    assert "scardio.monitor" in graph["scardio._cli.watch"]  # a function-level import
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


# ---------------------------------------------------------------------------
# What `import scardio` loads: the binding, not the layers above it.  Each
# check runs a fresh interpreter (modules once imported stay imported) and
# compares with one that imports nothing, so that what the interpreter
# itself loads at start-up (site, .pth files) is never blamed on scardio.

#: Loaded on first use, never by `import scardio`: the layers above the
#: binding and the standard-library modules that made the import slow.
LAZY_MODULES = [
    "scardio.discovery", "scardio.cli", "scardio.aio", "scardio.reader",
    "scardio.card", "scardio.monitor", "scardio.session", "scardio.apdu",
    "scardio.atr", "scardio.atr_list", "scardio.status_words", "scardio.constants",
    "scardio.sequences", "scardio.tracing", "scardio.waiting", "scardio.sim",
    "asyncio", "logging", "dataclasses", "inspect", "ast", "platform", "typing",
    "enum", "re", "subprocess", "socket", "selectors", "argparse", "plistlib",
]


def _modules_after(code: str) -> set[str]:
    """sys.modules of a fresh interpreter after running `code`."""
    script = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    return set(json.loads(proc.stdout.splitlines()[-1]))


def _importtime(argv: list[str]) -> set[str]:
    proc = subprocess.run([sys.executable, "-X", "importtime", *argv], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return {line.rpartition("|")[2].strip() for line in proc.stderr.splitlines()
            if line.startswith("import time:") and "|" in line}


@functools.lru_cache(maxsize=None)
def _interpreter_startup() -> frozenset[str]:
    """What the interpreter imports before any command runs (site and the
    environment's .pth files may pull in typing, for example)."""
    return frozenset(_importtime(["-c", "pass"]))


def _imported_by(argv: list[str]) -> set[str]:
    """Every module a real run of `python -X importtime ARGV` imported (its
    own report on stderr), so the command runs exactly as a user runs it,
    less what the bare interpreter had already imported."""
    found = _importtime(argv)
    assert "scardio" in found, sorted(found)
    return found - _interpreter_startup()


@pytest.fixture(scope="module")
def at_startup() -> set[str]:
    return _modules_after("pass")


def test_import_scardio_loads_the_binding_and_not_the_layers_above(at_startup):
    loaded = _modules_after("import scardio") - at_startup
    assert {"scardio", "scardio._core", "scardio.errors"} <= loaded
    eager = sorted(m for m in LAZY_MODULES if m in loaded and m not in at_startup)
    assert eager == [], f"import scardio loaded {eager}"


def test_the_checker_sees_an_eager_import(at_startup):
    # the same check fails when the package does load one of them
    loaded = _modules_after("import scardio, scardio.discovery") - at_startup
    assert {"scardio.discovery", "logging", "dataclasses"} <= loaded


def test_every_public_name_resolves_on_first_use():
    # in one fresh interpreter: each name is absent from the package's
    # namespace until asked for, then `from scardio import NAME` gives the
    # object its defining module has, and dir() lists it throughout
    script = """
import importlib, json, sys
import scardio
eager = {"Device", "Operation", "errors", "__version__"}
out = {}
for name in scardio.__all__:
    before = name in vars(scardio)
    listed = name in dir(scardio)
    ns = {}
    exec(f"from scardio import {name}", ns)
    value = ns[name]
    home = getattr(value, "__module__", None)
    if name in scardio._LAZY:
        home = "scardio." + scardio._LAZY[name]
    same = home is None or getattr(importlib.import_module(home), name, value) is value
    out[name] = [before, listed, same, name in vars(scardio)]
ns = {}
exec("from scardio import *", ns)
out["*"] = sorted(n for n in scardio.__all__ if n not in ns)
print(json.dumps(out))
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out.pop("*") == []
    assert set(out) == set(scardio.__all__)
    eager = {"Device", "Operation", "errors", "__version__"}
    for name, (before, listed, same, after) in out.items():
        assert before == (name in eager), f"{name} loaded with the package: {before}"
        assert listed, f"dir(scardio) misses {name}"
        assert same, f"scardio.{name} is not its module's {name}"
        assert after, f"scardio.{name} was not kept after its first use"


def test_the_lazy_table_covers_all_and_names_real_modules():
    eager = {"Device", "Operation", "errors", "__version__"}
    assert set(scardio._LAZY) | eager == set(scardio.__all__)
    assert len(scardio.__all__) == len(set(scardio.__all__))
    for name, module in scardio._LAZY.items():
        assert getattr(importlib.import_module(f"scardio.{module}"), name) is \
            getattr(scardio, name)


def test_submodules_load_as_attributes_and_unknown_names_fail():
    # every module of the package is reachable as scardio.<name> after a bare
    # `import scardio`, as when the package imported them all
    if os.path.isdir(PKG):
        on_disk = {name.split(".")[1] for name in _modules()
                   if name.count(".") >= 1 and not name.split(".")[1].startswith("_")}
        on_disk -= {"__main__", "errors"}  # errors loads with the binding
        assert scardio._SUBMODULES == on_disk
    script = ("import scardio\n"
              "assert scardio.sim.open_device and scardio.discovery.list_readers\n"
              "assert scardio.sequences.Request and scardio.status_words.StatusWord\n"
              "try:\n    scardio.no_such_name\nexcept AttributeError as e:\n    print(e)\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "module 'scardio' has no attribute 'no_such_name'"
    assert not hasattr(scardio, "no_such_name")


def test_type_checkers_see_every_public_name(tmp_path):
    # the names are visible to mypy (TYPE_CHECKING imports), and a misspelt
    # one is still an error: the run-time __getattr__ is hidden from it
    if not os.path.isdir(PKG):
        pytest.skip("needs the source tree")
    pytest.importorskip("mypy", reason="mypy is not installed (pip install '.[test]')")
    names = [n for n in scardio.__all__ if n != "__version__"]
    src = tmp_path / "user.py"
    src.write_text("import scardio\n"
                   f"from scardio import {', '.join(names)}\n"
                   "reveal_type(scardio.Card)\n"
                   "reveal_type(scardio.open_reader)\n"
                   "reveal_type(scardio.IOCTL.TRANSMIT)\n"
                   "scardio.Crad\n")
    env = dict(os.environ, MYPYPATH=os.path.dirname(PKG))
    proc = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--no-incremental",
                           "--ignore-missing-imports", "--cache-dir", str(tmp_path / "cache"),
                           str(src)], capture_output=True, text=True, timeout=600, env=env,
                          cwd=str(tmp_path))
    out = proc.stdout
    revealed = [line.split("Revealed type is ", 1)[1] for line in out.splitlines()
                if "Revealed type is " in line]
    assert len(revealed) == 3, out
    assert revealed[0].endswith('-> scardio.card.Card"'), out
    assert revealed[1].endswith('-> scardio.reader.Reader"'), out
    assert "scardio.constants.IOCTL.TRANSMIT" in revealed[2], out
    errors = [line for line in out.splitlines() if ": error:" in line]
    assert len(errors) == 1 and '"Crad"' in errors[0], out


# ---------------------------------------------------------------------------
# The command line imports what the command it runs needs.

READER_LAYER = {"scardio.reader", "scardio.card", "scardio.monitor", "scardio.aio"}
DISCOVERY = {"scardio.discovery"}
#: The reader's state machine and what it brings (the help shows only its
#: default power-down timeout, from scardio._defaults)
SESSION_LAYER = {"scardio.session", "scardio.sequences", "scardio.powerdown"}
#: Loaded by the commands that parse APDUs or ATRs, and by discovery
PARSING = {"scardio.apdu", "scardio.atr", "scardio.atr_list", "dataclasses", "typing",
           "inspect"}


@pytest.mark.parametrize("argv, absent", [
    (["-m", "scardio", "--help"], READER_LAYER | DISCOVERY | SESSION_LAYER | PARSING),
    (["-m", "scardio", "atr", "3B 02 14 50"], READER_LAYER | DISCOVERY | SESSION_LAYER),
    (["-m", "scardio", "--sim", "1", "list"],
     READER_LAYER | SESSION_LAYER | {"scardio.apdu", "scardio.atr", "scardio.atr_list"}),
])
def test_cli_commands_import_only_what_they_use(argv, absent):
    found = _imported_by(argv)
    assert "scardio.cli" in found
    assert sorted(absent & found) == []
    assert "subprocess" not in found or sys.platform == "darwin"


def test_cli_demo_still_loads_the_layers_it_uses():
    found = _imported_by(["-m", "scardio", "demo", "--delay", "0"])
    assert {"scardio.discovery", "scardio.reader", "scardio.monitor", "scardio.sim"} <= found


def test_cli_reports_a_missing_reader_without_loading_discovery_in_main():
    # main() names ReaderNotFoundError without importing discovery: the
    # exit code of a command that raised it is still 4
    proc = subprocess.run([sys.executable, "-m", "scardio", "--sim", "1", "info", "nope"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 4, proc.stdout + proc.stderr
    assert "reader not found" in proc.stderr


def test_cli_help_shows_the_session_default_without_loading_the_session():
    proc = subprocess.run([sys.executable, "-m", "scardio", "--help"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    from scardio.session import DEFAULT_POWER_DOWN_TIMEOUT
    assert f"(default {DEFAULT_POWER_DOWN_TIMEOUT:g}; 0: power down" in \
        " ".join(proc.stdout.split())
    from scardio import _defaults, reader
    assert reader.DEFAULT_POWER_DOWN_TIMEOUT == _defaults.DEFAULT_POWER_DOWN_TIMEOUT == 5.0
    assert reader.DEFAULT_CONNECT_TIMEOUT == _defaults.DEFAULT_CONNECT_TIMEOUT


@pytest.mark.parametrize("argv", [["atr", "3B 0Z"], ["--sim", "1", "apdu", "0", "00 A4"]])
def test_cli_bad_hex_is_a_usage_error_in_a_fresh_process(argv):
    # main() names APDUError only once a command loaded scardio.apdu: a
    # fresh process (where nothing else loaded it) still exits 2
    proc = subprocess.run([sys.executable, "-m", "scardio", *argv], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "bad input" in proc.stderr


def test_cli_main_names_discovery_errors_only_once_discovery_is_loaded():
    script = ("import sys\n"
              "from scardio import cli\n"
              "assert 'scardio.discovery' not in sys.modules\n"
              "assert cli._error_of('discovery.descriptor', 'ReaderNotFoundError') is "
              "cli._NeverRaised\n"
              "from scardio.discovery import AmbiguousReaderError, ReaderNotFoundError\n"
              "cls = cli._error_of('discovery.descriptor', 'ReaderNotFoundError')\n"
              "assert cls is ReaderNotFoundError and issubclass(AmbiguousReaderError, cls)\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
