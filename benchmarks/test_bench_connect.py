"""Reader-API connect + disconnect on the simulated reader, against pcscd +
pyscard's SCardConnect + SCardDisconnect on the same driver, interleaved.

  leave    connect() + disconnect(LEAVE): the card stays powered, a
           reconnect reuses it (pcscd: SCARD_LEAVE_CARD)
  unpower  connect() + disconnect(UNPOWER): a power cycle each time
           (pcscd: SCARD_UNPOWER_CARD)

Each scardio path runs with the default timeout (bounded: the connect loop
runs in the core as one operation on the device's I/O lane, see
scardio.runner) and with timeout=None (the loop in the calling thread).
The floor of the bounded path is its hand-off: the same loops run by the
core with no Python around them (Device.run_loop: the connect loop on the
lane, and for UNPOWER the power-down loop in the calling thread), also
measured.  Both CPU placements
are measured, because the bound's cost is a thread hand-off and that
depends on where the threads run:

  one CPU   this process (all its threads: the caller, the lane), pcscd and
            the pyscard worker pinned to the same single CPU: every
            hand-off, scardio's and pcscd's, is a context switch, and
            nothing spins
  two CPUs  nobody pinned (the scheduler places the threads; the caller and
            the lane spin briefly for each other when they run apart)

pcscd needs root and its own namespace (see docs/benchmarks.md).
"""

from __future__ import annotations

import contextlib
import os
import time

import pytest

import harness
import paths
from bench_common import SIM_PCSCD_NAME, next_lun

ROUNDS = int(os.environ.get("SCARDIO_BENCH_ROUNDS", "25"))
BATCH_NS = float(os.environ.get("SCARDIO_BENCH_BATCH_MS", "4")) * 1e6
OPS = ["leave", "unpower"]
PLACEMENTS = {"one CPU": "same", "two CPUs": "none"}
BOUNDED = "scardio connect (bounded)"
UNBOUNDED = "scardio connect (timeout=None)"
CORE = "the core's loops alone (bounded)"


def _cycle(reader, timeout, disposition):
    connect = reader.connect

    def f() -> None:
        connect(timeout=timeout).disconnect(disposition)
    return f


def _core_loops(stack: contextlib.ExitStack) -> harness.FuncPath:
    """Device.run_loop alone: the connect loop on the lane (bounded), and
    for UNPOWER the power-down loop after it; what the reader API adds
    nothing to."""
    from scardio._core import LOOP_CONNECT, LOOP_POWER_DOWN
    ops = {}
    for op in OPS:
        reader = paths.open_sim_reader(next_lun(), power_down_timeout=None)
        stack.callback(reader.close)
        run = reader.device.run_loop

        def leave(run=run) -> None:
            run(LOOP_CONNECT, 3, 8, 10.0)

        def unpower(run=run) -> None:
            run(LOOP_CONNECT, 3, 8, 10.0)
            run(LOOP_POWER_DOWN, 0, 4)
        ops[op] = leave if op == "leave" else unpower
        ops[op]()
    return harness.FuncPath(CORE, ops)


class _PcscdPath(harness.Path):
    name = "pcscd+pyscard"
    OPS = {"leave": "connect_leave", "unpower": "connect_unpower"}

    def __init__(self, worker):
        self.worker = worker

    def run(self, op: str, count: int) -> int:
        return self.worker.run(self.OPS[op], count)


@pytest.fixture(scope="module")
def connect_setup(request):
    """The scardio paths, and pcscd's (None when pcscd cannot run here)
    with the pids to pin alongside this process."""
    from scardio import Disposition
    stack = contextlib.ExitStack()
    try:
        ps = []
        for label, timeout in (("bounded", 10.0), ("timeout=None", None)):
            ops = {}
            for op, disp in (("leave", Disposition.LEAVE), ("unpower", Disposition.UNPOWER)):
                # one reader per op: a LEAVE loop's card stays powered
                reader = paths.open_sim_reader(next_lun())
                stack.callback(reader.close)
                reader.connect(timeout=timeout).disconnect(disp)
                ops[op] = _cycle(reader, timeout, disp)
            ps.append(harness.FuncPath(f"scardio connect ({label})", ops))
        ps.append(_core_loops(stack))
        pids = []
        pc = None
        try:
            pc = request.getfixturevalue("pcscd_env")
        except pytest.skip.Exception as exc:
            harness.record("connect", "pcscd_skipped", str(exc))
        if pc is not None:
            import pcsc_peer
            w = pcsc_peer.PyscardWorker()
            stack.callback(w.close)
            w.call("open", match=SIM_PCSCD_NAME, direct=True, apdus={})
            w.call("ctl", n=3500)  # insert the simulated card
            ps.append(_PcscdPath(w))
            pids = [pc["pcscd"].proc.pid, w.proc.pid]
        yield ps, pids
    finally:
        stack.close()


@contextlib.contextmanager
def _placed(where: str, pids):
    place = harness.Placement(PLACEMENTS[where])
    with place:
        for pid in pids:
            place.caller(pid)
        # the core re-reads a thread's affinity mask every 0.1 s: let every
        # thread see the new one (and the scheduler settle) before timing
        time.sleep(0.25)
        yield place


#: Issue 12, target 2: pcscd's time ÷ scardio's, bounded (the default timeout)
TARGETS = {"leave": 2.0, "unpower": 1.0}


def _register_target(op: str, where: str, pcscd_over_scardio) -> None:
    what = {"leave": "connect() + disconnect(LEAVE)",
            "unpower": "power-cycle connect() + disconnect(UNPOWER)"}[op]
    name = f"{what}: pcscd+pyscard ÷ scardio, with the default timeout (sim, {where})"
    if not pcscd_over_scardio:
        harness.record_target(name, None, TARGETS[op], "×", better="higher", target=2,
                              note="pcscd not run")
        return
    unbounded = pcscd_over_scardio.get(UNBOUNDED)
    core = pcscd_over_scardio.get(CORE)
    harness.record_target(
        name, pcscd_over_scardio.get(BOUNDED), TARGETS[op], "×", better="higher", target=2,
        note=(f"the core's loops alone (the hand-off to the lane that bounds a hung "
              f"driver, no Python around it) {core:.2f}×, with timeout=None "
              f"{unbounded:.2f}×: the rest is the reader API's Python")
        if unbounded and core else "")


# the quick set: LEAVE in both placements
@pytest.mark.parametrize("op,where", [
    pytest.param(op, where, marks=[pytest.mark.quick] if op == "leave" else [])
    for op in OPS for where in PLACEMENTS])
def test_connect_side_by_side(connect_setup, op, where, benchmark):
    connect_paths, pids = connect_setup
    with _placed(where, pids) as place:
        sizes = paths.batch_sizes(connect_paths, op, BATCH_NS)
        res = harness.interleave(connect_paths, op, ROUNDS, 0, counts=sizes)
        bounded = connect_paths[0]
        benchmark.pedantic(bounded.ops[op], rounds=20,
                           iterations=max(1, sizes[bounded.name] // 10))
    out = {name: harness.summary(v) for name, v in res.items()}
    out["_samples"] = res
    out["_batch"] = sizes
    out["_placement"] = place.describe()
    meds = {name: s["median"] for name, s in out.items() if not name.startswith("_")}
    peer = meds.get(_PcscdPath.name)
    if peer:
        out["_pcscd_over_scardio"] = {k: peer / v for k, v in meds.items() if k != _PcscdPath.name}
    harness.record("connect", f"{op} ({where})", out)
    line = ", ".join(f"{k}: {v / 1000:.2f} us" for k, v in meds.items())
    print(f"\nconnect + disconnect({op.upper()}), {where}: {line}")
    if peer:
        print("  pcscd / scardio: " + ", ".join(
            f"{k}: {r:.2f}" for k, r in out["_pcscd_over_scardio"].items()))
    _register_target(op, where, out.get("_pcscd_over_scardio"))
    benchmark.extra_info.update(meds)


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("label", ["bounded", "timeout=None"])
def test_connect_path(connect_setup, op, label, benchmark):
    """pytest-benchmark's own table, one row per scardio path (unpinned)."""
    path = next(p for p in connect_setup[0] if p.name == f"scardio connect ({label})")
    benchmark(path.ops[op])
