"""The connect loop, one test per row of the state table (DESIGN.md §4),
driven on the simulated reader, plus its bounds and the sans-IO generator."""

from __future__ import annotations

import struct
import time

import pytest

from helpers_reader import sim_reader
from scardio import IOCTL, Protocol, State, errors
from scardio.reader import Request, connect_steps, run_sync
from scardio.sim import ATR_T0, ATR_T1


def test_absent_is_no_card_and_reader_stays_usable():
    with sim_reader() as (reader, sim):
        with pytest.raises(errors.NoCardError, match="no card"):
            reader.connect(timeout=5)
        sim.insert()
        card = reader.connect(timeout=5)
        assert card.connected and card.protocol == Protocol.T1


def test_unknown_is_no_card():
    with sim_reader() as (reader, sim):
        sim.insert()
        sim.force_state(State.UNKNOWN)
        with pytest.raises(errors.NoCardError, match="UNKNOWN"):
            reader.connect(timeout=5)
        assert sim.counters().power_ups == 0  # nothing was done to the card


def test_present_swallows_then_cold_resets():
    with sim_reader() as (reader, sim):
        sim.insert()
        sim.force_state(State.PRESENT)
        card = reader.connect(timeout=5)
        assert card.connect_actions[:4] == ["PRESENT", "SWALLOW", "SWALLOWED", "COLD_RESET"]
        assert card.connect_actions[-1] == "SET_PROTOCOL(T=1)"
        assert sim.counters().power_ups == 1


def test_swallowed_cold_resets():
    with sim_reader() as (reader, sim):
        sim.insert()
        card = reader.connect(timeout=5)
        assert card.connect_actions == ["SWALLOWED", "COLD_RESET", "NEGOTIABLE", "ATR",
                                        "SET_PROTOCOL(T=1)"]
        c = sim.counters()
        assert (c.power_ups, c.resets, c.protocol) == (1, 0, 2)
        assert card.atr_bytes == ATR_T1
        assert card.atr is not None and 1 in card.atr.protocols


def test_powered_warm_resets():
    with sim_reader() as (reader, sim):
        sim.insert()
        reader.connect(timeout=5).disconnect()  # leaves it powered
        sim.force_state(State.POWERED)
        card = reader.connect(timeout=5)
        assert card.connect_actions[:3] == ["POWERED", "WARM_RESET", "NEGOTIABLE"]
        c = sim.counters()
        assert (c.power_ups, c.resets) == (1, 1)


def test_negotiable_reads_the_atr_only():
    with sim_reader() as (reader, sim):
        sim.insert()
        reader.device.ioctl(IOCTL.POWER, struct.pack("<I", 1), 33)  # cold reset by hand
        assert reader.state() == State.NEGOTIABLE
        card = reader.connect(timeout=5)
        assert card.connect_actions == ["NEGOTIABLE", "ATR", "SET_PROTOCOL(T=1)"]
        c = sim.counters()
        assert (c.power_ups, c.resets) == (1, 0)  # no second reset


def test_forced_negotiable_on_a_powered_card():
    with sim_reader() as (reader, sim):
        sim.insert()
        reader.connect(timeout=5).disconnect()
        sim.force_state(State.NEGOTIABLE)
        card = reader.connect(timeout=5)
        assert card.connect_actions[0] == "NEGOTIABLE"
        assert sim.counters().power_ups == 1


def test_specific_reads_atr_and_protocol_without_reset():
    with sim_reader() as (reader, sim):
        sim.insert()
        reader.connect(timeout=5).disconnect()
        card = reader.connect(timeout=5)
        assert card.connect_actions == ["SPECIFIC", "ATR+PROTOCOL(0x2)", "SET_PROTOCOL(T=1)"]
        assert card.protocol == Protocol.T1
        c = sim.counters()
        assert (c.power_ups, c.resets) == (1, 0)


def test_specific_mode_card_from_ta2():
    # TS T0=80 (TD1) TD1=11 (TA2, T=1) TA2=01 (specific T=1) TCK
    atr = bytes.fromhex("3B80110190")
    with sim_reader() as (reader, sim):
        sim.insert(atr)
        card = reader.connect(timeout=5)
        assert card.connect_actions[:3] == ["SWALLOWED", "COLD_RESET", "SPECIFIC"]
        assert card.protocol == Protocol.T1


def test_t0_card():
    with sim_reader() as (reader, sim):
        sim.insert(t0=True)
        card = reader.connect(timeout=5)
        assert card.protocol == Protocol.T0 and card.atr_bytes == ATR_T0


def test_protocol_mismatch_on_specific_card_warm_resets_once():
    with sim_reader() as (reader, sim):
        sim.insert()
        reader.connect(timeout=5).disconnect()  # left in T=1
        with pytest.raises(errors.NotSupportedError, match="T=0"):
            reader.connect(Protocol.T0, timeout=5)
        assert sim.counters().resets == 1  # one warm reset tried, then SET_PROTOCOL refused
        card = reader.connect(timeout=5)  # still usable
        assert card.protocol == Protocol.T1


def test_unsupported_protocol_is_a_clear_error():
    with sim_reader() as (reader, sim):
        sim.insert()
        with pytest.raises(errors.NotSupportedError, match="does not support"):
            reader.connect(Protocol.T0, timeout=5)


def test_step_bound():
    with sim_reader() as (reader, sim):
        sim.insert()
        with pytest.raises(errors.TimeoutError, match="did not settle in 1 steps"):
            reader.connect(timeout=5, max_steps=1)  # needs 2 GET_STATEs
        assert reader.connect(timeout=5).connected


def test_time_bound_with_a_slow_driver():
    with sim_reader() as (reader, sim):
        sim.insert()
        sim.set_latency(400_000)  # every driver call takes 0.4 s
        t0 = time.monotonic()
        with pytest.raises(errors.TimeoutError):
            reader.connect(timeout=0.1)
        assert time.monotonic() - t0 < 3.0
        sim.set_latency(0)
        assert reader.connect(timeout=5).connected


def test_second_connect_while_connected_is_refused():
    with sim_reader() as (reader, sim):
        sim.insert()
        card = reader.connect(timeout=5)
        with pytest.raises(errors.InvalidStateError, match="already connected"):
            reader.connect(timeout=5)
        card.disconnect()
        assert reader.connect(timeout=5).connected


def test_card_removed_mid_sequence_is_no_card():
    from scardio.sim import EntryPoint, Fault
    with sim_reader() as (reader, sim):
        sim.insert()
        sim.fault(EntryPoint.POWER_ICC, Fault.REMOVE_CARD)
        with pytest.raises(errors.NoCardError):
            reader.connect(timeout=5)
        sim.insert()
        assert reader.connect(timeout=5).connected


class Scripted:
    """A fake device answering the connect loop from a script, so the table
    is checked independently of any backend."""

    def __init__(self, states, atr=b"\x3B\x00"):
        self.states = list(states)
        self.atr = atr
        self.calls = []

    def ioctl(self, code, data=b"", size=0):
        self.calls.append(IOCTL(code).name)
        if code == IOCTL.GET_STATE:
            return struct.pack("<I", self.states.pop(0))
        if code == IOCTL.POWER:
            return b"" if data == struct.pack("<I", 0) else self.atr
        if code == IOCTL.GET_ATTRIBUTE:
            tag = struct.unpack("<I", data)[0]
            if tag == 0x00090303:
                return self.atr
            return struct.pack("<I", 2)
        if code == IOCTL.SET_PROTOCOL:
            return struct.pack("<I", 2)
        return b""


@pytest.mark.parametrize("states, expected", [
    ([2, 3, 5], ["GET_STATE", "SWALLOW", "GET_STATE", "POWER", "GET_STATE",
                 "GET_ATTRIBUTE", "SET_PROTOCOL"]),
    ([4, 5], ["GET_STATE", "POWER", "GET_STATE", "GET_ATTRIBUTE", "SET_PROTOCOL"]),
    ([6], ["GET_STATE", "GET_ATTRIBUTE", "GET_ATTRIBUTE", "SET_PROTOCOL"]),
])
def test_table_on_a_scripted_driver(states, expected):
    dev = Scripted(states)
    conn = run_sync(dev, connect_steps(Protocol.T0 | Protocol.T1))
    assert dev.calls == expected
    assert conn.protocol == Protocol.T1


@pytest.mark.parametrize("state", [0, 1])
def test_scripted_no_card(state):
    with pytest.raises(errors.NoCardError):
        run_sync(Scripted([state]), connect_steps(Protocol.T1))


def test_out_of_range_state_counts_as_unknown():
    with pytest.raises(errors.NoCardError, match="UNKNOWN"):
        run_sync(Scripted([99]), connect_steps(Protocol.T1))


def test_requests_are_plain_tuples():
    gen = connect_steps(Protocol.T1)
    req = next(gen)
    assert req == Request(IOCTL.GET_STATE, b"", 4)
    gen.close()
