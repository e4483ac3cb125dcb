"""The reader API's per-call cost over the floor it stands on (issue 12,
target 1), on the simulated reader, ECHO 80 EE:

  Card.transmit ÷ Device.ioctl(TRANSMIT)      at 5 B and 261 B    target ≤ 2.5
  Reader.state() ÷ Device.ioctl(GET_STATE)                        target ≤ 2.5

The floor is Device.ioctl on a device that never ran an overlapped call.  A
third path, the same Device.ioctl on a device whose worker lanes have run
(as connect() makes them run), shows that a synchronous call does not pay
for idle lanes (target: 1.0).  A fourth, "Python floor", is the least any
Python transmit must add to that IOCTL: take a reader lock, prefix the I/O
header, build the Response (for GET_STATE: the State lookup).  Card.transmit's
common call runs in the binding and so goes below that floor.

``test_reader_api_ratios`` runs the three paths interleaved (harness.py) and
prints the ratios side by side; the ``benchmark`` tests time each path with
pytest-benchmark (``--benchmark-enable``) for its table, JSON and compare.

    python -m pytest benchmarks/test_bench_reader_api.py -s -p no:cacheprovider
"""

from __future__ import annotations

import contextlib
import os
from functools import partial
from typing import Callable, Dict, Iterator

import pytest

import harness
import paths
from apdus import APDUS, TRANSMIT_IN, TRANSMIT_OUT
from bench_common import next_lun

ROUNDS = int(os.environ.get("SCARDIO_BENCH_ROUNDS", "25"))
BATCH_NS = float(os.environ.get("SCARDIO_BENCH_BATCH_MS", "4")) * 1e6

OPS = ["state", "tx5", "tx261"]
FRESH = "Device.ioctl (fresh device)"
LANES = "Device.ioctl (lanes have run)"
API = "reader API"
PYFLOOR = "Python floor"
TARGET = 2.5


def start_lanes(dev) -> None:
    """Run one overlapped call on each lane (I/O and tracking), as connect()
    and a Monitor do, so that both lane threads are up and idle."""
    from scardio import IOCTL
    for code, size in ((IOCTL.GET_STATE, 4), (IOCTL.IS_PRESENT, 0)):
        dev.submit(code, b"", size).wait(5)


def device_ops(dev) -> Dict[str, Callable[[], object]]:
    from scardio import IOCTL
    ops: Dict[str, Callable[[], object]] = {
        "state": partial(dev.ioctl, int(IOCTL.GET_STATE), b"", 4)}
    for k in ("tx5", "tx261"):
        ops[k] = partial(dev.ioctl, int(IOCTL.TRANSMIT), TRANSMIT_IN[k], TRANSMIT_OUT[k])
    return ops


def python_floor_ops(dev) -> Dict[str, Callable[[], object]]:
    import struct
    import threading
    from scardio import IOCTL
    from scardio.sequences import _STATE_OF_OUTPUT
    from scardio.sequences.transmit import Response
    ioctl, lock, new = dev.ioctl, threading.RLock(), tuple.__new__
    header = struct.pack("<II", 2, 8)
    code, get_state = int(IOCTL.TRANSMIT), int(IOCTL.GET_STATE)

    def transmit(raw: bytes, size: int) -> object:
        lock.acquire()
        try:
            out = ioctl(code, header + raw, size)
        finally:
            lock.release()
        return new(Response, (out[8:-2], out[-2], out[-1]))

    ops: Dict[str, Callable[[], object]] = {
        "state": lambda: _STATE_OF_OUTPUT[ioctl(get_state, b"", 4)]}
    for k in ("tx5", "tx261"):
        ops[k] = partial(transmit, APDUS[k], TRANSMIT_OUT[k])
    return ops


@pytest.fixture(scope="module")
def api_paths() -> Iterator[Dict[str, harness.FuncPath]]:
    with contextlib.ExitStack() as stack:
        fresh = paths.open_sim_device(next_lun())
        stack.callback(fresh.close)
        laned = paths.open_sim_device(next_lun())
        stack.callback(laned.close)
        start_lanes(laned)
        reader = paths.open_sim_reader(next_lun())
        stack.callback(reader.close)
        card = reader.connect()  # the default timeout: through the lanes
        api: Dict[str, Callable[[], object]] = {"state": reader.state}
        for k in ("tx5", "tx261"):
            api[k] = partial(card.transmit, APDUS[k])
        yield {FRESH: harness.FuncPath(FRESH, device_ops(fresh)),
               LANES: harness.FuncPath(LANES, device_ops(laned)),
               API: harness.FuncPath(API, api),
               PYFLOOR: harness.FuncPath(PYFLOOR, python_floor_ops(fresh))}


WHAT = {"state": "Reader.state() ÷ Device.ioctl(GET_STATE)",
        "tx5": "Card.transmit ÷ Device.ioctl, 5 B",
        "tx261": "Card.transmit ÷ Device.ioctl, 261 B"}


def _register(table: Dict[str, dict]) -> None:
    """Issue 12, target 1: the per-round ratios to the fresh device, and
    the results table."""
    rows = []
    for op, row in table.items():
        med = row["median_ns"]
        harness.record_target(
            f"{WHAT[op]} (fresh device, per-round ratio)", row["api_ratio"], TARGET, "×",
            target=1, note=f"floor: the Python floor (lock, header, Response) is "
                           f"{row['python_floor_ratio']:.2f}×; lanes-have-run device "
                           f"{row['lanes_ratio']:.2f}×")
        rows.append([WHAT[op].split(" ÷ ")[0] + ("" if op == "state" else f" {op[2:]} B")]
                    + [f"{med[p] / 1000:.3f}" for p in (FRESH, LANES, API, PYFLOOR)]
                    + [f"{row[k]:.2f}×" for k in ("api_ratio", "lanes_ratio",
                                                   "python_floor_ratio")])
    harness.record_table(
        "The reader API over Device.ioctl (simulated reader)",
        ["operation", "Device.ioctl µs (fresh)", "Device.ioctl µs (lanes have run)",
         "reader API µs", "Python floor µs", "API ÷ fresh", "lanes ÷ fresh",
         "Python floor ÷ fresh"], rows,
        note=f"Medians of {ROUNDS} interleaved rounds; ratios are medians of per-round "
             "ratios to Device.ioctl on a device that never ran an overlapped call. The "
             "Python floor is the least any Python transmit adds to the IOCTL.")


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("path", [FRESH, LANES, API, PYFLOOR])
def test_reader_api_path(api_paths, path, op, benchmark):
    fn = api_paths[path].ops[op]
    result = benchmark(fn)
    assert result is not None


def test_reader_api_ratios(api_paths, capsys):
    ps = list(api_paths.values())
    table = {}
    for op in OPS:
        sizes = paths.batch_sizes(ps, op, BATCH_NS)
        res = harness.interleave(ps, op, ROUNDS, 0, counts=sizes)
        med = {name: harness.median(v) for name, v in res.items()}
        # per-round ratios, so that a slow round hits both sides alike
        api_ratio = harness.median(a / f for a, f in zip(res[API], res[FRESH]))
        lanes_ratio = harness.median(la / f for la, f in zip(res[LANES], res[FRESH]))
        floor_ratio = harness.median(p / f for p, f in zip(res[PYFLOOR], res[FRESH]))
        table[op] = {"median_ns": med, "api_ratio": api_ratio, "lanes_ratio": lanes_ratio,
                     "python_floor_ratio": floor_ratio, "_samples": res, "_batch": sizes}
        assert all(v > 0 for v in med.values())
    harness.record("reader_api", "ratios", table)
    _register(table)
    with capsys.disabled():
        m = harness.machine()
        print(f"\nreader API over Device.ioctl ({m['cpu_model']}, {m['nproc']} CPUs; "
              f"medians of {ROUNDS} interleaved rounds; target ≤ {TARGET})")
        print(f"  {'op':6} {'fresh ns':>9} {'lanes ns':>9} {'API ns':>9} {'floor ns':>9} "
              f"{'API÷fresh':>10} {'lanes÷fresh':>12} {'floor÷fresh':>12}")
        for op, row in table.items():
            med = row["median_ns"]
            print(f"  {op:6} {med[FRESH]:9.0f} {med[LANES]:9.0f} {med[API]:9.0f} "
                  f"{med[PYFLOOR]:9.0f} {row['api_ratio']:10.2f} {row['lanes_ratio']:12.2f} "
                  f"{row['python_floor_ratio']:12.2f}")
