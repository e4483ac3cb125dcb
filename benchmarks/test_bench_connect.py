"""Reader-API connect + disconnect on the simulated reader, against pcscd +
pyscard's SCardConnect + SCardDisconnect on the same driver, interleaved.

  leave    connect() + disconnect(LEAVE): the card stays powered, a
           reconnect reuses it (pcscd: SCARD_LEAVE_CARD)
  unpower  connect() + disconnect(UNPOWER): a power cycle each time
           (pcscd: SCARD_UNPOWER_CARD)

Each scardio path runs with the default timeout (bounded: the connect loop
runs as one unit on the device's I/O lane) and with timeout=None (the
unbounded floor: the IOCTLs in the calling thread).  pcscd needs root and
its own namespace (see docs/benchmarks.md).
"""

from __future__ import annotations

import contextlib
import os

import pytest

import harness
import paths
from bench_common import SIM_PCSCD_NAME, next_lun

ROUNDS = int(os.environ.get("SCARDIO_BENCH_ROUNDS", "25"))
BATCH_NS = float(os.environ.get("SCARDIO_BENCH_BATCH_MS", "4")) * 1e6
OPS = ["leave", "unpower"]


def _cycle(reader, timeout, disposition):
    connect = reader.connect

    def f() -> None:
        connect(timeout=timeout).disconnect(disposition)
    return f


class _PcscdPath(harness.Path):
    name = "pcscd+pyscard"
    OPS = {"leave": "connect_leave", "unpower": "connect_unpower"}

    def __init__(self, worker):
        self.worker = worker

    def run(self, op: str, count: int) -> int:
        return self.worker.run(self.OPS[op], count)


@pytest.fixture(scope="module")
def connect_paths(request):
    from scardio import Disposition
    stack = contextlib.ExitStack()
    ps = []
    try:
        for label, timeout in (("bounded", 10.0), ("timeout=None", None)):
            ops = {}
            for op, disp in (("leave", Disposition.LEAVE), ("unpower", Disposition.UNPOWER)):
                # one reader per op: a LEAVE loop's card stays powered
                reader = paths.open_sim_reader(next_lun())
                stack.callback(reader.close)
                reader.connect(timeout=timeout).disconnect(disp)
                ops[op] = _cycle(reader, timeout, disp)
            ps.append(harness.FuncPath(f"scardio connect ({label})", ops))
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
        yield ps
    finally:
        stack.close()


#: Issue 12, target 2: pcscd's time ÷ scardio's, bounded (the default timeout)
TARGETS = {"leave": 2.0, "unpower": 1.0}


def _register_target(op: str, pcscd_over_scardio) -> None:
    what = {"leave": "connect() + disconnect(LEAVE)",
            "unpower": "power-cycle connect() + disconnect(UNPOWER)"}[op]
    name = f"{what}: pcscd+pyscard ÷ scardio, with the default timeout (sim)"
    if not pcscd_over_scardio:
        harness.record_target(name, None, TARGETS[op], "×", better="higher", target=2,
                              note="pcscd not run")
        return
    unbounded = pcscd_over_scardio.get("scardio connect (timeout=None)")
    harness.record_target(
        name, pcscd_over_scardio.get("scardio connect (bounded)"), TARGETS[op], "×",
        better="higher", target=2,
        note=f"floor: the one lane hop that bounds a hung driver; with timeout=None "
             f"{unbounded:.2f}×" if unbounded else "")


@pytest.mark.parametrize("op", OPS)
def test_connect_side_by_side(connect_paths, op, benchmark):
    sizes = paths.batch_sizes(connect_paths, op, BATCH_NS)
    res = harness.interleave(connect_paths, op, ROUNDS, 0, counts=sizes)
    out = {name: harness.summary(v) for name, v in res.items()}
    out["_samples"] = res
    out["_batch"] = sizes
    meds = {name: s["median"] for name, s in out.items() if not name.startswith("_")}
    peer = meds.get(_PcscdPath.name)
    if peer:
        out["_pcscd_over_scardio"] = {k: peer / v for k, v in meds.items() if k != _PcscdPath.name}
    harness.record("connect", op, out)
    line = ", ".join(f"{k}: {v / 1000:.2f} us" for k, v in meds.items())
    print(f"\nconnect + disconnect({op.upper()}): {line}")
    if peer:
        print("  pcscd / scardio: " + ", ".join(
            f"{k}: {r:.2f}" for k, r in out["_pcscd_over_scardio"].items()))
    _register_target(op, out.get("_pcscd_over_scardio"))
    bounded = connect_paths[0]
    benchmark.pedantic(bounded.ops[op], rounds=20,
                       iterations=max(1, sizes[bounded.name] // 10))
    benchmark.extra_info.update(meds)


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("label", ["bounded", "timeout=None"])
def test_connect_path(connect_paths, op, label, benchmark):
    """pytest-benchmark's own table, one row per scardio path."""
    path = next(p for p in connect_paths if p.name == f"scardio connect ({label})")
    benchmark(path.ops[op])
