"""Card-state monitor: order, timestamps, many readers, interplay with
wait_for_card / Card / close."""

from __future__ import annotations

import contextlib
import threading
import time

import pytest

from helpers_reader import Recorder, sim_reader
from scardio import Monitor, errors
from scardio.card import CardDisconnectedError
from scardio.monitor import ARRIVAL, DEPARTURE, ERROR


def test_arrival_then_departure_in_order_with_monotonic_timestamps():
    with sim_reader() as (reader, sim), Monitor([reader]) as mon:
        t0 = time.monotonic()
        sim.insert()
        t1 = time.monotonic()
        first = mon.get(timeout=5)
        sim.remove()
        t2 = time.monotonic()
        second = mon.get(timeout=5)
        t3 = time.monotonic()
        assert (first.kind, second.kind) == (ARRIVAL, DEPARTURE)
        assert first.reader is reader and first.reader_name == reader.name
        assert t0 <= first.timestamp and first.timestamp <= second.timestamp <= t3
        assert second.timestamp >= t2 - 0.001 or second.timestamp >= t1
        assert second.seq == first.seq + 1
        assert first.as_dict()["event"] == "arrival"


def test_many_events_alternate_and_none_is_lost():
    with sim_reader() as (reader, sim), Monitor([reader]) as mon:
        for _ in range(25):
            sim.insert()
            sim.remove()
        evs = list(mon.events(timeout=5, count=50))
        kinds = [e.kind for e in evs]
        assert kinds == [ARRIVAL, DEPARTURE] * 25
        ts = [e.timestamp for e in evs]
        assert ts == sorted(ts)
        assert [e.seq for e in evs] == list(range(1, 51))


def test_card_already_in_gives_an_arrival():
    with sim_reader() as (reader, sim):
        sim.insert()
        with Monitor([reader]) as mon:
            assert mon.get(timeout=5).kind == ARRIVAL
            with pytest.raises(errors.TimeoutError):
                mon.get(timeout=0.1)


def test_many_readers_one_thread_and_callbacks():
    rec = Recorder()
    with contextlib.ExitStack() as stack:
        pairs = [stack.enter_context(sim_reader()) for _ in range(4)]
        before = threading.active_count()
        mon = stack.enter_context(Monitor([r for r, _ in pairs], callback=rec,
                                               queue_events=True))
        assert threading.active_count() == before + 1  # one harvesting thread
        for r, s in pairs:
            s.insert()
        got = list(mon.events(timeout=5, count=4))
        assert sorted(e.reader.name for e in got) == sorted(r.name for r, _ in pairs)
        rec.wait_for(ARRIVAL, n=4)
        assert [e.seq for e in rec.events] == [e.seq for e in got]
        pairs[2][1].remove()
        ev = mon.get(timeout=5)
        assert ev.kind == DEPARTURE and ev.reader is pairs[2][0]


def test_departure_invalidates_the_connected_card():
    with sim_reader() as (reader, sim), Monitor([reader]) as mon:
        sim.insert()
        assert mon.get(timeout=5).kind == ARRIVAL
        card = reader.connect(timeout=5)
        sim.remove()
        assert mon.get(timeout=5).kind == DEPARTURE
        assert not card.connected
        with pytest.raises(CardDisconnectedError, match="removed"):
            card.transmit("00A40000")


def test_wait_for_card_follows_the_monitor():
    with sim_reader() as (reader, sim), Monitor([reader]) as mon:
        with pytest.raises(errors.TimeoutError):
            reader.wait_for_card(0.1)  # no DEVICE_BUSY although the monitor tracks
        t = threading.Timer(0.05, sim.insert)
        t.start()
        reader.wait_for_card(5)
        t.join()
        assert mon.get(timeout=5).kind == ARRIVAL
        t = threading.Timer(0.05, sim.remove)
        t.start()
        reader.wait_for_removal(5)
        t.join()


def test_remove_frees_the_tracking_slot():
    with sim_reader() as (reader, sim):
        mon = Monitor([reader])
        try:
            mon.remove(reader)
            assert mon.readers == []
            t = threading.Timer(0.05, sim.insert)
            t.start()
            reader.wait_for_card(5)  # its own IS_PRESENT: the slot is free
            t.join()
        finally:
            mon.close()


def test_closing_a_monitored_reader_detaches_it():
    with Monitor() as mon:
        with sim_reader() as (reader, sim):
            mon.add(reader)
            sim.insert()
            assert mon.get(timeout=5).kind == ARRIVAL
        assert mon.readers == []
        with sim_reader() as (reader2, sim2):  # the monitor still works
            mon.add(reader2)
            sim2.insert()
            ev = mon.get(timeout=5)
            assert ev.kind == ARRIVAL and ev.reader is reader2


def test_tracking_conflict_is_an_error_event():
    from scardio import IOCTL
    with sim_reader() as (reader, sim):
        op = reader.device.submit(IOCTL.IS_PRESENT)  # someone else holds the slot
        with Monitor([reader]) as mon:
            ev = mon.get(timeout=5)
            assert ev.kind == ERROR and isinstance(ev.error, errors.DeviceBusyError)
            assert mon.readers == [reader] or True
        op.cancel()


def test_close_ends_iteration_and_is_idempotent():
    with sim_reader() as (reader, sim):
        mon = Monitor([reader])
        done = []

        def consume():
            done.extend(mon)  # plain iteration until close
        t = threading.Thread(target=consume)
        t.start()
        sim.insert()
        time.sleep(0.1)
        mon.close()
        mon.close()
        t.join(5)
        assert not t.is_alive() and [e.kind for e in done] == [ARRIVAL]
        with pytest.raises(errors.ClosedError):
            mon.get(timeout=1)
        with pytest.raises(errors.ClosedError):
            mon.add(reader)


def test_events_timeout_bounds_the_iteration():
    with sim_reader() as (reader, sim), Monitor([reader]) as mon:
        t0 = time.monotonic()
        assert list(mon.events(timeout=0.2)) == []
        assert 0.15 <= time.monotonic() - t0 < 2.0


def test_callback_errors_do_not_stop_the_monitor():
    def bad(ev):
        raise RuntimeError("boom")
    with sim_reader() as (reader, sim), Monitor([reader], callback=bad, queue_events=True) as mon:
        sim.insert()
        sim.remove()
        assert [e.kind for e in mon.events(timeout=5, count=2)] == [ARRIVAL, DEPARTURE]


def test_callback_may_remove_its_reader():
    with sim_reader() as (reader, sim):
        mon = Monitor()
        mon.add_callback(lambda ev: mon.remove(ev.reader))
        try:
            mon.add(reader)
            sim.insert()
            assert mon.get(timeout=5).kind == ARRIVAL
            deadline = time.monotonic() + 5
            while mon.readers and time.monotonic() < deadline:
                time.sleep(0.01)
            assert mon.readers == []
        finally:
            mon.close()


def test_wake_up_channel_works_where_select_takes_sockets_only(monkeypatch):
    """On Windows select() accepts sockets only (and pipes cannot be made
    non-blocking before Python 3.12): the monitor's own wake-up channel must
    be a socket.  Modelled here by a selector that refuses anything else
    for it."""
    import os
    import selectors
    import stat

    class WindowsLikeSelector(selectors.SelectSelector):
        def register(self, fileobj, events, data=None):
            fd = fileobj if isinstance(fileobj, int) else fileobj.fileno()
            if data is None and not stat.S_ISSOCK(os.fstat(fd).st_mode):
                raise OSError(10038, "An operation was attempted on something that is not a socket")
            return super().register(fileobj, events, data)

    monkeypatch.setattr(selectors, "DefaultSelector", WindowsLikeSelector)
    with sim_reader() as (reader, sim):
        with Monitor([reader]) as mon:
            sim.insert()
            assert mon.get(timeout=5).kind == ARRIVAL
            mon.remove(reader)          # goes through the wake-up channel
            assert mon.readers == []
            t = time.monotonic()
        assert time.monotonic() - t < 2  # so does the stop on close
        with pytest.raises(errors.ClosedError):
            mon.get(timeout=1)


def _flip(sim, rec, cycles):
    for i in range(1, cycles + 1):
        sim.insert()
        rec.wait_for(ARRIVAL, n=i)
        sim.remove()
        rec.wait_for(DEPARTURE, n=i)


def _closes_in_time(close, limit=10.0):
    done = threading.Event()

    def run():
        close()
        done.set()
    t = threading.Thread(target=run, daemon=True)  # a hang must not hang the suite
    t.start()
    return done.wait(limit)


@pytest.mark.parametrize("queue_events", [None, True])
def test_close_never_blocks_on_a_full_bounded_queue(queue_events):
    rec = Recorder()
    with sim_reader() as (reader, sim):
        def use():
            kw = {} if queue_events is None else {"queue_events": queue_events}
            with Monitor([reader], callback=rec, max_queue=2, **kw):
                _flip(sim, rec, 3)  # 6 events into a queue of 2
        assert _closes_in_time(use), "leaving `with Monitor(max_queue=2)` hung"
        assert [e.kind for e in rec.events] == [ARRIVAL, DEPARTURE] * 3


def test_bounded_queue_drops_the_oldest_and_counts():
    rec = Recorder()
    with sim_reader() as (reader, sim):
        mon = Monitor([reader], callback=rec, max_queue=2, queue_events=True)
        try:
            _flip(sim, rec, 3)
            assert mon.dropped == 4
            kept = [mon.get(timeout=1), mon.get(timeout=1)]
            assert [e.seq for e in kept] == [e.seq for e in rec.events[-2:]]
            with pytest.raises(errors.TimeoutError):
                mon.get(timeout=0.05)
        finally:
            assert _closes_in_time(mon.close)
        with pytest.raises(errors.ClosedError):
            mon.get(timeout=1)
        with pytest.raises(errors.ClosedError):  # the end is seen by every later get
            mon.get()


def test_callback_only_monitor_retains_nothing():
    rec = Recorder()
    with sim_reader() as (reader, sim):
        with Monitor([reader], callback=rec) as mon:
            _flip(sim, rec, 100)
            assert len(rec.events) == 200
            assert len(mon._queue) == 0 and mon.dropped == 0
            with pytest.raises(errors.InvalidStateError, match="queue_events=True"):
                mon.get(timeout=0)


def test_get_rejects_bad_timeouts_and_takes_inf():
    with sim_reader() as (reader, sim), Monitor([reader]) as mon:
        for bad in (-1, float("nan")):
            with pytest.raises(ValueError):
                mon.get(timeout=bad)
        sim.insert()
        assert mon.get(timeout=float("inf")).kind == ARRIVAL


@pytest.mark.parametrize("polling", [True, False], ids=["polling-function", "presence-only"])
def test_transient_driver_error_is_reported_and_tracking_resumes(polling):
    from scardio.sim import EntryPoint, Fault
    rec = Recorder()
    with sim_reader(polling=polling) as (reader, sim):
        with Monitor([reader], callback=rec) as mon:
            time.sleep(0.05)  # waiting for a card
            sim.fault(EntryPoint.ICC_PRESENCE, Fault.RETURN, 612)  # one-off
            sim.insert()  # the next presence check fails
            err = rec.wait_for(ERROR)
            assert isinstance(err.error, errors.ScardioError)
            assert not isinstance(err.error, errors.DeviceGoneError)
            for i in (1, 2):
                if i > 1:
                    sim.insert()
                rec.wait_for(ARRIVAL, n=i)
                sim.remove()
                rec.wait_for(DEPARTURE, n=i)
            assert rec.kinds() == [ERROR] + [ARRIVAL, DEPARTURE] * 2
            assert mon.readers == [reader]


@pytest.mark.parametrize("polling", [True, False], ids=["polling-function", "presence-only"])
def test_device_gone_ends_tracking_and_add_restarts_it(polling):
    from scardio.sim import EntryPoint, Fault
    rec = Recorder()
    with sim_reader(polling=polling) as (reader, sim):
        with Monitor([reader], callback=rec) as mon:
            time.sleep(0.05)  # waiting for a card
            sim.fault(EntryPoint.ICC_PRESENCE, Fault.RETURN, 617)  # IFD_NO_SUCH_DEVICE
            sim.insert()  # the next presence check fails
            err = rec.wait_for(ERROR)
            assert isinstance(err.error, errors.DeviceGoneError)
            assert mon.readers == []
            sim.remove()
            sim.insert()
            time.sleep(0.3)
            assert ERROR == rec.kinds()[-1]  # not tracked: nothing seen
            mon.add(reader)
            rec.wait_for(ARRIVAL)
            assert mon.readers == [reader]


def test_callbacks_run_on_the_monitor_thread_under_retries():
    """Every retry after a transient error is scheduled on the monitor's
    own loop: a retry that fails at once (the tracking slot is held by
    someone else: DeviceBusyError) reports on the monitor thread, and no
    thread is started per retry.  Regression: each retry was a
    threading.Timer, whose thread ran the callback."""
    from scardio import IOCTL
    rec = Recorder()
    idents = []

    def on_event(ev):
        idents.append(threading.get_ident())
        rec(ev)
    with sim_reader() as (reader, sim):
        holder = reader.device.submit(IOCTL.IS_PRESENT)  # someone else holds the slot
        before = threading.active_count()
        with Monitor([reader], callback=on_event) as mon:
            monitor_thread = mon._thread.ident
            rec.wait_for(ERROR, n=4)  # four failed attempts: three retries
            assert all(isinstance(e.error, errors.DeviceBusyError) for e in rec.events)
            assert threading.active_count() == before + 1  # the monitor thread only
            holder.cancel()
            with pytest.raises(errors.CancelledError):
                holder.wait(5)
            sim.insert()
            rec.wait_for(ARRIVAL)
            sim.remove()
            rec.wait_for(DEPARTURE)
        assert set(idents) == {monitor_thread}
        assert [k for k in rec.kinds() if k != ERROR] == [ARRIVAL, DEPARTURE]


def test_async_monitor_retries_on_its_loop_without_timer_threads():
    """The asyncio monitor shares Tracker: a Tracker made on a running loop
    schedules its retries with the loop's call_later, so retries that fail
    at once report on the loop's thread and start no thread each."""
    import asyncio

    from scardio import IOCTL, aio

    async def main():
        with sim_reader() as (reader, sim):
            holder = reader.device.submit(IOCTL.IS_PRESENT)  # the slot is taken
            idents = []
            async with aio.AsyncMonitor([reader]) as mon:
                mon.add_callback(lambda ev: idents.append(threading.get_ident()))
                for _ in range(4):  # four failed attempts: three retries
                    ev = await mon.get(timeout=5)
                    assert ev.kind == ERROR and isinstance(ev.error, errors.DeviceBusyError)
                    assert not [t for t in threading.enumerate()
                                if isinstance(t, threading.Timer)]  # no thread per retry
                holder.cancel()
                sim.insert()
                while (await mon.get(timeout=5)).kind != ARRIVAL:
                    pass
            assert set(idents) == {threading.get_ident()}

    asyncio.run(asyncio.wait_for(main(), 30))


def test_monitor_timers_run_on_its_thread_and_may_schedule_more():
    """The monitor's timers (what Tracker retries go through): due ones run
    on the monitor thread in order, one may schedule another that is due at
    once, and a cancelled one never runs."""
    with Monitor() as mon:
        ran = []
        done = threading.Event()

        def second():
            ran.append(("second", threading.get_ident()))
            done.set()

        def first():
            ran.append(("first", threading.get_ident()))
            mon._schedule(0, second)
        mon._schedule(0.05, first)
        mon._schedule(0.01, lambda: ran.append(("cancelled", 0))).cancel()
        assert done.wait(5)
        assert [name for name, _ in ran] == ["first", "second"]
        assert {ident for _, ident in ran} == {mon._thread.ident}
