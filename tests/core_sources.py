"""The binding's source files: src/scardio/_core.pyx and the files it
includes (one per concept), read from its `include` lines, so that a test
that needs all of them (the sdist's contents, a build from a copy, a scan
of the code) cannot miss one."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / "src" / "scardio"
CORE_PYX = PKG / "_core.pyx"

# Cython's include statement at the start of a line: include "path"
INCLUDE = re.compile(r'^include\s+"([^"]+)"\s*$', re.M)


def core_includes(top: Path = CORE_PYX) -> list[Path]:
    """The files `top` includes, in include order, nested ones after their
    includer (Cython resolves a path relative to the including file).
    AssertionError naming any that does not exist."""
    found: list[Path] = []
    for name in INCLUDE.findall(top.read_text()):
        path = top.parent / name
        assert path.is_file(), f"{top.name} includes {name!r}, which does not exist"
        found.append(path)
        found.extend(core_includes(path))
    return found


def core_source_files() -> list[Path]:
    """_core.pyx and everything it includes."""
    return [CORE_PYX] + core_includes()
