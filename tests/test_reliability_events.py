"""Reliability, part 4: no lost (or invented) card events.

10,000 insert/remove cycles on the simulated reader, as fast as the vendor
controls go, while a consumer tracks the card: every arrival and departure
is delivered exactly once and in order, checked against the simulated
driver's own counters (SimControl.counters().insertions / .removals).  The
same with the consumer deliberately slow (so thousands of events back up),
at Device level (alternating IS_PRESENT / IS_ABSENT) and through scardio's
Monitor (fast queue consumer, and a callback that sleeps on the monitor
thread itself).

The core can promise this for drivers that count card events (the sim
answers SCIO_IFD_TAG_CARD_EVENTS of native/ifd/ifd_ext.h); drivers that
only answer "present / absent" can merge an insert+remove that happens
between two polls, which no resource manager can see either.
"""

from __future__ import annotations

import itertools
import threading
import time

import pytest

import scardio.sim
from scardio import IOCTL, Device, errors
from scardio.sim import SimControl

CYCLES = 10_000
WAIT = 5.0
_luns = itertools.count(0x24000)


class Producer(threading.Thread):
    """Insert and remove the card `cycles` times, as fast as possible."""

    def __init__(self, sim: SimControl, cycles: int) -> None:
        super().__init__(daemon=True, name="card-flipper")
        self.sim, self.cycles = sim, cycles
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            for _ in range(self.cycles):
                self.sim.insert()
                self.sim.remove()
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc


def consume_device_events(dev: Device, cycles: int, slow_every: int = 0) -> list[str]:
    """Alternate IS_PRESENT / IS_ABSENT; one event per completion."""
    seen: list[str] = []
    for i in range(cycles):
        dev.submit(IOCTL.IS_PRESENT).wait(WAIT)
        seen.append("in")
        if slow_every and i % slow_every == 0:
            time.sleep(0.001)
        dev.submit(IOCTL.IS_ABSENT).wait(WAIT)
        seen.append("out")
    return seen


def assert_nothing_more(dev: Device) -> None:
    op = dev.submit(IOCTL.IS_PRESENT)
    try:
        with pytest.raises(errors.TimeoutError):
            op.wait(0.1)
    finally:
        op.cancel()
    with pytest.raises(errors.CancelledError):
        op.wait(WAIT)


@pytest.mark.parametrize("slow_every", [0, 20], ids=["fast-consumer", "slow-consumer"])
def test_device_level_10000_cycles_exactly_once_in_order(slow_every):
    dev = scardio.sim.open_device(next(_luns))
    sim = SimControl(dev)
    try:
        producer = Producer(sim, CYCLES)
        t = time.monotonic()
        producer.start()
        seen = consume_device_events(dev, CYCLES, slow_every)
        producer.join(WAIT)
        assert not producer.is_alive() and producer.error is None
        assert seen == ["in", "out"] * CYCLES
        c = sim.counters()
        assert c.insertions == c.removals == CYCLES
        assert not c.present
        assert_nothing_more(dev)
        assert time.monotonic() - t < 60
    finally:
        dev.close()


def test_device_level_backlog_drained_after_the_fact():
    """All 10,000 cycles happen before anyone asks: the core still reports
    each one."""
    dev = scardio.sim.open_device(next(_luns))
    sim = SimControl(dev)
    try:
        for _ in range(CYCLES):
            sim.insert()
            sim.remove()
        assert consume_device_events(dev, CYCLES) == ["in", "out"] * CYCLES
        assert_nothing_more(dev)
    finally:
        dev.close()


def test_a_card_left_in_is_the_last_arrival():
    dev = scardio.sim.open_device(next(_luns))
    sim = SimControl(dev)
    try:
        for _ in range(500):
            sim.insert()
            sim.remove()
        sim.insert()
        consume_device_events(dev, 500)
        assert dev.submit(IOCTL.IS_PRESENT).wait(WAIT) == b""
        gone = dev.submit(IOCTL.IS_ABSENT)
        with pytest.raises(errors.TimeoutError):
            gone.wait(0.1)    # the card is still in: no departure yet
        sim.remove()
        assert gone.wait(WAIT) == b""
    finally:
        dev.close()


# ---- through scardio's Monitor ----------------------------------------------------

monitor_mod = pytest.importorskip("scardio.monitor")


def _monitor_run(cycles: int, *, slow_callback: float = 0.0, slow_consumer: float = 0.0):
    from scardio.monitor import ARRIVAL, DEPARTURE, Monitor
    from scardio.reader import Reader
    dev = scardio.sim.open_device(next(_luns))
    reader = Reader(dev, power_down_timeout=None)
    sim = SimControl(dev)
    kinds: list[str] = []
    seqs: list[int] = []
    calls = [0]

    def slow(ev):
        calls[0] += 1
        if slow_callback and calls[0] % 50 == 0:
            time.sleep(slow_callback)   # holds up the monitor thread itself

    mon = Monitor([reader], callback=slow, queue_events=True)
    try:
        producer = Producer(sim, cycles)
        producer.start()
        deadline = time.monotonic() + 60
        while len(kinds) < 2 * cycles and time.monotonic() < deadline:
            ev = mon.get(WAIT)
            kinds.append(ev.kind)
            seqs.append(ev.seq)
            if slow_consumer and len(kinds) % 50 == 0:
                time.sleep(slow_consumer)
        producer.join(WAIT)
        assert producer.error is None
        with pytest.raises(errors.TimeoutError):
            mon.get(0.1)                    # and nothing more
        c = sim.counters()
        assert c.insertions == c.removals == cycles
        assert kinds == [ARRIVAL, DEPARTURE] * cycles
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    finally:
        mon.close()
        reader.close()


def test_monitor_10000_cycles_exactly_once_in_order():
    _monitor_run(CYCLES)


def test_monitor_with_slow_consumer_and_slow_callback():
    _monitor_run(CYCLES // 2, slow_callback=0.002, slow_consumer=0.002)


def test_monitor_sees_events_of_many_readers_without_mixing():
    from scardio.monitor import ARRIVAL, DEPARTURE, Monitor
    from scardio.reader import Reader
    readers = [Reader(scardio.sim.open_device(next(_luns)), power_down_timeout=None)
               for _ in range(8)]
    per = 300
    mon = Monitor(readers)
    try:
        producers = [Producer(SimControl(r.device), per) for r in readers]
        for p in producers:
            p.start()
        got: dict[int, list[str]] = {id(r): [] for r in readers}
        deadline = time.monotonic() + 60
        total = 0
        while total < 2 * per * len(readers) and time.monotonic() < deadline:
            ev = mon.get(WAIT)
            got[id(ev.reader)].append(ev.kind)
            total += 1
        for p in producers:
            p.join(WAIT)
        for r in readers:
            assert got[id(r)] == [ARRIVAL, DEPARTURE] * per
    finally:
        mon.close()
        for r in readers:
            r.close()
