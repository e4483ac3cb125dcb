"""The C core's, the driver quirks' and the simulated driver's own C tests
(its external-card seam's and socket cards' included), under valgrind, and
the core's, the simulated driver's, the seam's and the socket cards' again
under ThreadSanitizer;
then all of it
again compiled for the macOS code paths (-D__APPLE__ -U__linux__: a pipe
instead of eventfd, realtime condition variables, Apple's 32-bit IFD DWORD
and RESPONSECODE), which no machine here can otherwise run."""

from __future__ import annotations

import pytest

from native_support import run_c_test_script


def run_c_tests(*args: str) -> str:
    out, counts = run_c_test_script("native/tests/run.sh", *args)
    # test_core, test_sim, test_ext_card, test_sim_socket and test_quirks
    # under valgrind, test_core, test_sim, test_ext_card and test_sim_socket
    # again under TSan
    assert len(counts) == 9, out
    for ok, _ in counts:
        assert ok > 20, out
    return out


@pytest.mark.valgrind
def test_c_tests_under_valgrind() -> None:
    run_c_tests()


@pytest.mark.valgrind
def test_c_tests_on_the_macos_code_paths() -> None:
    run_c_tests("--macos-paths")
