"""The binding's layout: _core.pyx is the module's top (imports, constants)
and includes one file per concept from src/scardio/_core_parts/; every such
file is included exactly once, and the extension module, not the folder, is
what `import scardio._core` loads."""

from __future__ import annotations

import importlib.machinery
import subprocess
import sys
from pathlib import Path

import pytest

from core_sources import CORE_PYX, INCLUDE, core_includes

PARTS = CORE_PYX.parent / "_core_parts"


def needs_source() -> None:
    if not CORE_PYX.is_file():
        pytest.skip("needs the source tree")


def test_every_part_is_included_exactly_once() -> None:
    needs_source()
    included = core_includes()
    on_disk = sorted(PARTS.iterdir())
    assert on_disk, f"no files in {PARTS}"
    assert len(included) == len(set(included)), "a part is included twice"
    # A file in the folder that no include names would never be compiled.
    assert sorted(included) == on_disk


def test_the_top_holds_no_definitions() -> None:
    needs_source()
    text = CORE_PYX.read_text()
    definitions = [line for line in text.splitlines()
                   if line.startswith(("def ", "cdef class ", "cdef object ", "cpdef "))]
    assert not definitions, definitions
    assert INCLUDE.findall(text)


def test_a_missing_part_is_reported(tmp_path: Path) -> None:
    top = tmp_path / "_core.pyx"
    (tmp_path / "parts").mkdir()
    (tmp_path / "parts" / "a.pxi").write_text("x = 1\n")
    top.write_text('include "parts/a.pxi"\ninclude "parts/gone.pxi"\n')
    with pytest.raises(AssertionError, match="gone.pxi"):
        core_includes(top)


def test_import_loads_the_extension_module() -> None:
    code = "import scardio._core as c; print(c.__file__); print(c.Device.__module__)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, cwd=Path(__file__).parent)
    assert proc.returncode == 0, proc.stderr
    path, module = proc.stdout.split()
    assert path.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES)), path
    assert module == "scardio._core"
