"""The arrows between native/'s folders point down: the core includes only
its own headers and the public API, and a backend reaches the core through
core/backend.h (plus the threading primitives), never through the core's
private header."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

NATIVE = Path(__file__).resolve().parent.parent / "native"
INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)
CORE_HEADERS = {"scio.h", "backend.h", "core_internal.h", "sync.h"}
BACKEND_MAY_USE = {"core/backend.h", "core/sync.h"}


def includes(folder: str) -> dict[str, list[str]]:
    root = NATIVE / folder
    if not root.is_dir():
        pytest.skip("needs the source tree (native/)")
    return {f"{folder}/{p.name}": INCLUDE.findall(p.read_text(encoding="utf-8"))
            for p in sorted(root.iterdir()) if p.suffix in (".c", ".h")}


def test_the_core_includes_only_itself_and_the_api() -> None:
    found = includes("core")
    assert found, "no sources in native/core"
    bad = {f: [i for i in incs if i not in CORE_HEADERS] for f, incs in found.items()}
    assert not any(bad.values()), bad


def test_backends_reach_the_core_through_backend_h() -> None:
    for folder in ("ifd", "win32", "posix"):
        for f, incs in includes(folder).items():
            core = [i for i in incs if i.startswith("core/")]
            assert set(core) <= BACKEND_MAY_USE, (f, core)


def test_the_check_sees_an_upward_include() -> None:
    src = '#include <stdio.h>\n#include "scio.h"\n  #  include "win32/scio_win32_discover.h"\n'
    assert INCLUDE.findall(src) == ["scio.h", "win32/scio_win32_discover.h"]
