"""asyncio overhead of one awaited operation, against the floor it stands on.

Every scardio.aio operation is an overlapped IOCTL: the loop hands it to the
device's lane thread and the lane hands the completion back through the
queue's eventfd, which the loop watches with ``add_reader``.  Two thread
hops, whatever the binding does.  This module measures, on the same loop:

  bare eventfd round trip   the two hops alone: the loop writes eventfd A,
                            a C thread blocked in read(A) writes eventfd B,
                            the loop's add_reader callback on B settles the
                            awaited future (the denominator of every ratio)
  core floor                Device.submit(GET_STATE) and the device queue's
                            descriptor in add_reader settling a future: the
                            hops through the core, no scardio.aio
  aio state / get_attribute / transmit 5 B
                            ``await reader.state()``,
                            ``await reader.get_attribute(VENDOR_NAME)``,
                            ``await card.transmit(5 B)`` on the simulated
                            reader

on the default asyncio loop and on uvloop (skipped when not installed),
with the far threads pinned to the loop's CPU or to another one (see
Bench).  ``test_aio_path`` gives pytest-benchmark's table (each round is a
batch of BATCH awaited operations, so divide by BATCH; ``extra_info`` has
the per-operation figure); ``test_aio_overhead_side_by_side`` interleaves
the paths round by round (benchmarks/harness.py) and records the medians,
the ratios to the bare round trip and the loop thread's CPU time per
operation.  Run as a script it serves batches on stdin, for paired runs of
two installations.  Linux only (os.eventfd) and needs gcc for the C
thread.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, Awaitable, Callable, Dict, List, Optional

import pytest

import harness
from apdus import APDUS
from bench_common import next_lun

ROUNDS = int(os.environ.get("SCARDIO_BENCH_ROUNDS", "25"))
#: Awaited operations per batch (one batch per round and path).
BATCH = int(os.environ.get("SCARDIO_BENCH_AIO_BATCH", "200"))

LOOP_KINDS = ("asyncio", "uvloop")
PATHS = ("bare eventfd round trip", "core floor", "aio state", "aio get_attribute",
         "aio transmit 5 B")
BARE = PATHS[0]

# The other end of the bare round trip: a C thread, so that no Python (and
# no GIL hand-off) sits on the far side, as on the core's lane thread.
ECHO_SOURCE = r"""
#include <pthread.h>
#include <stdint.h>
#include <unistd.h>

struct echo { int in, out; pthread_t thread; };

static void *echo_run(void *arg)
{
    struct echo *e = arg;
    uint64_t v, one = 1;
    for (;;) {
        if (read(e->in, &v, sizeof v) != (ssize_t)sizeof v)
            continue;
        if (v >= 1000)  /* the stop value */
            return NULL;
        if (write(e->out, &one, sizeof one) != (ssize_t)sizeof one)
            return NULL;
    }
}

int echo_start(struct echo *e, int in, int out)
{
    e->in = in;
    e->out = out;
    return pthread_create(&e->thread, NULL, echo_run, e);
}

int echo_join(struct echo *e) { return pthread_join(e->thread, NULL); }
"""

_lib: Optional[ctypes.CDLL] = None
_lib_lock = threading.Lock()


class _Echo(ctypes.Structure):
    _fields_ = [("fd_in", ctypes.c_int), ("fd_out", ctypes.c_int),
                ("thread", ctypes.c_ulong * 8)]  # room for any pthread_t


def echo_library() -> ctypes.CDLL:
    """Compile the echo thread once per process (skips without gcc)."""
    global _lib
    with _lib_lock:
        if _lib is not None:
            return _lib
        if not hasattr(os, "eventfd"):
            pytest.skip("needs os.eventfd (Linux)")
        if shutil.which("gcc") is None:
            pytest.skip("needs gcc for the echo thread")
        tmp = tempfile.mkdtemp(prefix="scardio-echo-")
        src = os.path.join(tmp, "echo.c")
        so = os.path.join(tmp, "libecho.so")
        with open(src, "w") as f:
            f.write(ECHO_SOURCE)
        subprocess.run(["gcc", "-O2", "-shared", "-fPIC", "-pthread", "-o", so, src],
                       check=True, timeout=60, capture_output=True)
        lib = ctypes.CDLL(so)
        shutil.rmtree(tmp, ignore_errors=True)  # mapped already
        lib.echo_start.argtypes = [ctypes.POINTER(_Echo), ctypes.c_int, ctypes.c_int]
        lib.echo_join.argtypes = [ctypes.POINTER(_Echo)]
        _lib = lib
        return lib


def new_loop(kind: str) -> asyncio.AbstractEventLoop:
    if kind == "uvloop":
        uvloop: Any = pytest.importorskip("uvloop")
        return uvloop.new_event_loop()  # type: ignore[no-any-return]
    return asyncio.new_event_loop()


class EchoRoundTrip:
    """The bare two-thread eventfd round trip, driven from `loop`."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.lib = echo_library()
        self.loop = loop
        self.to_thread = os.eventfd(0)  # blocking: the C thread reads it
        self.from_thread = os.eventfd(0, os.EFD_NONBLOCK)
        self.echo = _Echo()
        self.fut: Optional[asyncio.Future[None]] = None
        if self.lib.echo_start(ctypes.byref(self.echo), self.to_thread, self.from_thread):
            raise OSError("pthread_create failed")
        loop.add_reader(self.from_thread, self._ready)

    def _ready(self) -> None:
        os.eventfd_read(self.from_thread)
        fut, self.fut = self.fut, None
        if fut is not None:
            fut.set_result(None)

    async def once(self) -> None:
        self.fut = fut = self.loop.create_future()
        os.eventfd_write(self.to_thread, 1)
        await fut

    def close(self) -> None:
        self.loop.remove_reader(self.from_thread)
        os.eventfd_write(self.to_thread, 1000)
        self.lib.echo_join(ctypes.byref(self.echo))
        os.close(self.to_thread)
        os.close(self.from_thread)


class CoreFloor:
    """Device.submit + the queue's descriptor watched by the loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, device: Any) -> None:
        from scardio import IOCTL
        self.loop = loop
        self.device = device
        # A floor: the least Python around the hops (a plain int code, the
        # bound methods looked up once).
        self.code = int(IOCTL.GET_STATE)
        self.waiting: Dict[int, asyncio.Future[None]] = {}
        self._submit = device.submit
        self._harvest_ops = device.harvest
        self._new_future = loop.create_future
        self.fd = device.waitable()
        loop.add_reader(self.fd, self._harvest)

    def _harvest(self) -> None:
        pop = self.waiting.pop
        for op in self._harvest_ops(0.0):
            fut = pop(op.id, None)
            if fut is not None:
                fut.set_result(None)

    async def once(self) -> None:
        op = self._submit(self.code, b"", 4)
        self.waiting[op.id] = fut = self._new_future()
        await fut
        op.result()

    def close(self) -> None:
        self.loop.remove_reader(self.fd)


class LoopPath(harness.Path):
    """One awaited operation per call; a batch is one run_until_complete.

    Besides the wall time, each batch notes the CPU time the loop's thread
    spent per operation (``cpu_per_op``): what the loop itself pays, which
    the scheduling noise of a shared machine hardly moves."""

    def __init__(self, name: str, loop: asyncio.AbstractEventLoop,
                 once: Callable[[], Awaitable[object]]) -> None:
        self.name = name
        self.loop = loop
        self.once = once
        self.cpu_per_op: List[float] = []

    def run(self, op: str, count: int) -> int:
        once = self.once

        async def batch() -> tuple[int, int]:
            clock, cpu = time.perf_counter_ns, time.thread_time_ns
            c0, t0 = cpu(), clock()
            for _ in range(count):
                await once()
            return clock() - t0, cpu() - c0
        wall, spent = self.loop.run_until_complete(batch())
        self.cpu_per_op.append(spent / count)
        return wall


#: Where the far threads run: on the loop's CPU, or on another one.
PLACEMENTS = ("same CPU", "two CPUs")
MACHINE = harness.machine()  # before any pinning


def pick_cpus(placement: str) -> Optional[tuple[int, int]]:
    """(loop CPU, far-thread CPU) for `placement`; None: cannot pin here."""
    if not hasattr(os, "sched_setaffinity"):
        return None
    cpus = sorted(os.sched_getaffinity(0))
    if placement == "same CPU":
        return (cpus[0], cpus[0])
    return (cpus[0], cpus[1]) if len(cpus) >= 2 else None


class Bench:
    """Every path of this module on one loop of `kind`.

    Whether the far thread runs on the loop's CPU or another changes a
    round trip several times over on a VM (a cross-CPU wake-up is an
    interrupt to an idle vCPU), so placement is fixed: every far thread --
    the echo thread and the core's lane threads, which inherit the
    affinity of the thread that starts them -- is started while the loop's
    thread is pinned to the far CPU, and the loop then runs pinned to its
    own."""

    def __init__(self, kind: str, placement: str) -> None:
        self.kind = kind
        cpus = pick_cpus(placement)
        if cpus is None:
            pytest.skip(f"cannot pin threads for {placement!r} here")
        self.cpus: tuple[int, int] = cpus
        self.placement = placement
        self.loop = new_loop(kind)
        self.closers: List[Callable[[], None]] = [self.loop.close]
        mask = os.sched_getaffinity(0)
        try:
            os.sched_setaffinity(0, {self.cpus[1]})  # this thread only
            self.closers.insert(0, lambda: os.sched_setaffinity(0, mask))
            self._open()
            for p in self.paths.values():
                p.run("", 3)  # starts every lane thread on the far CPU
            os.sched_setaffinity(0, {self.cpus[0]})
        except BaseException:
            self.close()
            raise

    def _open(self) -> None:
        from scardio import Attr
        from scardio.aio import AsyncReader
        import paths
        echo = EchoRoundTrip(self.loop)
        self.closers.append(echo.close)
        dev = paths.open_sim_device(next_lun())  # powered, as the aio reader
        self.closers.append(dev.close)
        floor = CoreFloor(self.loop, dev)
        self.closers.append(floor.close)
        areader = AsyncReader(paths.open_sim_reader(next_lun()))
        self.closers.append(areader.close)
        card = self.loop.run_until_complete(areader.connect())
        apdu = APDUS["tx5"]
        vendor = int(Attr.VENDOR_NAME)
        self.paths: Dict[str, LoopPath] = {p.name: p for p in [
            LoopPath(PATHS[0], self.loop, echo.once),
            LoopPath(PATHS[1], self.loop, floor.once),
            LoopPath(PATHS[2], self.loop, areader.state),
            LoopPath(PATHS[3], self.loop, lambda: areader.get_attribute(vendor)),
            LoopPath(PATHS[4], self.loop, lambda: card.transmit(apdu)),
        ]}

    def close(self) -> None:
        while self.closers:
            try:
                self.closers.pop()()
            except Exception:
                pass


@pytest.fixture(scope="module", params=[(k, p) for k in LOOP_KINDS for p in PLACEMENTS],
                ids=lambda kp: f"{kp[0]}-{kp[1].replace(' ', '-')}")
def bench(request: Any) -> Any:
    kind, placement = request.param
    try:
        b = Bench(kind, placement)
    except pytest.skip.Exception as exc:
        harness.record_target(_target_name(kind, placement), None, TARGET, "×", target=3,
                              note=f"skipped: {exc}")
        raise
    try:
        yield b
    finally:
        b.close()


@pytest.mark.parametrize("path", PATHS)
def test_aio_path(benchmark: Any, bench: Bench, path: str) -> None:
    p = bench.paths[path]
    p.run("", BATCH)  # warm-up
    benchmark.group = (f"aio overhead ({bench.kind} loop, {bench.placement}), "
                       f"{BATCH} awaits per round")
    benchmark.extra_info.update(loop=bench.kind, placement=bench.placement,
                                awaits_per_round=BATCH)
    ns = benchmark(p.run, "", BATCH)
    benchmark.extra_info["last_round_us_per_op"] = ns / BATCH / 1000
    assert ns > 0


TARGET = 1.5
AIO_PATHS = PATHS[2:]
_table_rows: Dict[str, List[str]] = {}


def _target_name(kind: str, placement: str) -> str:
    return f"scardio.aio ÷ bare eventfd round trip ({kind} loop, {placement}; slowest op)"


def _register(bench: Bench, meds: Dict[str, float], cpu: Dict[str, float]) -> None:
    """Issue 12, target 3: the slowest awaited operation over the bare round
    trip on this loop and placement; one row of the results table."""
    base = meds[BARE]
    ratios = {n: meds[n] / base for n in PATHS}
    worst = max(AIO_PATHS, key=ratios.__getitem__)
    others = ", ".join(f"{n[4:]} {ratios[n]:.2f}×" for n in AIO_PATHS if n != worst)
    harness.record_target(_target_name(bench.kind, bench.placement), ratios[worst], TARGET,
                          "×", target=3,
                          note=f"{worst}; {others}; floor: the core floor (Device.submit + "
                               f"queue, no scardio.aio) is {ratios[PATHS[1]]:.2f}×")
    _table_rows[f"{bench.kind}, {bench.placement}"] = (
        [f"{bench.kind}, {bench.placement}", f"{base / 1000:.2f}"]
        + [f"{ratios[n]:.2f}×" for n in PATHS[1:]]
        + [f"{cpu[n] / cpu[BARE]:.2f}×" for n in AIO_PATHS])
    harness.record_table(
        "asyncio: one awaited operation ÷ a bare eventfd round trip",
        ["loop, placement", "bare round trip µs", *PATHS[1:],
         *(f"loop CPU, {n[4:]}" for n in AIO_PATHS)], list(_table_rows.values()),
        note=f"Ratios of medians over {ROUNDS} interleaved rounds of {BATCH} awaits in one "
             "process; the far threads (echo thread, lane threads) pinned to the loop's "
             "CPU or to the other one. \"loop CPU\": the loop thread's CPU time per "
             "operation ÷ the bare round trip's.")


def test_aio_overhead_side_by_side(bench: Bench) -> None:
    ps = list(bench.paths.values())
    for p in ps:
        p.cpu_per_op.clear()
    res = harness.interleave(ps, "", ROUNDS, BATCH)
    out: Dict[str, Any] = {name: harness.summary(v) for name, v in res.items()}
    meds = {name: s["median"] for name, s in out.items()}
    base = meds[BARE]
    out["ratio_to_bare"] = {name: m / base for name, m in meds.items()}
    cpu = {p.name: harness.median(p.cpu_per_op[1:]) for p in ps}  # less the warm-up
    out["loop_cpu_ns"] = cpu
    out["loop_cpu_ratio_to_bare"] = {name: c / cpu[BARE] for name, c in cpu.items()}
    out["_samples"] = res
    loop_cpu, far_cpu = bench.cpus
    out["placement"] = f"loop on CPU {loop_cpu}, far threads on CPU {far_cpu}"
    harness.record("aio_overhead", f"{bench.kind}, {bench.placement}", out)
    _register(bench, meds, cpu)
    lines = [f"\naio overhead, {bench.kind} loop, {bench.placement} ({MACHINE['cpu_model']}, "
             f"{MACHINE['nproc']} CPUs, {out['placement']}; medians of "
             f"{ROUNDS} interleaved rounds of {BATCH} awaits):"]
    for name, m in meds.items():
        lines.append(f"  {name:26s} {m / 1000:7.2f} us   {m / base:5.2f}x bare   "
                     f"loop thread CPU {cpu[name] / 1000:6.2f} us "
                     f"({cpu[name] / cpu[BARE]:4.2f}x)")
    print("\n".join(lines))
    assert all(m > 0 for m in meds.values())


if __name__ == "__main__":  # pragma: no cover - a worker for paired runs
    # Serves "run <path index> <count>" lines with the batch's wall and loop
    # thread CPU ns, so that a driver can interleave two installations of
    # scardio in one run.
    harness.ensure_paths()
    b = Bench(sys.argv[1] if len(sys.argv) > 1 else "asyncio",
              sys.argv[2] if len(sys.argv) > 2 else PLACEMENTS[0])
    names = list(b.paths)
    try:
        for line in sys.stdin:
            words = line.split()
            if not words or words[0] == "quit":
                break
            p = b.paths[names[int(words[1])]]
            wall = p.run("", int(words[2]))
            print(wall, int(p.cpu_per_op[-1] * int(words[2])), flush=True)
    finally:
        b.close()
