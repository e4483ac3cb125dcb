"""src/scardio/_core.pyi against the compiled binding: the same public names,
and for every function and method the same parameters (names, kinds and
defaults), as inspect.signature reads them from the extension (built with
embedsignature)."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path
from typing import Any

import pytest

from scardio import _core

STUB = Path(__file__).resolve().parent.parent / "src" / "scardio" / "_core.pyi"

_KINDS = {"posonly": inspect.Parameter.POSITIONAL_ONLY,
          "args": inspect.Parameter.POSITIONAL_OR_KEYWORD,
          "vararg": inspect.Parameter.VAR_POSITIONAL,
          "kwonly": inspect.Parameter.KEYWORD_ONLY,
          "kwarg": inspect.Parameter.VAR_KEYWORD}


def _stub_params(fn: ast.FunctionDef, drop_first: bool) -> list[tuple[str, Any, Any]]:
    """(name, kind, default) per parameter, as inspect would report them."""
    a = fn.args
    out: list[tuple[str, Any, Any]] = []
    positional = a.posonlyargs + a.args
    defaults: list[Any] = [inspect.Parameter.empty] * (len(positional) - len(a.defaults))
    defaults += [ast.literal_eval(d) for d in a.defaults]
    for i, arg in enumerate(positional):
        kind = _KINDS["posonly"] if i < len(a.posonlyargs) else _KINDS["args"]
        out.append((arg.arg, kind, defaults[i]))
    if a.vararg:
        out.append((a.vararg.arg, _KINDS["vararg"], inspect.Parameter.empty))
    for arg, d in zip(a.kwonlyargs, a.kw_defaults):
        out.append((arg.arg, _KINDS["kwonly"],
                    inspect.Parameter.empty if d is None else ast.literal_eval(d)))
    if a.kwarg:
        out.append((a.kwarg.arg, _KINDS["kwarg"], inspect.Parameter.empty))
    return out[1:] if drop_first else out


def _live_params(obj: Any) -> list[tuple[str, Any, Any]]:
    return [(p.name, p.kind, p.default) for p in inspect.signature(obj).parameters.values()]


def _decorators(fn: ast.FunctionDef) -> set[str]:
    return {d.id for d in fn.decorator_list if isinstance(d, ast.Name)}


def _stub() -> ast.Module:
    return ast.parse(STUB.read_text())


def _functions() -> list[tuple[str, Any, ast.FunctionDef, bool]]:
    """(qualified name, live object, stub node, is classmethod) for every
    function and method of the stub that is not a property."""
    found = []
    for node in _stub().body:
        if isinstance(node, ast.FunctionDef):
            found.append((node.name, getattr(_core, node.name), node, False))
        elif isinstance(node, ast.ClassDef):
            cls = getattr(_core, node.name)
            for item in node.body:
                if isinstance(item, ast.FunctionDef) and "property" not in _decorators(item):
                    is_cm = "classmethod" in _decorators(item)
                    found.append((f"{node.name}.{item.name}", getattr(cls, item.name), item,
                                  is_cm))
    return found


FUNCTIONS = _functions()


@pytest.mark.parametrize("name, live, node, is_classmethod", FUNCTIONS,
                         ids=[f[0] for f in FUNCTIONS])
def test_signature_matches_the_stub(name, live, node, is_classmethod):
    assert _live_params(live) == _stub_params(node, drop_first=is_classmethod)


def _stub_names(body: list[ast.stmt]) -> set[str]:
    names = set()
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return names


def _public(names: Any) -> set[str]:
    return {n for n in names if not n.startswith("_")}


def test_module_names_match_the_stub():
    live = {n for n in _public(vars(_core))
            if getattr(getattr(_core, n), "__module__", "scardio._core") == "scardio._core"
            and not inspect.ismodule(getattr(_core, n))}
    assert _public(_stub_names(_stub().body)) == live


@pytest.mark.parametrize("cls_name", ["Device", "Operation", "ReaderLock", "CardBase"])
def test_class_names_match_the_stub(cls_name):
    node = next(n for n in _stub().body if isinstance(n, ast.ClassDef) and n.name == cls_name)
    live = _public(vars(getattr(_core, cls_name)))
    assert _public(_stub_names(node.body)) == live


def test_the_comparison_sees_a_wrong_default():
    # The check must be able to fail: a stub whose default differs.
    fn = ast.parse("def ioctl(self, code: int, input: bytes = b'x', output_size: int = 0)"
                   " -> bytes: ...").body[0]
    assert isinstance(fn, ast.FunctionDef)
    assert _live_params(_core.Device.ioctl) != _stub_params(fn, drop_first=False)
