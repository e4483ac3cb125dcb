"""The same APDU and card-detection figures on Debian's vpcd driver with the
stdlib test card (tests/vpcd_card.py, run in a process of its own).

What makes the vpcd figures comparable: every call is a TCP round trip to
the card process, and on a shared VM that round trip costs several times
more when the card process runs on another CPU than the caller (20 µs vs
60-120 µs here), whichever path makes the call.  So:

- the scardio paths (Device.ioctl and the reader API) share one vpcd
  channel and one card process;
- the other paths cannot share it (a vpcd channel belongs to the process
  that opened it: the C floor and pcscd are other processes; the ctypes
  binding uses the next slot), so each has its own card process, and
- every process of every path (this one, the C floor, pcscd, the pyscard
  worker and all card processes) is pinned to the same CPU for the whole
  module (harness.Placement; SCARDIO_BENCH_PLACEMENT=split puts the card
  processes on another CPU, =none leaves placement to the scheduler).

Per operation: the interleaved comparison (test_vpcd_ratio), then
pytest-benchmark's timing of each in-process path (test_vpcd_benchmark)."""

from __future__ import annotations

import contextlib
import os
import time

import pytest

import events
import harness
import paths
from apdus import APDUS
from bench_common import VPCD_PCSCD_NAME, free_port

pytestmark = pytest.mark.vpcd

ROUNDS = int(os.environ.get("SCARDIO_BENCH_ROUNDS", "25"))
BATCH_NS = float(os.environ.get("SCARDIO_BENCH_BATCH_MS", "4")) * 1e6 * 2
EVENT_ROUNDS = int(os.environ.get("SCARDIO_BENCH_VPCD_EVENT_ROUNDS", "15"))
OPS = ["state", "tx5", "tx261", "tx4k"]
QUICK_OPS = {"tx5"}
BENCH_PATHS = {"device": paths.DevicePath, "reader": paths.ReaderPath,
               "ctypes": paths.CtypesPath}


@pytest.fixture(scope="module",
                params=[pytest.param(op, marks=pytest.mark.quick) if op in QUICK_OPS else op
                        for op in OPS])
def op(request):
    return request.param


def _wait(pred, timeout=10.0, what="condition"):
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.01)


class VpcdFloor(paths.CFloorPath):
    def run(self, op, count):
        return self.floor.run("presence" if op == "state" else op, count)


@pytest.fixture(scope="module")
def vpcd_env(request):
    if not os.path.exists(harness.VPCD_LIBRARY):
        pytest.skip("vsmartcard-vpcd is not installed")
    import cfloor
    import ctypes_ifd
    import pcsc_peer
    from scardio import IOCTL, Device, Reader, State
    stack = contextlib.ExitStack()
    env = {"paths": []}
    try:
        # Pinned first, so that every process started below inherits it.
        place = stack.enter_context(harness.Placement())
        harness.record("vpcd", "placement", place.describe())
        env["placement"] = place
        # C floor: its own process, its own vpcd, its own port and card.
        pc = free_port()
        floor = cfloor.CFloor(harness.VPCD_LIBRARY, f"/dev/null:{pc:#x}", 0)
        stack.callback(floor.close)
        card_c = pcsc_peer.CardProcess(pc)
        stack.callback(card_c.close)
        place.card(card_c.proc.pid)
        card_c.insert()
        _wait(lambda: floor.run("presence", 1) >= 0 and floor.command("run presence 1")
              and floor.power() == 0, what="C floor power-up")
        env["paths"].append(VpcdFloor(floor))

        # scardio: slot 0 of this process's vpcd; ctypes: slot 1 (port + 1).
        ps = free_port()
        dev = Device.open_ifd(harness.VPCD_LIBRARY, f"/dev/null:{ps:#x}", 0)
        stack.callback(dev.close)
        card_s = pcsc_peer.CardProcess(ps)
        stack.callback(card_s.close)
        place.card(card_s.proc.pid)
        card_s.insert()
        _wait(lambda: dev.ioctl(IOCTL.GET_STATE, b"", 4)[0] != State.ABSENT,
              what="scardio sees the vpcd card")
        paths.device_connect(dev)
        env["paths"].append(paths.DevicePath(dev))
        reader = Reader(dev, power_down_timeout=None)
        env["paths"].append(paths.ReaderPath(reader))
        env["dev"], env["card_s"] = dev, card_s

        ch = ctypes_ifd.IfdChannel(harness.VPCD_LIBRARY, f"/dev/null:{ps:#x}", 1)
        stack.callback(ch.close)
        card_t = pcsc_peer.CardProcess(ps + 1)
        stack.callback(card_t.close)
        place.card(card_t.proc.pid)
        card_t.insert()
        _wait(ch.present, what="ctypes sees the vpcd card")
        ch.power()
        env["paths"].append(paths.CtypesPath(ch))

        try:
            pe = request.getfixturevalue("pcscd_env")
        except pytest.skip.Exception as exc:
            pe = None
            harness.record("vpcd", "pcscd_skipped", str(exc))
        if pe is not None and pe["vpcd_port"]:
            place.caller(pe["pcscd"].proc.pid)  # started before this module
            card_p = pcsc_peer.CardProcess(pe["vpcd_port"])
            stack.callback(card_p.close)
            place.card(card_p.proc.pid)
            card_p.insert()
            w = pcsc_peer.PyscardWorker()
            stack.callback(w.close)
            w.call("open", match=VPCD_PCSCD_NAME, apdus={k: v.hex() for k, v in APDUS.items()})
            w.call("connect", read_timeout=20)
            env["paths"].append(paths.PyscardPath(w))
            env["worker"], env["card_p"] = w, card_p
        yield env
    finally:
        stack.close()


def test_vpcd_ratio(vpcd_env, op):
    ps = vpcd_env["paths"]
    sizes = paths.batch_sizes(ps, op, BATCH_NS)
    res = harness.interleave(ps, op, ROUNDS, 0, counts=sizes)
    out = {name: harness.summary(v) for name, v in res.items()}
    out["_samples"] = res
    out["_batch"] = sizes
    harness.record("vpcd", op, out)
    meds = {k: v["median"] for k, v in out.items() if not k.startswith("_")}
    print(f"\nvpcd {op} (placement {vpcd_env['placement'].mode}): "
          + ", ".join(f"{k}: {v / 1000:.1f} us" for k, v in meds.items()))
    assert all(v > 0 for v in meds.values()), meds


@pytest.mark.parametrize("kind", list(BENCH_PATHS))
def test_vpcd_benchmark(vpcd_env, op, kind, benchmark):
    path = next(p for p in vpcd_env["paths"] if type(p) is BENCH_PATHS[kind])
    benchmark.group = f"vpcd {op} (placement {vpcd_env['placement'].mode})"
    benchmark.extra_info.update(path=path.name, op=op,
                                placement=vpcd_env["placement"].describe())
    benchmark(path.ops[op])


def test_vpcd_event_latency(vpcd_env):
    """scardio IS_PRESENT/IS_ABSENT (10 ms presence poll) against pcscd
    (400 ms poll) seen through SCardGetStatusChange and CardMonitor."""
    dev, card_s = vpcd_env["dev"], vpcd_env["card_s"]
    card_s.remove()
    from scardio import IOCTL
    dev.submit(IOCTL.IS_ABSENT).wait(5)

    def trig_s(kind):
        return card_s.insert() if kind == "insert" else card_s.remove()
    trackers = [events.DeviceTracking(dev, trig_s)]
    trackers[0].name = "scardio Device IS_PRESENT/IS_ABSENT (10 ms poll)"
    w = vpcd_env.get("worker")
    if w is not None:
        card_p = vpcd_env["card_p"]
        w.call("disconnect")
        card_p.remove()
        time.sleep(1.0)

        def trig_p(kind):
            return card_p.insert() if kind == "insert" else card_p.remove()
        trackers.append(events.PyscardTracking(w, "gsc", external=trig_p))
    # jitter of one pcscd poll period so events land at random phases
    res = events.run_interleaved(trackers, EVENT_ROUNDS, pause=0.05, jitter=0.4)
    if w is not None:
        cm = events.PyscardTracking(w, "monitor", external=trackers[-1].external)
        try:
            res.update(events.run_interleaved([cm], max(5, EVENT_ROUNDS // 2), pause=0.05,
                                              jitter=0.4))
        finally:
            cm.close()
    out = {}
    for name, kinds in res.items():
        out[name] = {k: harness.summary(v) for k, v in kinds.items()}
        out[name]["_samples"] = kinds
        print(f"\nvpcd {name}: " + ", ".join(
            f"{k} median {harness.median(v):.2f} ms" for k, v in kinds.items()))
    harness.record("events_vpcd", "latency_ms", out)
