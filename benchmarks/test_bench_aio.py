"""asyncio overhead per operation: scardio.aio (AsyncReader / AsyncCard)
against the same reader API used synchronously, and the raw Device, on the
simulated reader, interleaved.  Every asyncio operation is an overlapped
IOCTL whose completion is harvested on the event loop."""

from __future__ import annotations

import asyncio
import contextlib
import os

import harness
import paths
from apdus import APDUS
from bench_common import next_lun

ROUNDS = int(os.environ.get("SCARDIO_BENCH_ROUNDS", "25"))
BATCH_NS = float(os.environ.get("SCARDIO_BENCH_BATCH_MS", "4")) * 1e6


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


def test_asyncio_overhead():
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
        ps = [paths.DevicePath(dev), paths.ReaderPath(reader), AsyncPath(ar, loop)]
        out = {}
        for op in ("state", "tx5", "tx4k"):
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
        harness.record("asyncio", "sim", out)
