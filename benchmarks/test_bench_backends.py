"""What going through the resource manager costs: the same Reader API, the
same vpcd test card (tests/vpcd_card.py, in a process of its own), opened
directly (scardio runs vpcd) and through pcscd (pcscd runs vpcd, scardio's
PC/SC backend talks to pcscd), side by side in one interleaved run.

- ``tx5``/``tx261``: ``card.transmit`` per call, direct vs PC/SC;
- ``open``: ``open_reader`` of a reader pcscd holds, ``backend="auto"``
  (one failed direct open, then PC/SC) vs ``backend="pcsc"``: the price of
  the automatic fallback.

Every process (this one, pcscd, both card processes) is pinned to the same
CPUs (harness.Placement), as in test_bench_vpcd.py.  Needs pcscd in a
private namespace: run it with benchmarks/run.py."""

from __future__ import annotations

import contextlib
import os
import time

import pytest

import harness
from apdus import APDUS
from bench_common import VPCD_PCSCD_NAME, free_port

pytestmark = pytest.mark.vpcd

ROUNDS = int(os.environ.get("SCARDIO_BENCH_ROUNDS", "25"))
OPEN_ROUNDS = int(os.environ.get("SCARDIO_BENCH_OPEN_ROUNDS", "7"))
TX_OPS = ["tx5", "tx261"]


def _wait(pred, timeout=15.0, what="condition"):
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.02)


@pytest.fixture(scope="module")
def backends(pcscd_env):
    import pcsc_peer
    import scardio
    from scardio import State
    from scardio.discovery import ReaderDescriptor
    vport = pcscd_env["vpcd_port"]
    if vport is None:
        pytest.skip("vsmartcard-vpcd is not installed")
    stack = contextlib.ExitStack()
    try:
        place = stack.enter_context(harness.Placement())
        place.caller(pcscd_env["pcscd"].proc.pid)
        harness.record("backends", "placement", place.describe())
        pcsc_name = f"{VPCD_PCSCD_NAME} 00 00"
        # Through pcscd: its vpcd, a card of its own.
        card_p = pcsc_peer.CardProcess(vport)
        stack.callback(card_p.close)
        place.card(card_p.proc.pid)
        card_p.insert()
        held = ReaderDescriptor(VPCD_PCSCD_NAME, "reader.conf", harness.VPCD_LIBRARY,
                                f"/dev/null:{vport:#x}", 0, {"available": True},
                                pcsc_name=pcsc_name)
        via_pcsc = scardio.open_reader(held, backend="pcsc", power_down_timeout=None)
        stack.callback(via_pcsc.close)
        _wait(lambda: via_pcsc.state() != State.ABSENT, what="pcscd sees the card")
        card_pcsc = via_pcsc.connect(timeout=10)
        # Direct: this process's vpcd on another port, a card of its own.
        dport = free_port()
        direct_desc = ReaderDescriptor("bench direct vpcd", "reader.conf",
                                       harness.VPCD_LIBRARY, f"/dev/null:{dport:#x}", 0,
                                       {"available": True})
        direct = scardio.open_reader(direct_desc, backend="direct", power_down_timeout=None)
        stack.callback(direct.close)
        card_d = pcsc_peer.CardProcess(dport)
        stack.callback(card_d.close)
        place.card(card_d.proc.pid)
        card_d.insert()
        _wait(lambda: direct.state() != State.ABSENT, what="the direct vpcd sees the card")
        card_direct = direct.connect(timeout=10)
        assert (via_pcsc.backend, direct.backend) == ("pcsc", "direct")
        yield {"held": held, "paths": [
            harness.FuncPath("direct", {op: (lambda a=APDUS[op]: card_direct.transmit(a))
                                        for op in TX_OPS}),
            harness.FuncPath("pcsc", {op: (lambda a=APDUS[op]: card_pcsc.transmit(a))
                                      for op in TX_OPS})]}
    finally:
        stack.close()


@pytest.mark.parametrize("op", TX_OPS)
def test_transmit_direct_vs_pcsc(backends, op):
    for p in backends["paths"]:
        p.run(op, 1)  # both answer before anything is timed
    got = harness.interleave(backends["paths"], op, ROUNDS, 50, counts={"pcsc": 20})
    direct, pcsc = harness.median(got["direct"]), harness.median(got["pcsc"])
    ratio = pcsc / direct
    harness.record("backends", op, {"direct_ns": harness.summary(got["direct"]),
                                    "pcsc_ns": harness.summary(got["pcsc"]), "ratio": ratio})
    harness.record_table(f"Direct vs through pcscd, {op} (same vpcd card, Reader API)",
                         ["path", "median µs", "p10 µs", "p90 µs"],
                         [[name, round(harness.median(v) / 1e3, 1),
                           round(harness.percentile(v, 0.1) / 1e3, 1),
                           round(harness.percentile(v, 0.9) / 1e3, 1)]
                          for name, v in got.items()],
                         note=f"PC/SC / direct = {ratio:.2f}x (median per call)")
    print(f"\n{op}: direct {direct / 1e3:.1f} us, pcsc {pcsc / 1e3:.1f} us, "
          f"pcsc/direct {ratio:.2f}x")
    assert direct > 0 and pcsc > 0


def test_open_auto_fallback_vs_pcsc(backends):
    import scardio
    held = backends["held"]
    times = {"auto": [], "pcsc": []}
    for r in range(OPEN_ROUNDS):
        for backend in (("auto", "pcsc") if r % 2 == 0 else ("pcsc", "auto")):
            t = time.perf_counter_ns()
            reader = scardio.open_reader(held, backend=backend, power_down_timeout=None)
            times[backend].append(time.perf_counter_ns() - t)
            assert reader.backend == "pcsc"
            reader.close()
    auto, pcsc = harness.median(times["auto"]), harness.median(times["pcsc"])
    harness.record("backends", "open", {"auto_ns": harness.summary(times["auto"]),
                                        "pcsc_ns": harness.summary(times["pcsc"])})
    print(f"\nopen of a held reader: auto {auto / 1e6:.2f} ms, pcsc {pcsc / 1e6:.2f} ms "
          f"(fallback costs {(auto - pcsc) / 1e6:.2f} ms)")
    assert auto > 0 and pcsc > 0
