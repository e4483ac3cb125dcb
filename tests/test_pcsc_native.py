"""The PC/SC backend's own C tests (native/pcsc/tests/run.sh) over a
scripted client library: under valgrind and ThreadSanitizer, then compiled
for the macOS code paths (-D__APPLE__ -U__linux__)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest

RUN = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                   "native", "pcsc", "tests", "run.sh")

pytestmark = pytest.mark.valgrind


def run_c_tests(*args: str) -> list[tuple[int, int]]:
    if not os.path.exists(RUN):
        pytest.skip("native tests are not part of this checkout (installed package only)")
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed")
    if shutil.which("valgrind") is None:
        pytest.skip("valgrind is not installed (.ci/run installs it)")
    proc = subprocess.run(["bash", RUN, *args], capture_output=True, text=True, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    counts = [(int(a), int(b)) for a, b in re.findall(r"(\d+) passed, (\d+) failed", out)]
    assert all(bad == 0 for _, bad in counts), out
    return counts


def test_pcsc_c_tests_under_valgrind_and_tsan() -> None:
    counts = run_c_tests()
    # missing library, library without the API, main (valgrind), main (TSan)
    assert len(counts) == 4 and counts[2][0] > 80 and counts[3] == counts[2], counts


def test_pcsc_c_tests_on_the_macos_code_paths() -> None:
    counts = run_c_tests("--macos-paths")
    assert len(counts) == 3 and counts[2][0] > 80, counts
