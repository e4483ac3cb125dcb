"""Reader hotplug in the Monitor and AsyncMonitor, without pcscd: a reader
list of simulated readers (the real PC/SC list is exercised against pcscd in
tests/test_pcsc_hotplug.py)."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any


from helpers_reader import Recorder, next_lun
from scardio import Monitor, errors
from scardio.monitor import (ARRIVAL, ERROR, READER_ADDED, READER_REMOVED,
                             ReaderList)


class FakeList:
    """A ReaderList of simulated readers whose names the test adds and drops."""

    def __init__(self, *names: str) -> None:
        self._names = list(names)
        self._cond = threading.Condition()
        self._version = 0
        self._listed_version = 0
        self._woken = False
        self.opened: dict[str, Any] = {}  # name -> (reader, SimControl)
        self.closed = False
        self.waits = 0

    def names(self) -> list[str]:
        with self._cond:
            self._listed_version = self._version
            return list(self._names)

    def wait_change(self, known: int) -> None:
        # A change since the last listing counts (as the PnP reader's count).
        with self._cond:
            self.waits += 1
            version = self._listed_version
            while self._version == version and not self._woken:
                self._cond.wait()
            self._woken = False

    def wake(self) -> None:
        with self._cond:
            self._woken = True
            self._cond.notify_all()

    def open(self, name: str) -> Any:
        from scardio.discovery import ReaderDescriptor
        from scardio.reader import Reader
        from scardio.sim import SIM_LIBRARY, SimControl, open_device
        lun = next_lun()
        dev = open_device(lun)
        reader = Reader(dev, ReaderDescriptor(name, "sim", SIM_LIBRARY, f"sim:{lun}", lun,
                                              {"available": True}), name=name)
        self.opened[name] = (reader, SimControl(dev))
        return reader

    def set(self, *names: str) -> None:
        with self._cond:
            self._names = list(names)
            self._version += 1
            self._cond.notify_all()

    def close(self) -> None:
        self.closed = True
        self.wake()


def _typed(source: FakeList) -> ReaderList:
    return source  # FakeList satisfies the protocol (checked by mypy in the suite)


def test_readers_listed_at_start_are_tracked_without_an_added_event():
    rec = Recorder()
    source = FakeList("A", "B")
    with Monitor(callback=rec, reader_list=_typed(source)) as mon:
        assert sorted(r.name for r in mon.readers) == ["A", "B"]
        source.opened["A"][1].insert()
        assert rec.wait_for(ARRIVAL).reader.name == "A"
        assert rec.kinds() == [ARRIVAL]
    assert source.closed
    assert all(r.closed for r, _ in source.opened.values())  # the monitor opened them


def test_a_reader_that_appears_is_reported_then_tracked():
    rec = Recorder()
    source = FakeList("A")
    with Monitor(callback=rec, reader_list=source) as mon:
        source.set("A", "B")
        added = rec.wait_for(READER_ADDED)
        assert added.reader.name == "B" and added.error is None
        assert added.as_dict()["event"] == "reader-added"
        assert "B" in [r.name for r in mon.readers]
        source.opened["B"][1].insert()
        arrival = rec.wait_for(ARRIVAL)
        assert arrival.reader is added.reader and arrival.seq > added.seq
        assert rec.kinds() == [READER_ADDED, ARRIVAL]


def test_a_reader_that_leaves_the_list_is_removed_once_and_closed():
    rec = Recorder()
    source = FakeList("A", "B")
    with Monitor(callback=rec, reader_list=source) as mon:
        b, b_sim = source.opened["B"]
        b_sim.insert()
        rec.wait_for(ARRIVAL)
        source.set("A")
        removed = rec.wait_for(READER_REMOVED)
        assert removed.reader is b
        assert [r.name for r in mon.readers] == ["A"]
        time.sleep(0.2)
        # No departure invented for the card that was in it, nothing else.
        assert rec.kinds() == [ARRIVAL, READER_REMOVED]
        assert b.closed
        # It comes back: a new reader, tracked again.
        source.set("A", "B")
        again = rec.wait_for(READER_ADDED)
        assert again.reader.name == "B" and again.reader is not b


def test_device_gone_and_left_the_list_is_one_removal_not_an_error():
    from scardio.sim import EntryPoint, Fault
    rec = Recorder()
    source = FakeList("A")
    with Monitor(callback=rec, reader_list=source) as mon:
        a, a_sim = source.opened["A"]
        time.sleep(0.05)  # waiting for a card
        # The reader goes away: out of the list, then its driver answers
        # "no such device" (IFD_NO_SUCH_DEVICE) to the pending wait.
        with source._cond:
            source._names = []  # the list shrinks before the watcher hears of it
        a_sim.fault(EntryPoint.ICC_PRESENCE, Fault.RETURN, 617)
        a_sim.insert()
        removed = rec.wait_for(READER_REMOVED)
        assert removed.reader is a
        source.set()  # now the watcher hears of it: no second removal
        time.sleep(0.3)
        assert rec.kinds() == [READER_REMOVED]
        assert mon.readers == [] and a.closed


def test_device_gone_but_still_listed_is_the_error_event():
    from scardio.sim import EntryPoint, Fault
    rec = Recorder()
    source = FakeList("A")
    with Monitor(callback=rec, reader_list=source) as mon:
        a, a_sim = source.opened["A"]
        time.sleep(0.05)
        a_sim.fault(EntryPoint.ICC_PRESENCE, Fault.RETURN, 617)
        a_sim.insert()
        err = rec.wait_for(ERROR)
        assert isinstance(err.error, errors.DeviceGoneError) and err.reader is a
        assert mon.readers == []


def test_a_reader_that_cannot_be_opened_is_skipped_and_retried(caplog):
    rec = Recorder()
    source = FakeList()
    real_open = source.open
    fail = {"C"}

    def flaky_open(name: str) -> Any:
        if name in fail:
            raise errors.DeviceBusyError("held elsewhere")
        return real_open(name)
    source.open = flaky_open  # type: ignore[method-assign]
    with Monitor(callback=rec, reader_list=source) as mon:
        source.set("C")
        deadline = time.monotonic() + 5
        while "could not open reader 'C'" not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.02)
        assert "could not open reader 'C'" in caplog.text
        assert mon.readers == [] and rec.kinds() == []
        fail.clear()
        source.set("C", "D")  # the next change: C is tried again
        rec.wait_for(READER_ADDED, n=2)
        assert sorted(e.reader.name for e in rec.events) == ["C", "D"]


def test_close_stops_the_watch_thread_and_is_bounded():
    source = FakeList("A")
    mon = Monitor(reader_list=source)
    deadline = time.monotonic() + 5
    while source.waits == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    t = time.monotonic()
    mon.close()
    assert time.monotonic() - t < 2
    assert source.closed
    assert not any(th.name == "scardio-reader-list" and th.is_alive()
                   for th in threading.enumerate())


def test_without_a_reader_list_nothing_is_watched():
    with Monitor() as mon:
        assert mon.readers == []
        assert not any(th.name == "scardio-reader-list" for th in threading.enumerate())


def test_async_monitor_reports_readers_added_and_removed():
    from scardio.aio import AsyncMonitor
    source = FakeList("A")

    async def main() -> list[str]:
        kinds: list[str] = []
        async with AsyncMonitor(reader_list=source) as mon:
            assert [r.name for r in mon.readers] == ["A"]
            source.set("A", "B")
            ev = await mon.get(timeout=5)
            kinds.append(ev.kind)
            assert ev.reader.name == "B"
            source.opened["B"][1].insert()
            kinds.append((await mon.get(timeout=5)).kind)
            source.set("A")
            ev = await mon.get(timeout=5)
            kinds.append(ev.kind)
            assert ev.reader.name == "B"
        return kinds
    assert asyncio.run(main()) == [READER_ADDED, ARRIVAL, READER_REMOVED]
    assert source.closed and source.opened["B"][0].closed


def test_a_reader_given_under_another_name_is_not_opened_again():
    """A reader the caller gave goes by its own name (built from the
    driver's attributes) while the list calls it by its descriptor's
    resource-manager name: it is matched by every name it goes by, tracked
    once, and its leaving the list is its one removal."""
    from dataclasses import replace
    rec = Recorder()
    given = FakeList().open("given")
    given = type(given)(given.device, replace(given.descriptor, pcsc_name="RM 00 00"),
                        name="built from attributes")
    assert given.names == ("built from attributes", "given", "RM 00 00")
    source = FakeList("RM 00 00")
    try:
        with Monitor([given], callback=rec, reader_list=source) as mon:
            assert mon.readers == [given] and source.opened == {}
            source.set()
            assert rec.wait_for(READER_REMOVED).reader is given
            assert rec.kinds() == [READER_REMOVED]
    finally:
        given.close()
