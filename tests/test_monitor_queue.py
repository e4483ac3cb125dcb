"""The Monitor's own completion queue (scardio._core.CompletionQueue): the
tracking requests of native devices complete into it and its dispatch calls
the trackers; readers on stand-in devices still go through their waitable,
and a monitor of both kinds sees the events of both."""

from __future__ import annotations

import logging
import select
import sys
import threading
import time
from typing import Any

import pytest

from helpers_reader import sim_reader
from scardio import IOCTL, Monitor, _core, errors
from scardio.monitor import ARRIVAL, DEPARTURE


def _readable(fd: int) -> bool:
    return bool(select.select([fd], [], [], 0)[0])


def test_queue_gets_the_completion_not_the_device(sim_device, sim):
    q = _core.CompletionQueue()
    got: list[Any] = []
    op = q.submit(sim_device, IOCTL.IS_PRESENT, got.append)
    assert q.pending() == 1
    assert q.dispatch(0.05) == 0 and got == []  # still pending: timed out
    sim.insert()
    assert q.dispatch(5) == 1
    assert got == [op] and op.done() and op.result() == b""
    assert q.pending() == 0
    assert sim_device.harvest(0.05) == []  # not in the device's own queue


def test_queue_drops_unwatched_and_runs_the_rest_after_a_failing_callback(
        sim_device, sim, caplog):
    q = _core.CompletionQueue()
    ran: list[str] = []
    dropped = q.submit(sim_device, IOCTL.IS_PRESENT, lambda op: ran.append("dropped"))
    q.unwatch(dropped)
    dropped.cancel()
    with pytest.raises(errors.CancelledError):
        dropped.wait(5)
    assert q.dispatch(0.05) == 0 and ran == []

    def broken(op: Any) -> None:
        ran.append("broken")
        raise RuntimeError("callback bug")
    q.submit(sim_device, IOCTL.IS_PRESENT, broken)
    busy = q.submit(sim_device, IOCTL.IS_ABSENT, lambda op: ran.append("busy"))
    with pytest.raises(errors.DeviceBusyError):  # one tracking request per device
        busy.wait(5)
    with caplog.at_level(logging.ERROR, logger="scardio.completions"):
        sim.insert()
        deadline = time.monotonic() + 5
        while len(ran) < 2 and time.monotonic() < deadline:
            q.dispatch(0.5)
    assert ran == ["busy", "broken"]
    assert "callback bug" in caplog.text


def test_queue_wake_ends_a_dispatch_from_another_thread():
    q = _core.CompletionQueue()
    threading.Timer(0.05, q.wake).start()
    t0 = time.monotonic()
    assert q.dispatch(None) == 0
    assert time.monotonic() - t0 < 5
    q.wake()
    assert q.dispatch(5) == 0  # consumed by this one
    assert q.dispatch(0.01) == 0


@pytest.mark.skipif(sys.platform == "win32", reason="descriptors are POSIX waitables")
def test_queue_waitable_is_signalled_while_completions_wait(sim_device, sim):
    q = _core.CompletionQueue()
    fd = q.waitable()
    assert not _readable(fd)
    op = q.submit(sim_device, IOCTL.IS_PRESENT, lambda op: None)
    sim.insert()
    op.wait(5)
    assert _readable(fd)
    assert q.dispatch(0) == 1
    assert not _readable(fd)


def test_submit_on_a_closed_device_raises(sim_device):
    q = _core.CompletionQueue()
    sim_device.close()
    with pytest.raises(errors.ClosedError):
        q.submit(sim_device, IOCTL.IS_PRESENT, lambda op: None)
    assert q.pending() == 0


def test_monitor_tracks_a_native_reader_through_its_queue_in_order():
    with sim_reader() as (reader, sim):
        with Monitor([reader], queue_events=True) as mon:
            for _ in range(20):
                sim.insert()
                sim.remove()
            kinds = [e.kind for e in mon.events(timeout=10, count=40)]
            assert kinds == [ARRIVAL, DEPARTURE] * 20  # none lost, none reordered
            # the tracking went through the monitor's queue, not the reader's
            assert reader.device.harvest(0) == []
            assert mon._waitables == {} and mon._native == 1


def test_monitor_of_native_and_stand_in_readers_sees_both():
    traced: list[Any] = []
    with sim_reader() as (native, sim_n), sim_reader(trace=traced.append) as (stand_in, sim_s):
        assert not isinstance(stand_in.device, _core.Device)
        with Monitor([native, stand_in], queue_events=True) as mon:
            assert mon._own_waited  # both kinds: the thread waits on the queue too
            sim_n.insert()
            ev = mon.get(timeout=5)
            assert (ev.kind, ev.reader) == (ARRIVAL, native)
            sim_s.insert()
            ev = mon.get(timeout=5)
            assert (ev.kind, ev.reader) == (ARRIVAL, stand_in)
            mon.remove(stand_in)
            assert not mon._own_waited and mon.readers == [native]
            sim_n.remove()  # back on the queue alone
            ev = mon.get(timeout=5)
            assert (ev.kind, ev.reader) == (DEPARTURE, native)
            mon.remove(native)
            assert mon._native == 0 and mon.readers == []
            mon.add(stand_in)  # the waiter alone again
            ev = mon.get(timeout=5)  # its card is in
            assert (ev.kind, ev.reader) == (ARRIVAL, stand_in)
            sim_s.remove()
            ev = mon.get(timeout=5)
            assert (ev.kind, ev.reader) == (DEPARTURE, stand_in)
        assert traced, "the stand-in's requests went through its own device"


def test_a_callback_adding_a_stand_in_reader_strands_no_command():
    """A callback on the monitor thread that adds a stand-in reader moves
    the thread's wait from its queue to the waiter: a command another
    thread queued (and woke the queue for) just before must still run."""
    with sim_reader() as (native, sim_n), sim_reader(trace=lambda record: None) as (stand_in, _):
        outcome: dict[str, Any] = {}

        def remover() -> None:
            try:
                mon.remove(native, timeout=3)
                outcome["ok"] = True
            except Exception as exc:  # reported below
                outcome["error"] = exc

        def callback(ev: Any) -> None:
            if ev.reader is native and ev.kind == ARRIVAL and "thread" not in outcome:
                th = outcome["thread"] = threading.Thread(target=remover)
                th.start()
                time.sleep(0.3)  # its command is queued, its wake sent to the queue
                mon.add(stand_in)
        mon = Monitor([native], callback=callback)
        try:
            sim_n.insert()
            deadline = time.monotonic() + 5
            while "thread" not in outcome and time.monotonic() < deadline:
                time.sleep(0.01)
            outcome["thread"].join(6)
            assert outcome.get("ok"), outcome.get("error")
            assert mon.readers == [stand_in]
        finally:
            mon.close()
