"""asyncio overhead per operation: scardio.aio (AsyncReader / AsyncCard)
against the same reader API used synchronously, and the raw Device, on the
simulated reader, interleaved.  Every asyncio operation is an overlapped
IOCTL whose completion is harvested on the event loop.

test_asyncio_overhead is the interleaved comparison; test_aio_benchmark
times each path with pytest-benchmark.  An awaited call cannot be timed
alone from synchronous code without timing the event loop's start and stop
as well, so every path there runs BENCH_OPS operations per timed call
(the awaits inside one run_until_complete), the same number for each."""

from __future__ import annotations

import asyncio
import contextlib
import os

import pytest

import harness
import paths
from apdus import APDUS
from bench_common import next_lun

ROUNDS = int(os.environ.get("SCARDIO_BENCH_ROUNDS", "25"))
BATCH_NS = float(os.environ.get("SCARDIO_BENCH_BATCH_MS", "4")) * 1e6
OPS = ("state", "tx5", "tx4k")
BENCH_OPS = 100


class AsyncPath(harness.Path):
    name = "scardio.aio (await)"

    def __init__(self, areader, loop):
        self.areader = areader
        self.loop = loop
        self.card = loop.run_until_complete(areader.connect())

    def run(self, op: str, count: int) -> int:
        import time

        async def batch() -> int:
            if op == "state":
                f = self.areader.state
                t0 = time.perf_counter_ns()
                for _ in range(count):
                    await f()
            else:
                tx, apdu = self.card.transmit, APDUS[op]
                t0 = time.perf_counter_ns()
                for _ in range(count):
                    await tx(apdu)
            return time.perf_counter_ns() - t0
        return self.loop.run_until_complete(batch())


@pytest.fixture(scope="module")
def aio_paths():
    from scardio.aio import AsyncReader
    stack = contextlib.ExitStack()
    loop = asyncio.new_event_loop()
    stack.callback(loop.close)
    with stack:
        dev = paths.open_sim_device(next_lun())
        stack.callback(dev.close)
        reader = paths.open_sim_reader(next_lun())
        stack.callback(reader.close)
        areader_r = paths.open_sim_reader(next_lun())
        ar = AsyncReader(areader_r)
        stack.callback(ar.close)
        yield [paths.DevicePath(dev), paths.ReaderPath(reader), AsyncPath(ar, loop)]


def test_asyncio_overhead(aio_paths):
    ps = aio_paths
    out = {}
    for op in OPS:
        sizes = paths.batch_sizes(ps, op, BATCH_NS)
        res = harness.interleave(ps, op, ROUNDS, 0, counts=sizes)
        s = {name: harness.summary(v) for name, v in res.items()}
        s["_samples"] = res
        meds = {n: v["median"] for n, v in s.items() if not n.startswith("_")}
        s["overhead_vs_sync_reader_ns"] = meds[ps[2].name] - meds[ps[1].name]
        s["overhead_vs_device_ns"] = meds[ps[2].name] - meds[ps[0].name]
        out[op] = s
        print(f"\nasyncio {op}: " + ", ".join(f"{k}: {v / 1000:.2f} us"
                                             for k, v in meds.items())
              + f"; asyncio overhead {s['overhead_vs_sync_reader_ns'] / 1000:.2f} us/op")
        assert all(v > 0 for v in meds.values()), meds
    harness.record("asyncio", "sim", out)


@pytest.mark.parametrize("op", [pytest.param("tx5", marks=pytest.mark.quick), "state", "tx4k"])
@pytest.mark.parametrize("kind", ["device", "reader", "aio"])
def test_aio_benchmark(aio_paths, op, kind, benchmark):
    path = aio_paths[["device", "reader", "aio"].index(kind)]
    benchmark.group = f"asyncio {op}, {BENCH_OPS} operations per call"
    benchmark.extra_info.update(path=path.name, op=op, ops_per_call=BENCH_OPS)
    benchmark(path.run, op, BENCH_OPS)
