"""The package type-checks under mypy --strict (its public API is typed and
the stubs of the binding match how the Python layer uses it)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SRC = os.path.join(ROOT, "src", "scardio")


def test_mypy_strict():
    if not os.path.isdir(SRC):
        pytest.skip("needs the source tree")
    pytest.importorskip("mypy", reason="mypy is not installed (pip install '.[test]')")
    proc = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--ignore-missing-imports",
                           "--no-incremental", SRC], capture_output=True, text=True,
                          timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
