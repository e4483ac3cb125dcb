"""Reader, card and monitor scenarios run in both calling styles.

Every test takes `styled` (conftest.py, tests/helpers_styles.py): it runs
once on the blocking Reader / Card / Monitor and once on the AsyncReader /
AsyncCard / AsyncMonitor, which run the same session
(scardio.session.ReaderSession).  The tests marked "divergence" failed in
the asyncio style when aio.py kept its own copy of the state machine."""

from __future__ import annotations

import gc
import struct
import threading
import time
import weakref

import pytest

from helpers_reader import Recorder
from scardio import IOCTL, Disposition, State, errors
from scardio.card import CardDisconnectedError
from scardio.monitor import ARRIVAL, DEPARTURE

SELECT_AID = "00 A4 04 0C 08 F07363617264696F"


def later(seconds, fn):
    t = threading.Timer(seconds, fn)
    t.daemon = True
    t.start()
    return t


# -- connect, per state of the table -------------------------------------------

def test_connect_absent_is_no_card_and_the_reader_stays_usable(styled):
    with styled.reader() as (reader, sim):
        with pytest.raises(errors.NoCardError, match="no card"):
            styled(reader.connect(timeout=5))
        assert reader.card is None
        sim.insert()
        card = styled(reader.connect(timeout=5))
        assert card.connected and reader.card is card
        assert card.connect_actions == ["SWALLOWED", "COLD_RESET", "NEGOTIABLE", "ATR",
                                        "SET_PROTOCOL(T=1)"]


def test_connect_negotiable_reads_the_atr_only(styled):
    with styled.reader() as (reader, sim):
        sim.insert()
        reader.device.ioctl(IOCTL.POWER, struct.pack("<I", 1), 33)  # cold reset by hand
        assert styled(reader.state()) == State.NEGOTIABLE
        card = styled(reader.connect(timeout=5))
        assert card.connect_actions == ["NEGOTIABLE", "ATR", "SET_PROTOCOL(T=1)"]
        assert (sim.counters().power_ups, sim.counters().resets) == (1, 0)


def test_connect_specific_reuses_the_powered_card(styled):
    with styled.reader(power_down_timeout=None) as (reader, sim):
        sim.insert()
        styled(styled(reader.connect(timeout=5)).disconnect())
        card = styled(reader.connect(timeout=5))
        assert card.connect_actions[0] == "SPECIFIC"
        assert (sim.counters().power_ups, sim.counters().resets) == (1, 0)


def test_a_second_connect_is_refused_while_a_card_is_connected(styled):
    with styled.reader() as (reader, sim):
        sim.insert()
        card = styled(reader.connect(timeout=5))
        with pytest.raises(errors.InvalidStateError, match="already connected"):
            styled(reader.connect(timeout=5))
        styled(card.disconnect())
        assert styled(reader.connect(timeout=5)).connected


# -- the card handle --------------------------------------------------------------

@pytest.mark.parametrize("name, expected", [("leave", State.SPECIFIC), ("RESET", State.NEGOTIABLE),
                                            ("Unpower", State.SWALLOWED)])
def test_disconnect_takes_the_disposition_by_name(styled, name, expected):
    with styled.reader(power_down_timeout=None) as (reader, sim):
        sim.insert()
        styled(styled(reader.connect(timeout=5)).disconnect(name))
        assert styled(reader.state()) == expected


@pytest.mark.parametrize("bad", ["park", "", 7, -1, True, 1.0, None])
def test_a_bad_disposition_is_refused_before_the_card_is_touched(styled, bad):
    with styled.reader() as (reader, sim):
        sim.insert()
        card = styled(reader.connect(timeout=5))
        powered = sim.counters().power_ups
        with pytest.raises(ValueError, match="none of 'leave', 'reset', 'unpower'"):
            styled(card.disconnect(bad))
        assert card.connected and reader.card is card
        assert styled(card.transmit(SELECT_AID)).ok
        styled(card.disconnect(Disposition.UNPOWER))
        assert sim.counters().power_ups == powered and not card.connected


def test_transmit_after_disconnect(styled):
    with styled.reader() as (reader, sim):
        sim.insert()
        card = styled(reader.connect(timeout=5))
        assert styled(card.transmit(SELECT_AID)).ok
        styled(card.disconnect())
        styled(card.disconnect())  # idempotent
        assert not card.connected and reader.card is None
        with pytest.raises(CardDisconnectedError, match="disconnected"):
            styled(card.transmit(SELECT_AID))
        assert styled(styled(reader.connect(timeout=5)).transmit(SELECT_AID)).ok


def test_card_removed_mid_session(styled):
    with styled.reader() as (reader, sim):
        sim.insert()
        card = styled(reader.connect(timeout=5))
        sim.remove()
        with pytest.raises(errors.NoCardError):
            styled(card.transmit(SELECT_AID))
        with pytest.raises(CardDisconnectedError, match="removed"):
            styled(card.transmit(SELECT_AID))
        assert reader.card is None
        with pytest.raises(errors.NoCardError):
            styled(reader.connect(timeout=5))
        sim.insert()
        assert styled(styled(reader.connect(timeout=5)).transmit(SELECT_AID)).ok


def test_card_swapped_mid_session_is_refused(styled):
    with styled.reader() as (reader, sim):
        sim.insert()
        card = styled(reader.connect(timeout=5))
        sim.remove()
        assert styled(reader.state()) == State.ABSENT
        sim.insert()
        with pytest.raises(errors.InvalidStateError):
            styled(card.transmit(SELECT_AID))
        assert not card.connected and reader.card is None
        assert styled(reader.connect(timeout=5)).connected


def test_a_card_found_gone_is_let_go(styled):
    # divergence: AsyncCard.transmit left the dead card in the reader's slot
    with styled.reader() as (reader, sim):
        sim.insert()
        card = styled(reader.connect(timeout=5))
        inner = weakref.ref(getattr(card, "_card", card))  # the blocking Card
        sim.remove()
        with pytest.raises(errors.NoCardError):
            styled(card.transmit(SELECT_AID))
        del card
        gc.collect()
        assert inner() is None, "the reader still holds the card that is gone"


def test_the_card_is_the_readers_card_in_both_front_ends(styled):
    # divergence: AsyncReader.connect never set the blocking Reader's slot,
    # so the Reader saw no card and connected a second one over it
    with styled.reader() as (reader, sim):
        blocking = getattr(reader, "reader", reader)
        sim.insert()
        card = styled(reader.connect(timeout=5))
        assert blocking.card is not None and blocking.card.atr_bytes == card.atr_bytes
        with pytest.raises(errors.InvalidStateError, match="already connected"):
            blocking.connect(timeout=5)
        styled(card.disconnect())
        assert blocking.card is None and reader.card is None


# -- state, presence, waiting ---------------------------------------------------

def test_state_and_presence(styled):
    with styled.reader() as (reader, sim):
        assert styled(reader.state()) == State.ABSENT
        assert styled(reader.is_card_present()) is False
        sim.insert()
        assert styled(reader.state()) == State.SWALLOWED
        assert styled(reader.is_card_present()) is True
        vendor = styled(reader.get_attribute(0x00010100))  # VENDOR_NAME
        assert vendor.rstrip(b"\0") == b"scardio"


def test_wait_for_card_and_removal_without_a_monitor(styled):
    with styled.reader() as (reader, sim):
        with pytest.raises(errors.TimeoutError, match="no sign of a card"):
            styled(reader.wait_for_card(0.1))
        later(0.05, sim.insert)
        styled(reader.wait_for_card(5))
        t0 = time.monotonic()
        styled(reader.wait_for_card(5))  # already in: at once
        assert time.monotonic() - t0 < 1.0
        card = styled(reader.connect(timeout=5))
        later(0.05, sim.remove)
        styled(reader.wait_for_removal(5))
        assert not card.connected and reader.card is None


def test_a_second_tracking_request_is_explained(styled):
    # divergence: the asyncio wait raised the bare DEVICE_BUSY
    with styled.reader() as (reader, sim):
        op = reader.device.submit(IOCTL.IS_PRESENT)  # someone else's, pending
        try:
            with pytest.raises(errors.DeviceBusyError,
                               match="one per reader.*use the Monitor's events"):
                styled(reader.wait_for_card(1))
        finally:
            op.cancel()
            try:
                op.wait(1.0)
            except errors.ScardioError:
                pass
        later(0.05, sim.insert)
        styled(reader.wait_for_card(5))  # the slot is free again


# -- listeners and events ---------------------------------------------------------

def test_listeners_see_connect_disconnect_and_power_down(styled):
    rec = Recorder()
    with styled.reader(power_down_timeout=30) as (reader, sim):
        reader.add_listener(rec)
        sim.insert()
        card = styled(reader.connect(timeout=5))
        styled(card.disconnect(Disposition.UNPOWER))
        assert rec.kinds() == ["connect", "disconnect", "power_down"]
        connect, disconnect, down = rec.events
        assert connect.reader == reader.name and connect.detail["protocol"] == "T1"
        assert connect.detail["actions"] == card.connect_actions
        assert disconnect.detail == {"disposition": "UNPOWER"}
        assert down.detail["reason"] == "disconnect" and down.detail["powered_down"]
        reader.remove_listener(rec)
        styled(styled(reader.connect(timeout=5)).disconnect())
        assert len(rec.events) == 3


def test_a_broken_listener_does_not_break_a_sequence(styled):
    def broken(ev):
        raise RuntimeError("listener bug")
    with styled.reader() as (reader, sim):
        reader.add_listener(broken)
        sim.insert()
        card = styled(reader.connect(timeout=5))
        assert styled(card.transmit(SELECT_AID)).ok


def test_close_hooks_run_before_the_device_closes(styled):
    seen = []
    with styled.reader() as (reader, sim):
        reader.add_close_hook(lambda r: seen.append(r.device.closed))
        reader.add_close_hook(seen.append)
        reader.remove_close_hook(seen.append)
        styled.close_reader(reader)
    assert seen == [False]


# -- a closed reader ------------------------------------------------------------

def test_a_closed_reader_refuses_calls(styled):
    rec = Recorder()
    with styled.reader() as (reader, sim):
        reader.add_listener(rec)
        sim.insert()
        card = styled(reader.connect(timeout=5))
        styled.close_reader(reader)
        assert reader.closed and not card.connected and reader.card is None
        assert rec.kinds()[-1] == "close"
        for call in (lambda: reader.connect(timeout=5), reader.state,
                     reader.power_down, lambda: reader.wait_for_card(1),
                     lambda: reader.get_attribute(0x00010100)):
            with pytest.raises(errors.ClosedError, match="is closed"):
                styled(call())
        with pytest.raises(CardDisconnectedError, match="closed"):
            styled(card.transmit(SELECT_AID))
        styled.close_reader(reader)  # idempotent


def test_disconnect_after_close_is_a_quiet_no_op(styled):
    # divergence: the asyncio disconnect had no closed-reader check (it
    # armed a timer on the closed reader, or failed with ClosedError)
    rec = Recorder()
    with styled.reader(power_down_timeout=30) as (reader, sim):
        reader.add_listener(rec)
        sim.insert()
        cards = [styled(reader.connect(timeout=5))]
        reader.close()  # the immediate close, in both styles
        for disposition in Disposition:
            styled(cards[0].disconnect(disposition))
        assert not reader.power_down_pending and not cards[0].connected
        assert "disconnect" not in rec.kinds()
        assert rec.kinds().count("power_down") == 1  # the close's own


# -- monitors -----------------------------------------------------------------------

def test_monitor_reports_arrival_and_departure(styled):
    with styled.reader() as (reader, sim):
        mon = styled.monitor([reader])
        try:
            later(0.02, sim.insert)
            ev = styled(mon.get(5))
            assert ev.kind == ARRIVAL and ev.reader_name == reader.name
            card = styled(reader.connect(timeout=5))
            later(0.02, sim.remove)
            ev = styled(mon.get(5))
            assert ev.kind == DEPARTURE
            assert not card.connected and reader.card is None and reader.present is False
            with pytest.raises(errors.TimeoutError):
                styled(mon.get(0.05))
        finally:
            mon.close()
        with pytest.raises(errors.ClosedError):
            styled(mon.get(1))
        later(0.02, sim.insert)
        styled(reader.wait_for_card(5))  # the monitor let the tracking slot go


def test_waits_follow_the_monitor_that_tracks_the_reader(styled):
    with styled.reader() as (reader, sim):
        mon = styled.monitor([reader])
        try:
            with pytest.raises(errors.TimeoutError):
                styled(reader.wait_for_card(0.1))  # no DEVICE_BUSY while monitored
            later(0.05, sim.insert)
            styled(reader.wait_for_card(5))
            assert styled(mon.get(5)).kind == ARRIVAL
        finally:
            mon.close()


def test_monitor_callbacks_and_readers(styled):
    got = []
    with styled.reader() as (reader, sim):
        mon = styled.monitor([reader])
        try:
            mon.add_callback(got.append)
            later(0.02, sim.insert)
            ev = styled(mon.get(5))
            assert got == [ev]
            assert [getattr(r, "name") for r in mon.readers] == [reader.name]
        finally:
            mon.close()
