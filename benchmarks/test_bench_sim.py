"""Per-operation cost on the simulated reader: scardio (Device, reader API)
against the C floor, a ctypes binding and pcscd + pyscard.

For each operation, first the interleaved comparison of every path
(test_sim_ratio: the figures of docs/benchmarks.md), then pytest-benchmark's
timing of each in-process path (test_sim_benchmark, one group per
operation).  The operation is a module-scoped parameter, so pytest runs both
tests of one operation back to back, in the order of OPS: the connect cycles,
which power the card down, come last."""

from __future__ import annotations

import contextlib
import os

import pytest

import harness
import paths
from apdus import DESCRIPTION
from bench_common import SIM_PCSCD_NAME, next_lun

ROUNDS = int(os.environ.get("SCARDIO_BENCH_ROUNDS", "25"))
BATCH_NS = float(os.environ.get("SCARDIO_BENCH_BATCH_MS", "4")) * 1e6

OPS = ["state", "tx5", "tx261", "tx4k", "connect", "connect_leave"]
QUICK_OPS = {"tx5"}
# The in-process paths pytest-benchmark times (the C floor and pcscd run in
# other processes and report their own batch times: harness only).
BENCH_PATHS = {"device": paths.DevicePath, "reader": paths.ReaderPath,
               "ctypes": paths.CtypesPath}
LABEL = dict(DESCRIPTION, state="GET_STATE", connect="connect + disconnect (power cycle)",
             connect_leave="connect + disconnect (leave powered)")


@pytest.fixture(scope="module",
                params=[pytest.param(op, marks=pytest.mark.quick) if op in QUICK_OPS else op
                        for op in OPS])
def op(request):
    return request.param


@pytest.fixture(scope="module")
def sim_paths(request):
    stack = contextlib.ExitStack()
    ps = []
    try:
        floor = paths.open_sim_floor(next_lun())
        stack.callback(floor.close)
        ps.append(paths.CFloorPath(floor))
        dev = paths.open_sim_device(next_lun())
        stack.callback(dev.close)
        ps.append(paths.DevicePath(dev))
        reader = paths.open_sim_reader(next_lun())
        stack.callback(reader.close)
        ps.append(paths.ReaderPath(reader))
        ch = paths.open_sim_ctypes(next_lun())
        stack.callback(ch.close)
        ps.append(paths.CtypesPath(ch))
        pc = None
        try:
            pc = request.getfixturevalue("pcscd_env")
        except pytest.skip.Exception as exc:
            harness.record("sim", "pcscd_skipped", str(exc))
        if pc is not None:
            import pcsc_peer
            from apdus import APDUS
            w = pcsc_peer.PyscardWorker()
            stack.callback(w.close)
            w.call("open", match=SIM_PCSCD_NAME, direct=True,
                   apdus={k: v.hex() for k, v in APDUS.items()})
            w.call("ctl", n=3500)
            w.call("connect")
            ps.append(paths.PyscardPath(w))
        yield ps
    finally:
        stack.close()


def _supported(p, op):
    if isinstance(p, paths.FuncPath):
        return op in p.ops
    if isinstance(p, paths.CFloorPath):
        return op != "connect_leave"
    return True


def _ratio(meds, a, b):
    if meds.get(a) is None or not meds.get(b):
        return None
    return meds[a] / meds[b]


def _record_targets(op, meds):
    """Issue 12, target 1: the reader API within 2.5x of Device.ioctl."""
    what = {"state": "Reader.state() ÷ Device.ioctl(GET_STATE)",
            "tx5": "Card.transmit ÷ Device.ioctl, 5 B",
            "tx261": "Card.transmit ÷ Device.ioctl, 261 B"}
    if op in what:
        harness.record_target(f"{what[op]} (sim)", _ratio(meds, "scardio reader API",
                                                           "scardio Device.ioctl"),
                              2.5, "×", target=1,
                              note="interleaved medians; floor: Device.ioctl on a device "
                                   "that never ran an overlapped call")


def test_sim_ratio(sim_paths, op):
    ps = [p for p in sim_paths if _supported(p, op)]
    sizes = paths.batch_sizes(ps, op, BATCH_NS)
    rounds = ROUNDS if not op.startswith("connect") else max(5, ROUNDS // 2)
    res = harness.interleave(ps, op, rounds, 0, counts=sizes)
    out = {name: harness.summary(v) for name, v in res.items()}
    out["_samples"] = res
    out["_batch"] = sizes
    harness.record("sim", op, out)
    meds = {name: s["median"] for name, s in out.items() if not name.startswith("_")}
    _record_targets(op, meds)
    line = ", ".join(f"{k}: {v / 1000:.3f} us" for k, v in meds.items())
    print(f"\n{op} ({LABEL[op]}): {line}")
    assert all(v > 0 for v in meds.values()), meds


@pytest.mark.parametrize("kind", list(BENCH_PATHS))
def test_sim_benchmark(sim_paths, op, kind, benchmark):
    path = next((p for p in sim_paths if type(p) is BENCH_PATHS[kind]), None)
    assert path is not None, kind
    if op not in path.ops:
        pytest.skip(f"{path.name} has no {op}")
    benchmark.group = f"sim {op}: {LABEL[op]}"
    benchmark.extra_info.update(path=path.name, op=op)
    benchmark(path.ops[op])
