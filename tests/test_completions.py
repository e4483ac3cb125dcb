"""The completion dispatcher: exactly once, no lost completion, and a
harvest that costs what it delivers (not what is pending)."""

from __future__ import annotations

import threading

from scardio import IOCTL
from scardio.completions import Completions
from scardio.sim import SimControl, open_device
from helpers_reader import next_lun


class CountingOp:
    """An operation that counts how often it is asked whether it is done."""

    def __init__(self, op_id: int, done: bool = False) -> None:
        self.id = op_id
        self._done = done
        self.done_calls = 0

    def done(self) -> bool:
        self.done_calls += 1
        return self._done


class ListDevice:
    """harvest() answers what the test queued."""

    def __init__(self) -> None:
        self.ready: list[CountingOp] = []

    def harvest(self, timeout: float = 0.0) -> list[CountingOp]:
        out, self.ready = self.ready, []
        return out


def test_a_harvest_looks_only_at_what_it_popped():
    dev = ListDevice()
    c = Completions(dev)
    waiting = [CountingOp(i) for i in range(1000)]
    for op in waiting:
        c.watch(op, lambda op: None)
    before = [op.done_calls for op in waiting]
    finished = CountingOp(5000)
    got: list[int] = []
    c.watch(finished, lambda op: got.append(op.id))
    finished._done = True  # completes after the watch, as usual
    dev.ready = [finished]
    assert c.harvest() == 1 and got == [5000]
    assert [op.done_calls for op in waiting] == before  # no scan of the others
    assert c.pending() == 1000


def test_watching_an_operation_already_harvested_elsewhere_fires_at_once():
    dev = ListDevice()
    c = Completions(dev)
    op = CountingOp(1, done=True)
    dev.ready = [op]
    assert c.harvest() == 0  # popped before anyone watched it
    got: list[int] = []
    c.watch(op, lambda op: got.append(op.id))
    assert got == [1] and c.pending() == 0
    dev.ready = [op]
    assert c.harvest() == 0 and got == [1]  # never twice


def test_a_callback_resubmitting_completed_operations_does_not_recurse():
    dev = ListDevice()
    c = Completions(dev)
    depth = [0, 0]  # current, deepest
    ops = iter(range(10, 100000))

    def again(op: CountingOp) -> None:
        depth[0] += 1
        depth[1] = max(depth[1], depth[0])
        if op.id < 20000:
            c.watch(CountingOp(next(ops), done=True), again)
        depth[0] -= 1
    c.watch(CountingOp(1, done=True), again)
    assert depth[1] == 1 and c.pending() == 0


def test_real_device_two_harvesting_threads_deliver_each_completion_once():
    dev = open_device(next_lun())
    try:
        SimControl(dev).insert()
        c = Completions(dev)
        seen: dict[int, int] = {}
        lock = threading.Lock()

        def record(op) -> None:
            with lock:
                seen[op.id] = seen.get(op.id, 0) + 1
        stop = threading.Event()

        def harvester() -> None:
            while not stop.is_set():
                c.harvest(0.01)
        threads = [threading.Thread(target=harvester) for _ in range(2)]
        for t in threads:
            t.start()
        ids = []
        try:
            for _ in range(2000):
                op = dev.submit(IOCTL.GET_STATE, b"", 4)
                ids.append(op.id)
                c.watch(op, record)
            for _ in range(500):
                if len(seen) == len(ids):
                    break
                threading.Event().wait(0.01)
        finally:
            stop.set()
            for t in threads:
                t.join(5)
        assert sorted(seen) == sorted(ids)
        assert set(seen.values()) == {1}
        assert c.pending() == 0
    finally:
        dev.close()
