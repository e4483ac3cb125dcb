"""Regression guard for scardio's performance (quick: well under 60 s; part of
the test suite and of the quick benchmark set).

Not a timed test: it measures competing paths side by side, interleaved, and
fails only when a ratio falls far below its target (docs/benchmarks.md):

- TRANSMIT (5-byte APDU) through Device.ioctl at least 3x faster than the
  ctypes binding (target 10x);
- GET_STATE from Python at most 5 us above the C floor (target 1 us);
- a card arrival on the simulated reader seen within 20 ms (typ. 0.1 ms);
- 16 monitored readers idle below 10 % of one core (typ. 0 %);
- with pcscd and pyscard available (root, Debian): TRANSMIT at least 5x
  faster than pcscd + pyscard (target 20x); skipped otherwise.
"""

from __future__ import annotations

import contextlib
import time

import pytest

import harness
import paths
from bench_common import next_lun

pytestmark = pytest.mark.quick

ROUNDS = 7
BATCH_NS = 2e6


@pytest.fixture(scope="module")
def guard_paths():
    import cfloor
    stack = contextlib.ExitStack()
    with stack:
        ps = {}
        dev = paths.open_sim_device(next_lun())
        stack.callback(dev.close)
        ps["device"] = paths.DevicePath(dev)
        ch = paths.open_sim_ctypes(next_lun())
        stack.callback(ch.close)
        ps["ctypes"] = paths.CtypesPath(ch)
        if cfloor.have_gcc():
            floor = paths.open_sim_floor(next_lun())
            stack.callback(floor.close)
            ps["floor"] = paths.CFloorPath(floor)
        yield ps


def _medians(ps, op, key):
    """Interleaved medians (ns per call), kept in the results document (a
    benchmark run's JSON shows what the guard measured)."""
    sizes = paths.batch_sizes(ps, op, BATCH_NS)
    res = harness.interleave(ps, op, ROUNDS, 0, counts=sizes)
    m = {k: harness.median(v) for k, v in res.items()}
    harness.record("guard", key, m)
    return m


def test_transmit_vs_ctypes(guard_paths):
    ps = [guard_paths["device"], guard_paths["ctypes"]]
    m = _medians(ps, "tx5", "transmit_vs_ctypes_ns")
    ratio = m[ps[1].name] / m[ps[0].name]
    assert ratio >= 3.0, f"TRANSMIT only {ratio:.1f}x faster than ctypes ({m})"


def test_get_state_near_c_floor(guard_paths):
    if "floor" not in guard_paths:
        pytest.skip("gcc is not available to build the C floor")
    ps = [guard_paths["floor"], guard_paths["device"]]
    m = _medians(ps, "state", "get_state_vs_c_floor_ns")
    above = m[ps[1].name] - m[ps[0].name]
    assert above <= 5000, f"GET_STATE {above:.0f} ns above the C floor ({m})"


def test_arrival_latency_sim():
    import events
    from scardio.sim import open_device
    with open_device(next_lun()) as dev:
        t = events.DeviceTracking(dev, events.sim_trigger(dev))
        res = events.run_interleaved([t], 8, pause=0.005, jitter=0.005)[t.name]
    med = harness.median(res["insert"])
    harness.record("guard", "arrival_sim_ms", {k: harness.median(v) for k, v in res.items()})
    assert med < 20.0, f"arrival seen after {med:.2f} ms (median)"
    assert harness.median(res["remove"]) < 20.0


def test_idle_cpu_16_readers():
    from scardio import Monitor, Reader
    from scardio.sim import open_device
    stack = contextlib.ExitStack()
    with stack:
        readers = []
        for _ in range(16):
            r = Reader(open_device(next_lun()))
            stack.callback(r.close)
            readers.append(r)
        mon = Monitor(readers)
        stack.callback(mon.close)
        time.sleep(0.3)
        c0, w0 = harness.cpu_seconds(), time.monotonic()
        time.sleep(1.0)
        idle = (harness.cpu_seconds() - c0) / (time.monotonic() - w0)
    harness.record("guard", "idle_cpu_16_readers_percent", idle * 100)
    assert idle < 0.10, f"16 idle monitored readers use {idle * 100:.1f} % of a core"


@pytest.mark.pcscd
def test_transmit_vs_pcscd(guard_paths, pcscd_env):
    import pcsc_peer
    from apdus import APDUS
    from bench_common import SIM_PCSCD_NAME
    w = pcsc_peer.PyscardWorker()
    try:
        w.call("open", match=SIM_PCSCD_NAME, direct=True,
               apdus={k: v.hex() for k, v in APDUS.items()})
        w.call("fresh_card")
        w.call("connect")
        ps = [guard_paths["device"], paths.PyscardPath(w)]
        m = _medians(ps, "tx5", "transmit_vs_pcscd_ns")
    finally:
        w.close()
    ratio = m[ps[1].name] / m[ps[0].name]
    assert ratio >= 5.0, f"TRANSMIT only {ratio:.1f}x faster than pcscd+pyscard ({m})"
