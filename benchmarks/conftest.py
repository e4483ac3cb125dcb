"""Benchmarks of scardio against the C floor, a ctypes binding and
pcscd + pyscard.  See docs/benchmarks.md.

    python -m pytest benchmarks -p no:cacheprovider          # full run (minutes)
    python -m pytest benchmarks/test_guard.py -q              # regression guard (< 60 s)
    python -m pytest benchmarks --benchmark-enable ...        # + pytest-benchmark tables

The full run writes benchmarks/results/latest.json (or $SCARDIO_BENCH_RESULTS);
``python benchmarks/report.py`` turns it into docs/benchmarks.md and
``python benchmarks/plot.py`` into docs/benchmarks-latency.png.
"""

from __future__ import annotations

import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import harness  # noqa: E402

harness.ensure_paths()

from bench_common import SIM_PCSCD_NAME, VPCD_PCSCD_NAME, free_port  # noqa: E402


def pytest_configure(config):
    config.addinivalue_line("markers", "quick: the fast regression guard (test_guard.py)")
    config.addinivalue_line("markers", "pcscd: needs pcscd and pyscard")
    config.addinivalue_line("markers", "vpcd: needs Debian's vsmartcard-vpcd driver")


def pytest_sessionfinish(session, exitstatus):
    path = harness.write_results()
    if path:
        tr = session.config.pluginmanager.get_plugin("terminalreporter")
        if tr is not None:
            tr.write_line(f"benchmark results written to {path}")
    import cfloor
    import ctypes_ifd
    cfloor.cleanup()
    ctypes_ifd.cleanup()


@pytest.fixture(scope="session")
def pcscd_env():
    """One pcscd for the session with a private reader.conf: a simulated
    reader and (when installed) a vpcd reader on a private port.  Yields a
    dict with "pcscd" and "vpcd_port" (None without vpcd)."""
    import pcsc_peer
    from scardio.sim import SIM_LIBRARY
    why = pcsc_peer.unavailable_reason()
    if why:
        pytest.skip(why)
    readers = [(SIM_PCSCD_NAME, SIM_LIBRARY, "/dev/null")]
    vport = None
    if os.path.exists(harness.VPCD_LIBRARY):
        vport = free_port()
        readers.append((VPCD_PCSCD_NAME, harness.VPCD_LIBRARY, f"/dev/null:{vport:#x}"))
    d = pcsc_peer.Pcscd(readers)
    try:
        yield {"pcscd": d, "vpcd_port": vport}
    finally:
        d.close()
