"""The PC/SC backend's own C tests (native/pcsc/tests/run.sh) over a
scripted client library: under valgrind and ThreadSanitizer, then compiled
for the macOS code paths (-D__APPLE__ -U__linux__)."""

from __future__ import annotations

import pytest

from native_support import run_c_test_script

pytestmark = pytest.mark.valgrind


def run_c_tests(*args: str) -> list[tuple[int, int]]:
    return run_c_test_script("native/pcsc/tests/run.sh", *args)[1]


def test_pcsc_c_tests_under_valgrind_and_tsan() -> None:
    counts = run_c_tests()
    # missing library, library without the API, main (valgrind), main (TSan)
    assert len(counts) == 4 and counts[2][0] > 80 and counts[3] == counts[2], counts


def test_pcsc_c_tests_on_the_macos_code_paths() -> None:
    counts = run_c_tests("--macos-paths")
    assert len(counts) == 3 and counts[2][0] > 80, counts
