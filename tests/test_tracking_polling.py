"""Card tracking under the IFD backend's polling rules, for both kinds of
driver: with a polling function (a thread waits in it per reader, with no
wake-up of its own) and without one (one poller thread per driver library
asks presence every poll interval, and skips a reader whose own calls just
found out; a driver that counts card events is asked for its counts
instead, and for presence only when they move).  No event may be lost either way: removals during transmits,
removal while I/O is in flight, a card swapped between two looks.

Wake-ups are counted with the simulated reader's call counters, not CPU time.
"""

from __future__ import annotations

import contextlib
import struct
import threading
import time
from typing import Any

import pytest

from helpers_reader import Recorder, sim_readers
from scardio import IOCTL, Monitor, errors
from scardio.monitor import ARRIVAL, DEPARTURE

KINDS = pytest.mark.parametrize("polling", [True, False],
                                ids=["polling-function", "presence-only"])
U32 = struct.Struct("<I")
ECHO = struct.pack("<II", 2, 8) + bytes.fromhex("80EE000001")  # T=1, 1 byte back


def _threads() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("Threads:"):
                return int(line.split()[1])
    raise AssertionError("no thread count")




def _power(dev: Any) -> None:
    dev.ioctl(IOCTL.POWER, U32.pack(1), 33)
    dev.ioctl(IOCTL.SET_PROTOCOL, U32.pack(2), 4)  # T=1


def _transmit(dev: Any) -> bytes:
    return dev.ioctl(IOCTL.TRANSMIT, ECHO, 8 + 258)


class Transmitter:
    """Transmits back to back on a thread (errors are expected while no
    card is in; a card that is back is powered up again)."""

    def __init__(self, dev: Any) -> None:
        self.dev = dev
        self.ok = 0
        self.failed = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                _transmit(self.dev)
                self.ok += 1
            except errors.ScardioError:
                self.failed += 1
                with contextlib.suppress(errors.ScardioError):
                    _power(self.dev)

    def __enter__(self) -> "Transmitter":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        assert not self._thread.is_alive()


def test_sim_options_select_what_the_driver_offers() -> None:
    from scardio.sim import SimControl
    with sim_readers(polling=False, event_counts=False) as [(reader, sim)]:
        assert isinstance(sim, SimControl)
        for tag in (0x0FB3, 0x0FB2, 0x0007A002):  # polling, stop, card-event counts
            with pytest.raises(errors.ScardioError):
                reader.device.ioctl(IOCTL.GET_ATTRIBUTE, U32.pack(tag), 64)
    with sim_readers() as [(reader, sim)]:
        assert len(reader.device.ioctl(IOCTL.GET_ATTRIBUTE, U32.pack(0x0007A002), 64)) == 8


def test_idle_reader_with_polling_function_makes_no_driver_call() -> None:
    """The wait in the polling function has no periodic wake-up: over an
    idle second the driver sees no new poll and no presence check."""
    from scardio.sim import EntryPoint
    with sim_readers() as [(reader, sim)], Monitor([reader], callback=lambda ev: None):
        time.sleep(0.2)  # the request waits in the polling function
        sim.reset_counters()
        time.sleep(1.2)
        calls = sim.counters().calls
        assert calls[EntryPoint.POLLING] == 0
        assert calls[EntryPoint.ICC_PRESENCE] == 0


@pytest.mark.parametrize("event_counts", [True, False], ids=["counts", "no-counts"])
def test_idle_reader_without_polling_function_is_asked_once_per_interval(
        event_counts: bool) -> None:
    """Once per poll interval the idle reader is looked at with one driver
    call: its card-event counts where the driver counts events (presence
    is asked only when they move), else presence."""
    from scardio.sim import EntryPoint
    with sim_readers(polling=False, event_counts=event_counts,
                     poll_interval_ms=20) as [(reader, sim)], \
            Monitor([reader], callback=lambda ev: None):
        time.sleep(0.2)
        sim.reset_counters()
        t0 = time.monotonic()
        time.sleep(1.0)
        calls = sim.counters().calls
        ticks = (time.monotonic() - t0) * 1000 / 20
        # (a count read is a GET_CAPABILITIES call, and so is the read of the
        # card-event generation that stands for it while nothing moves)
        looks = calls[EntryPoint.GET_CAPABILITIES if event_counts else EntryPoint.ICC_PRESENCE]
        assert calls[EntryPoint.POLLING] == 0
        assert looks <= ticks + 2
        assert looks >= ticks / 4  # still polled under load
        if event_counts:
            assert calls[EntryPoint.ICC_PRESENCE] == 0


def test_readers_without_polling_function_share_one_thread() -> None:
    """64 tracked readers of one driver library add one poller thread (and
    the Monitor's), not a thread each; with a polling function each waiting
    reader has one."""
    n = 64
    with sim_readers(1, polling=False) as keep:  # the library's poller exists
        with Monitor([keep[0][0]], callback=lambda ev: None):
            time.sleep(0.1)
            before = _threads()
            with sim_readers(n, polling=False) as pairs, \
                    Monitor([r for r, _ in pairs], callback=lambda ev: None):
                time.sleep(0.3)
                assert _threads() - before <= 1  # the second Monitor's thread
            before = _threads()
            with sim_readers(n) as pairs, Monitor([r for r, _ in pairs], callback=lambda ev: None):
                time.sleep(0.3)
                assert _threads() - before >= n


@KINDS
def test_arrivals_and_departures_on_many_readers_of_one_poller(polling: bool) -> None:
    rec = Recorder()
    with sim_readers(16, polling=polling) as pairs, \
            Monitor([r for r, _ in pairs], callback=rec):
        for i, (_, sim) in enumerate(pairs):
            sim.insert()
            rec.wait_for(ARRIVAL, n=i + 1)
        for i, (_, sim) in enumerate(pairs):
            sim.remove()
            rec.wait_for(DEPARTURE, n=i + 1)
        seen = {(ev.kind, ev.reader.name) for ev in rec.events}
        assert len(seen) == 32 and len(rec.events) == 32


@pytest.mark.parametrize("event_counts", [True, False], ids=["counts", "no-counts"])
def test_events_on_every_reader_at_once_under_one_poller(event_counts: bool) -> None:
    """More readers than the poller looks at per batch, and a card into (then
    out of) every one of them between two looks: each reader reports exactly
    one arrival and one departure, none lost and none made up."""
    n = 160
    rec = Recorder()
    with sim_readers(n, polling=False, event_counts=event_counts,
                     poll_interval_ms=150) as pairs, \
            Monitor([r for r, _ in pairs], callback=rec):
        time.sleep(0.3)  # every reader looked at once: the requests wait
        for kind, step in ((ARRIVAL, "insert"), (DEPARTURE, "remove")):
            for _, sim in pairs:
                getattr(sim, step)()
            rec.wait_for(kind, n=n, timeout=10)
        time.sleep(0.4)  # two more looks at every reader: nothing else comes
        names = [ev.reader.name for ev in rec.events]
        assert sorted(rec.kinds()) == sorted([ARRIVAL, DEPARTURE] * n)
        assert all(names.count(r.name) == 2 for r, _ in pairs)


@pytest.mark.parametrize("event_counts", [True, False], ids=["counts", "no-counts"])
def test_presence_checks_skipped_while_transmits_prove_the_card(event_counts: bool) -> None:
    """Without a polling function a working transmit stands in for the
    presence check: back-to-back APDUs leave (almost) no presence call in
    between; once they stop, checks resume.  A driver that counts card
    events is asked for presence only when its counts move: once a look has
    asked presence, the next looks are a count read each, taking no lock."""
    from scardio.sim import EntryPoint
    rec = Recorder()
    with sim_readers(polling=False, event_counts=event_counts) as [(reader, sim)], \
            Monitor([reader], callback=rec):
        sim.insert()
        rec.wait_for(ARRIVAL)
        _power(reader.device)
        sim.reset_counters()
        with Transmitter(reader.device) as tx:
            time.sleep(0.5)
        calls = sim.counters().calls
        assert tx.ok > 50 and tx.failed == 0
        # 50 poll intervals went by; a stall of the transmitting thread for
        # more than one interval (a busy machine) lets one check through.
        # (with counts: the one look that asks presence, if the transmits
        # left it any; its looks are count reads or stood in for by them)
        assert calls[EntryPoint.ICC_PRESENCE] <= (1 if event_counts else 10), calls
        sim.reset_counters()
        time.sleep(0.3)
        calls = sim.counters().calls
        if event_counts:
            assert calls[EntryPoint.ICC_PRESENCE] <= 1, calls
            assert calls[EntryPoint.GET_CAPABILITIES] >= 5, calls
        else:
            assert calls[EntryPoint.ICC_PRESENCE] >= 5
        assert rec.kinds() == [ARRIVAL]


@KINDS
@pytest.mark.parametrize("event_counts", [True, False], ids=["counts", "no-counts"])
def test_removals_during_transmits_are_all_reported(polling: bool, event_counts: bool) -> None:
    rec = Recorder()
    with sim_readers(polling=polling, event_counts=event_counts) as [(reader, sim)], \
            Monitor([reader], callback=rec):
        sim.insert()
        rec.wait_for(ARRIVAL)
        _power(reader.device)
        with Transmitter(reader.device) as tx:
            for i in range(1, 6):
                time.sleep(0.03)
                sim.remove()
                rec.wait_for(DEPARTURE, n=i)
                time.sleep(0.03)
                sim.insert()
                rec.wait_for(ARRIVAL, n=i + 1)
        assert tx.ok > 0 and tx.failed > 0
        assert rec.kinds() == [ARRIVAL] + [DEPARTURE, ARRIVAL] * 5


@KINDS
@pytest.mark.parametrize("event_counts", [True, False], ids=["counts", "no-counts"])
def test_removal_seen_by_a_transmit_is_reported_though_a_card_is_back(
        polling: bool, event_counts: bool) -> None:
    """The card goes during a transmit (the transmit fails for want of a
    card) and a card is back before the tracker looks again (a long poll
    interval): the departure is not lost."""
    from scardio.sim import EntryPoint, Fault
    rec = Recorder()
    with sim_readers(polling=polling, event_counts=event_counts,
                     poll_interval_ms=400) as [(reader, sim)], Monitor([reader], callback=rec):
        sim.insert()
        rec.wait_for(ARRIVAL)
        dev = reader.device
        _power(dev)
        for i in range(1, 4):
            _transmit(dev)
            sim.fault(EntryPoint.TRANSMIT, Fault.REMOVE_CARD)
            with pytest.raises(errors.ScardioError):
                _transmit(dev)  # the card left in the middle of it
            sim.insert()
            _power(dev)
            _transmit(dev)  # works again: a card is in
            rec.wait_for(DEPARTURE, n=i)
            rec.wait_for(ARRIVAL, n=i + 1)
        assert rec.kinds() == [ARRIVAL] + [DEPARTURE, ARRIVAL] * 3


@KINDS
def test_removal_while_a_transmit_is_in_flight(polling: bool) -> None:
    """A transmit blocked in the driver holds the reader; the card is
    removed meanwhile: the departure is reported, at the latest once the
    transmit is released."""
    from scardio.sim import EntryPoint, Fault
    rec = Recorder()
    with sim_readers(polling=polling) as [(reader, sim)], Monitor([reader], callback=rec):
        sim.insert()
        rec.wait_for(ARRIVAL)
        dev = reader.device
        _power(dev)
        sim.fault(EntryPoint.TRANSMIT, Fault.BLOCK)
        op = dev.submit(IOCTL.TRANSMIT, ECHO, 8 + 258)
        time.sleep(0.05)
        assert not op.done()
        sim.remove()
        time.sleep(0.05)
        sim.stop()  # releases the transmit, which finds no card
        with pytest.raises(errors.ScardioError):
            op.wait(5)
            op.result()
        rec.wait_for(DEPARTURE)
        sim.insert()
        rec.wait_for(ARRIVAL, n=2)
        assert rec.kinds() == [ARRIVAL, DEPARTURE, ARRIVAL]


@KINDS
def test_swap_between_looks_is_one_departure_and_one_arrival(polling: bool) -> None:
    """A card swapped for another between two looks, during transmits:
    the driver's event counts tell, so both events are reported."""
    rec = Recorder()
    with sim_readers(polling=polling, poll_interval_ms=300) as [(reader, sim)], \
            Monitor([reader], callback=rec):
        sim.insert()
        rec.wait_for(ARRIVAL)
        _power(reader.device)
        with Transmitter(reader.device):
            time.sleep(0.05)
            sim.insert()  # over the present card: a swap
            rec.wait_for(DEPARTURE)
            rec.wait_for(ARRIVAL, n=2)
        assert rec.kinds() == [ARRIVAL, DEPARTURE, ARRIVAL]


def test_history_before_tracking_is_not_reported_without_counts() -> None:
    """Without event counts, what the reader's calls saw while nobody
    tracked it is not reported when tracking starts."""
    from scardio.sim import EntryPoint, Fault
    rec = Recorder()
    with sim_readers(polling=False, event_counts=False) as [(reader, sim)]:
        dev = reader.device
        sim.insert()
        _power(dev)
        sim.fault(EntryPoint.TRANSMIT, Fault.REMOVE_CARD)
        with pytest.raises(errors.ScardioError):
            _transmit(dev)
        sim.insert()
        _power(dev)
        with Monitor([reader], callback=rec):
            rec.wait_for(ARRIVAL)
            time.sleep(0.2)
        assert rec.kinds() == [ARRIVAL]


@KINDS
def test_remove_frees_the_tracking_slot_and_close_does_not_hang(polling: bool) -> None:
    with sim_readers(polling=polling) as [(reader, sim)]:
        for _ in range(5):
            mon = Monitor([reader], callback=lambda ev: None)
            time.sleep(0.02)
            mon.remove(reader)
            op = reader.device.submit(IOCTL.IS_PRESENT)  # not DEVICE_BUSY
            sim.insert()
            op.wait(5)
            op.result()
            sim.remove()
            mon.close()
        mon = Monitor([reader], callback=lambda ev: None)
        time.sleep(0.02)
        t0 = time.monotonic()
        reader.close()  # with a request pending
        assert time.monotonic() - t0 < 2
        mon.close()


def test_synchronous_tracking_without_polling_function() -> None:
    with sim_readers(polling=False) as [(reader, sim)]:
        dev = reader.device
        done = threading.Event()

        def wait_present() -> None:
            dev.ioctl(IOCTL.IS_PRESENT)
            done.set()
        th = threading.Thread(target=wait_present, daemon=True)
        th.start()
        time.sleep(0.05)
        assert not done.is_set()
        with pytest.raises(errors.ScardioError):
            dev.submit(IOCTL.IS_ABSENT).result()  # one tracking request at a time
        sim.insert()
        th.join(5)
        assert done.is_set()


def test_cancel_ends_a_poll_whose_stop_the_driver_missed() -> None:
    """The stop function can miss a poll that is about to wait (the driver
    only cancels a wait in progress): the stop is repeated until the poll
    returns, so the cancelled request ends at once and not at the polling
    function's timeout (minutes)."""
    from helpers_reader import next_lun
    from scardio.sim import SIM_LIBRARY, EntryPoint, Fault, SimControl
    from scardio import Device
    lun = next_lun()
    dev = Device.open_ifd(SIM_LIBRARY, f"sim:{lun}?loststop", lun)
    try:
        sim = SimControl(dev)
        sim.insert()
        first = dev.submit(IOCTL.IS_ABSENT)  # a poll returns after the insertion
        time.sleep(0.1)
        first.cancel()  # a poll is waiting: this stop gets through
        with pytest.raises(errors.CancelledError):
            first.wait(3)
        sim.fault(EntryPoint.POLLING, Fault.BLOCK)  # held before it waits
        op = dev.submit(IOCTL.IS_ABSENT)
        time.sleep(0.1)
        assert not op.done()
        op.cancel()  # its stop is lost: the poll is not waiting yet
        time.sleep(0.2)
        assert not op.done()
        t0 = time.monotonic()
        sim.stop()  # releases the poll into its wait
        with pytest.raises(errors.CancelledError):
            op.wait(3)
        assert time.monotonic() - t0 < 1.0
    finally:
        dev.close()
