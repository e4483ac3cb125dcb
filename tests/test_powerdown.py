"""The disconnect sequence: the power-down timer, its cancellation by a
reconnect (no new reset), dispositions, close."""

from __future__ import annotations

import threading
import time

import pytest

from helpers_reader import Recorder, sim_reader
from scardio import Disposition, State, errors
from scardio.reader import DEFAULT_POWER_DOWN_TIMEOUT, power_down_steps, run_sync


# The scenarios take `styled` (conftest.py): each runs on the blocking Reader
# and on the AsyncReader, which run the same session.


def test_default_matches_pcscd_grace_period():
    assert DEFAULT_POWER_DOWN_TIMEOUT == 5.0


def test_timer_fires_and_powers_down(styled):
    rec = Recorder()
    with styled.reader(power_down_timeout=0.2) as (reader, sim):
        reader.add_listener(rec)
        sim.insert()
        card = styled(reader.connect(timeout=5))
        t0 = time.monotonic()
        styled(card.disconnect())
        assert reader.power_down_pending
        assert sim.counters().powered  # still powered right after disconnect
        ev = styled.wait_for(rec, "power_down", timeout=5)
        assert 0.15 <= ev.timestamp - t0 < 2.0
        assert ev.detail["reason"] == "timer"
        assert ev.detail["actions"] == ["SPECIFIC", "POWER_DOWN", "SWALLOWED"]
        c = sim.counters()
        assert not c.powered and c.power_downs == 1
        assert styled(reader.state()) == State.SWALLOWED
        assert not reader.power_down_pending


def test_reconnect_cancels_the_timer_and_reuses_the_card(styled):
    rec = Recorder()
    with styled.reader(power_down_timeout=0.3) as (reader, sim):
        reader.add_listener(rec)
        sim.insert()
        styled(styled(reader.connect(timeout=5)).disconnect())
        before = sim.counters()
        card = styled(reader.connect(timeout=5))
        after = sim.counters()
        assert (after.power_ups, after.resets) == (before.power_ups, before.resets) == (1, 0)
        assert card.connect_actions[0] == "SPECIFIC"
        assert "power_down_cancelled" in rec.kinds()
        styled.sleep(0.6)  # past the old deadline: nothing may fire
        assert "power_down" not in rec.kinds()
        assert sim.counters().powered and styled(card.transmit("00A4040C08F07363617264696F")).ok
        styled(card.disconnect())
        styled.wait_for(rec, "power_down", timeout=5)
        assert sim.counters().power_downs == 1


def test_many_quick_reconnects_never_reset(styled):
    with styled.reader(power_down_timeout=0.5) as (reader, sim):
        sim.insert()
        for _ in range(20):
            styled(styled(reader.connect(timeout=5)).disconnect())
        c = sim.counters()
        assert (c.power_ups, c.resets, c.power_downs) == (1, 0, 0)


def test_reconnect_after_the_timer_cold_resets(styled):
    rec = Recorder()
    with styled.reader(power_down_timeout=0.05) as (reader, sim):
        reader.add_listener(rec)
        sim.insert()
        styled(styled(reader.connect(timeout=5)).disconnect())
        styled.wait_for(rec, "power_down")
        card = styled(reader.connect(timeout=5))
        assert card.connect_actions[:2] == ["SWALLOWED", "COLD_RESET"]
        assert sim.counters().power_ups == 2


def test_disposition_unpower_and_reset(styled):
    with styled.reader(power_down_timeout=30) as (reader, sim):
        sim.insert()
        styled(styled(reader.connect(timeout=5)).disconnect(Disposition.UNPOWER))
        assert not sim.counters().powered and not reader.power_down_pending
        styled(styled(reader.connect(timeout=5)).disconnect(Disposition.RESET))
        c = sim.counters()
        assert c.resets == 1 and c.powered and reader.power_down_pending


def test_timeout_zero_powers_down_at_once_and_none_never(styled):
    rec = Recorder()
    with styled.reader(power_down_timeout=0) as (reader, sim):
        reader.add_listener(rec)
        sim.insert()
        styled(styled(reader.connect(timeout=5)).disconnect())
        # within disconnect(), with the event a timer firing sends
        assert not sim.counters().powered and not reader.power_down_pending
        downs = [e for e in rec.events if e.kind == "power_down"]
        assert len(downs) == 1 and downs[0].detail == {
            "reason": "timer", "actions": ["SPECIFIC", "POWER_DOWN", "SWALLOWED"],
            "powered_down": True}
        # reset, then the timer
        styled(styled(reader.connect(timeout=5)).disconnect(Disposition.RESET))
        assert not sim.counters().powered and sim.counters().resets == 1
        assert rec.kinds().count("power_down") == 2
        reader.power_down_timeout = None
        styled(styled(reader.connect(timeout=5)).disconnect())
        assert sim.counters().powered and not reader.power_down_pending


def test_timer_with_the_card_gone_does_nothing(styled):
    rec = Recorder()
    with styled.reader(power_down_timeout=0.1) as (reader, sim):
        reader.add_listener(rec)
        sim.insert()
        styled(styled(reader.connect(timeout=5)).disconnect())
        sim.remove()
        ev = styled.wait_for(rec, "power_down")
        assert ev.detail["actions"] == ["ABSENT"] and not ev.detail["powered_down"]


def test_close_cancels_the_timer_and_powers_down(styled):
    rec = Recorder()
    with styled.reader(power_down_timeout=0.2) as (reader, sim):
        reader.add_listener(rec)
        sim.insert()
        styled(styled(reader.connect(timeout=5)).disconnect())
        seen = []
        reader.add_listener(lambda ev: ev.kind == "power_down" and seen.append(sim.counters()))
        styled.close_reader(reader)
        assert seen and not seen[0].powered
        assert [e.detail.get("reason") for e in rec.events if e.kind == "power_down"] == ["close"]
        styled.sleep(0.4)  # the cancelled timer must not run on a closed reader
        assert rec.kinds().count("power_down") == 1


def test_explicit_power_down(styled):
    with styled.reader(power_down_timeout=30) as (reader, sim):
        sim.insert()
        card = styled(reader.connect(timeout=5))
        with pytest.raises(errors.InvalidStateError):
            styled(reader.power_down())
        styled(card.disconnect())
        assert styled(reader.power_down()) == ["SPECIFIC", "POWER_DOWN", "SWALLOWED"]
        assert not reader.power_down_pending


def test_timer_races_a_reconnect(styled):
    # Reconnect at about the moment the timer fires, many times: the card
    # ends either reused or cold-reset, never half-way.
    with styled.reader(power_down_timeout=0.01) as (reader, sim):
        sim.insert()
        for _ in range(30):
            styled(styled(reader.connect(timeout=5)).disconnect())
            styled.sleep(0.01)
            card = styled(reader.connect(timeout=5))
            assert styled(card.transmit("00A4040C08F07363617264696F")).ok
            styled(card.disconnect())


@pytest.mark.parametrize("state, actions", [
    (6, ["SPECIFIC", "POWER_DOWN", "SWALLOWED"]),
    (5, ["NEGOTIABLE", "POWER_DOWN", "SWALLOWED"]),
    (4, ["POWERED", "POWER_DOWN", "SWALLOWED"]),
    (3, ["SWALLOWED"]), (2, ["PRESENT"]), (1, ["ABSENT"]), (0, ["UNKNOWN"]),
])
def test_power_down_table_on_a_scripted_driver(state, actions):
    import struct
    calls = []
    states = [state, 3]

    class Dev:
        def ioctl(self, code, data=b"", size=0):
            calls.append(code)
            return struct.pack("<I", states.pop(0)) if size == 4 else b""
    assert run_sync(Dev(), power_down_steps()) == actions


def test_timer_thread_does_not_leak():
    before = threading.active_count()
    with sim_reader(power_down_timeout=0.05) as (reader, sim):
        sim.insert()
        for _ in range(5):
            reader.connect(timeout=5).disconnect()
        time.sleep(0.3)
    time.sleep(0.1)
    assert threading.active_count() <= before


@pytest.mark.parametrize("bad, error", [(-1, ValueError), (-0.001, ValueError),
                                        (float("nan"), ValueError), (float("inf"), ValueError),
                                        ("5", TypeError), (True, TypeError)])
def test_bad_power_down_timeouts_are_refused(bad, error):
    import scardio
    from scardio.reader import Reader
    from helpers_reader import next_lun
    dev = scardio.sim.open_device(next_lun())
    with pytest.raises(error, match="power_down_timeout"):
        Reader(dev, power_down_timeout=bad)
    assert dev.closed  # the reader owned it: not left open
    with pytest.raises(error, match="power_down_timeout"):
        scardio.open_reader("scardio Simulated Reader 0", sim=1, power_down_timeout=bad)
    with sim_reader(power_down_timeout=1) as (reader, sim):
        with pytest.raises(error, match="power_down_timeout"):
            reader.power_down_timeout = bad
        assert reader.power_down_timeout == 1
        reader.power_down_timeout = 2.5
        assert reader.power_down_timeout == 2.5
