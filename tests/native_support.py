"""Running a native C test script (native/**/tests/run.sh) from pytest: the
skips a checkout without the sources or tools needs, and the counts each
test program prints as "N passed, M failed"."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_c_test_script(script: str, *args: str) -> tuple[str, list[tuple[int, int]]]:
    """Run `script` (relative to the checkout) with bash; it must exit 0 and
    every program it runs must report no failure.  Returns its output and
    the (passed, failed) count of each program, in order."""
    path = os.path.join(ROOT, script)
    if not os.path.exists(path):
        pytest.skip("native tests are not part of this checkout (installed package only)")
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed")
    if shutil.which("valgrind") is None:
        pytest.skip("valgrind is not installed (.ci/run installs it)")
    proc = subprocess.run(["bash", path, *args], capture_output=True, text=True, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    counts = [(int(a), int(b)) for a, b in re.findall(r"(\d+) passed, (\d+) failed", out)]
    assert all(bad == 0 for _, bad in counts), out
    return out, counts
