"""The C core's, the driver quirks' and the simulated driver's own C tests,
under valgrind, and the core's again under ThreadSanitizer; then all of it
again compiled for the macOS code paths (-D__APPLE__ -U__linux__: a pipe
instead of eventfd, realtime condition variables, Apple's 32-bit IFD DWORD
and RESPONSECODE), which no machine here can otherwise run."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest

RUN = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                   "native", "tests", "run.sh")


def run_c_tests(*args: str) -> str:
    if not os.path.exists(RUN):
        pytest.skip("native tests are not part of this checkout (installed package only)")
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed")
    if shutil.which("valgrind") is None:
        pytest.skip("valgrind is not installed (.ci/run installs it)")
    proc = subprocess.run(["bash", RUN, *args], capture_output=True, text=True, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    counts = re.findall(r"(\d+) passed, (\d+) failed", out)
    # test_core, test_sim and test_quirks under valgrind, test_core again under TSan
    assert len(counts) == 4, out
    for ok, bad in counts:
        assert int(bad) == 0 and int(ok) > 20, out
    return out


@pytest.mark.valgrind
def test_c_tests_under_valgrind() -> None:
    run_c_tests()


@pytest.mark.valgrind
def test_c_tests_on_the_macos_code_paths() -> None:
    run_c_tests("--macos-paths")
