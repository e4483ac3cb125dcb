"""Per-operation cost on the simulated reader: scardio (Device, reader API)
against the C floor, a ctypes binding and pcscd + pyscard, interleaved."""

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


@pytest.mark.parametrize("op", OPS)
def test_sim_op(sim_paths, op, benchmark):
    ps = [p for p in sim_paths if _supported(p, op)]
    if op.startswith("connect"):
        # connect cycles change the card's power state; run them last and
        # keep the transmit paths usable afterwards by not sharing readers.
        pass
    sizes = paths.batch_sizes(ps, op, BATCH_NS)
    rounds = ROUNDS if not op.startswith("connect") else max(5, ROUNDS // 2)
    res = harness.interleave(ps, op, rounds, 0, counts=sizes)
    out = {name: harness.summary(v) for name, v in res.items()}
    out["_samples"] = res
    out["_batch"] = sizes
    harness.record("sim", op, out)
    meds = {name: s["median"] for name, s in out.items() if not name.startswith("_")}
    line = ", ".join(f"{k}: {v / 1000:.3f} us" for k, v in meds.items())
    print(f"\n{op} ({DESCRIPTION.get(op, op)}): {line}")
    # pytest-benchmark's own view of the scardio Device path (when enabled)
    dp = next((p for p in ps if isinstance(p, paths.DevicePath)), None) \
        or next(p for p in ps if isinstance(p, paths.FuncPath))
    fn = dp.ops[op]
    benchmark.pedantic(fn, rounds=20, iterations=max(1, sizes[dp.name] // 10))
    benchmark.extra_info.update({k: v for k, v in meds.items()})
