"""Reliability, part 5: no leaks from Python.

The C core and the simulated driver are checked under valgrind by
tests/test_native.py.  Here the whole stack is driven from Python: one
million synchronous GET_STATE IOCTLs, a few hundred thousand overlapped
submit/wait and submit/harvest operations, transmits (including failing
ones: errors allocate exception objects) and open/close cycles; resident
memory (/proc/self/statm), threads (/proc/self/task), descriptors
(/proc/self/fd) and live Python objects stay flat after a warm-up.
"""

from __future__ import annotations

import gc
import itertools
import os
import struct
import time

import pytest

import scardio.sim
from scardio import IOCTL, Device, errors
from scardio.sim import SimControl

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/self/statm"),
                                reason="needs Linux /proc")

_luns = itertools.count(0x25000)
PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
RSS_SLACK = 2 * 1024 * 1024   # bytes: allocator noise, not a per-call leak
ECHO = struct.pack("<II", 2, 8) + bytes([0x80, 0xEE, 0, 0, 4, 1, 2, 3, 4, 4])


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def snapshot() -> dict:
    gc.collect()
    time.sleep(0.02)  # detached worker threads finish exiting
    return {"rss": rss(), "threads": len(os.listdir("/proc/self/task")),
            "fds": len(os.listdir("/proc/self/fd")), "objects": len(gc.get_objects())}


def assert_flat(before: dict, after: dict, what: str) -> None:
    assert after["rss"] - before["rss"] <= RSS_SLACK, (what, before, after)
    assert after["threads"] <= before["threads"], (what, before, after)
    assert after["fds"] <= before["fds"], (what, before, after)
    assert after["objects"] - before["objects"] <= 200, (what, before, after)


def connected_sim() -> tuple[Device, SimControl]:
    dev = scardio.sim.open_device(next(_luns))
    sim = SimControl(dev)
    sim.insert()
    dev.ioctl(IOCTL.POWER, struct.pack("<I", 1), 33)
    dev.ioctl(IOCTL.SET_PROTOCOL, struct.pack("<I", 3), 4)
    return dev, sim


def test_one_million_synchronous_ioctls_are_flat():
    dev, _ = connected_sim()
    try:
        ioctl = dev.ioctl
        code = IOCTL.GET_STATE
        for _ in range(100_000):                  # warm-up
            ioctl(code, b"", 4)
        before = snapshot()
        t = time.monotonic()
        for _ in range(1_000_000):
            ioctl(code, b"", 4)
        took = time.monotonic() - t
        after = snapshot()
        assert_flat(before, after, f"1M GET_STATE in {took:.2f} s")
    finally:
        dev.close()


def test_transmits_and_failures_are_flat():
    dev, sim = connected_sim()
    try:
        bad = struct.pack("<II", 2, 99) + b"\x00"   # malformed: InvalidParameterError

        def run(n: int) -> None:
            for k in range(n):
                out = dev.ioctl(IOCTL.TRANSMIT, ECHO, 300)
                assert len(out) == 8 + 6
                if k % 10 == 0:
                    try:
                        dev.ioctl(IOCTL.TRANSMIT, bad, 300)
                    except errors.InvalidParameterError:
                        pass
                if k % 1000 == 0:   # a large response: the no-copy path
                    dev.ioctl(IOCTL.TRANSMIT, struct.pack("<II", 2, 8) +
                              bytes([0x80, 0xEE, 0, 0, 0, 0x10, 0]), 8 + 4096 + 2)

        run(30_000)
        before = snapshot()
        run(300_000)
        assert_flat(before, snapshot(), "300k transmits")
    finally:
        dev.close()


def test_overlapped_operations_are_flat():
    dev, _ = connected_sim()
    try:
        def run(waited: int, batches: int) -> None:
            for _ in range(waited):                         # submit + wait
                dev.submit(IOCTL.TRANSMIT, ECHO, 300).wait(5)
            for _ in range(batches):                        # submit many, harvest
                ops = [dev.submit(IOCTL.GET_STATE, b"", 4) for _ in range(200)]
                got = 0
                deadline = time.monotonic() + 10
                while got < len(ops) and time.monotonic() < deadline:
                    got += len(dev.harvest(0.5))
                assert got == len(ops)
            for _ in range(200):                            # dropped while pending
                dev.submit(IOCTL.IS_ABSENT)                 # card is in: pends
                dev.cancel_all()

        run(2_000, 50)
        before = snapshot()
        run(20_000, 1_000)                                  # 220,000 operations
        after = snapshot()
        assert dev.harvest(0.05) == []
        assert_flat(before, after, "220k overlapped operations")
    finally:
        dev.close()


def test_open_close_cycles_are_flat():
    def run(n: int) -> None:
        for _ in range(n):
            dev = scardio.sim.open_device(next(_luns))
            sim = SimControl(dev)
            dev.submit(IOCTL.IS_PRESENT)        # pending at close
            sim.insert()
            dev.submit(IOCTL.GET_STATE, b"", 4).wait(5)
            dev.close()
            del dev, sim

    run(200)
    before = snapshot()
    run(2_000)
    assert_flat(before, snapshot(), "2000 open/close cycles")
