"""The connect loop: every row of the spec's state table on a scripted
device (the sans-IO generator alone, then under the threaded Reader and the
asyncio AsyncReader), the rows a real driver reaches on the simulated
reader, and the loop's bounds.

The table (GET_STATE, then): UNKNOWN, ABSENT: no card; PRESENT: swallow;
SWALLOWED: cold reset; POWERED: warm reset; NEGOTIABLE: read the ATR;
SPECIFIC: read the ATR and the protocol; then SET_PROTOCOL."""

from __future__ import annotations

import asyncio
import struct
import time

import pytest

from helpers_reader import sim_reader
from scardio import IOCTL, Protocol, Reader, State, errors
from scardio.aio import AsyncReader
from scardio.reader import Request, connect_steps, run_sync
from scardio.sim import ATR_T0, ATR_T1
from scripted_device import ScriptedDevice


def test_absent_is_no_card_and_reader_stays_usable():
    with sim_reader() as (reader, sim):
        with pytest.raises(errors.NoCardError, match="no card"):
            reader.connect(timeout=5)
        sim.insert()
        card = reader.connect(timeout=5)
        assert card.connected and card.protocol == Protocol.T1


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


def test_negotiable_reads_the_atr_only():
    with sim_reader() as (reader, sim):
        sim.insert()
        reader.device.ioctl(IOCTL.POWER, struct.pack("<I", 1), 33)  # cold reset by hand
        assert reader.state() == State.NEGOTIABLE
        card = reader.connect(timeout=5)
        assert card.connect_actions == ["NEGOTIABLE", "ATR", "SET_PROTOCOL(T=1)"]
        c = sim.counters()
        assert (c.power_ups, c.resets) == (1, 0)  # no second reset


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


# -- every row of the table, on a scripted device ------------------------------

SET_T1 = "SET_PROTOCOL(T=1)"

# (GET_STATE answers, CURRENT_PROTOCOL_TYPE, IOCTLs made, Card.connect_actions)
ROWS = {
    "PRESENT": ([State.PRESENT, State.SWALLOWED, State.NEGOTIABLE], 2,
                ["GET_STATE", "SWALLOW", "GET_STATE", "POWER(COLD_RESET)", "GET_STATE",
                 "GET_ATTRIBUTE(ATR_STRING)", "SET_PROTOCOL"],
                ["PRESENT", "SWALLOW", "SWALLOWED", "COLD_RESET", "NEGOTIABLE", "ATR", SET_T1]),
    "SWALLOWED": ([State.SWALLOWED, State.NEGOTIABLE], 2,
                  ["GET_STATE", "POWER(COLD_RESET)", "GET_STATE",
                   "GET_ATTRIBUTE(ATR_STRING)", "SET_PROTOCOL"],
                  ["SWALLOWED", "COLD_RESET", "NEGOTIABLE", "ATR", SET_T1]),
    "POWERED": ([State.POWERED, State.NEGOTIABLE], 2,
                ["GET_STATE", "POWER(WARM_RESET)", "GET_STATE",
                 "GET_ATTRIBUTE(ATR_STRING)", "SET_PROTOCOL"],
                ["POWERED", "WARM_RESET", "NEGOTIABLE", "ATR", SET_T1]),
    "NEGOTIABLE": ([State.NEGOTIABLE], 2,
                   ["GET_STATE", "GET_ATTRIBUTE(ATR_STRING)", "SET_PROTOCOL"],
                   ["NEGOTIABLE", "ATR", SET_T1]),
    "SPECIFIC": ([State.SPECIFIC], 2,
                 ["GET_STATE", "GET_ATTRIBUTE(ATR_STRING)",
                  "GET_ATTRIBUTE(CURRENT_PROTOCOL_TYPE)", "SET_PROTOCOL"],
                 ["SPECIFIC", "ATR+PROTOCOL(0x2)", SET_T1]),
    # left in T=0 by an earlier session, T=1 wanted: one warm reset
    "SPECIFIC, other protocol": (
        [State.SPECIFIC, State.NEGOTIABLE], 1,
        ["GET_STATE", "GET_ATTRIBUTE(ATR_STRING)", "GET_ATTRIBUTE(CURRENT_PROTOCOL_TYPE)",
         "POWER(WARM_RESET)", "GET_STATE", "GET_ATTRIBUTE(ATR_STRING)", "SET_PROTOCOL"],
        ["SPECIFIC", "ATR+PROTOCOL(0x1)", "WARM_RESET", "NEGOTIABLE", "ATR", SET_T1]),
}
NO_CARD_ROWS = [State.UNKNOWN, State.ABSENT]
RUNTIMES = ["generator", "Reader", "AsyncReader"]


def _connect(runtime: str, dev: ScriptedDevice, protocols: int) -> list[str]:
    """Connect through `runtime`; the connect actions it reports."""
    if runtime == "generator":
        return run_sync(dev, connect_steps(protocols)).actions
    reader = Reader(dev, power_down_timeout=None, startup=False)
    try:
        if runtime == "Reader":
            return reader.connect(protocols, timeout=5).connect_actions

        async def main() -> list[str]:
            areader = AsyncReader(reader)
            try:
                return (await areader.connect(protocols, timeout=5)).connect_actions
            finally:
                areader.close(power_down=False)
        return asyncio.run(main())
    finally:
        reader.close(power_down=False)


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("row", list(ROWS))
def test_table_row_on_a_scripted_device(row, runtime):
    states, current, calls, actions = ROWS[row]
    dev = ScriptedDevice(states, current_protocol=current)
    wanted = Protocol.T1 if row == "SPECIFIC, other protocol" else Protocol.T0 | Protocol.T1
    assert _connect(runtime, dev, wanted) == actions
    assert dev.calls == calls
    assert dev.states == []  # the whole script was used


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("state", NO_CARD_ROWS)
def test_no_card_rows_do_nothing_to_the_card(state, runtime):
    dev = ScriptedDevice([state])
    with pytest.raises(errors.NoCardError, match=state.name):
        _connect(runtime, dev, Protocol.T0 | Protocol.T1)
    assert dev.calls == ["GET_STATE"]


def test_every_state_has_a_row():
    assert {State[r.split(",")[0]] for r in ROWS} | set(NO_CARD_ROWS) == set(State)


def test_out_of_range_state_counts_as_unknown():
    with pytest.raises(errors.NoCardError, match="UNKNOWN"):
        run_sync(ScriptedDevice([99]), connect_steps(Protocol.T1))


def test_requests_are_plain_tuples():
    """The sequence yields its loop as a Loop (the core runs it where it
    can), whose own steps yield plain Requests."""
    from scardio._core import LOOP_CONNECT
    from scardio.sequences import Loop
    gen = connect_steps(Protocol.T1)
    loop = next(gen)
    assert isinstance(loop, Loop) and (loop.kind, loop.protocols, loop.max_steps) == (
        LOOP_CONNECT, Protocol.T1, 8)
    steps = loop.steps()
    assert next(steps) == Request(IOCTL.GET_STATE, b"", 4)
    steps.close()
    gen.close()


# -- a hung driver ----------------------------------------------------------------

@pytest.mark.parametrize("entry", ["ICC_PRESENCE", "POWER_ICC"])
def test_a_hung_driver_releases_connect_within_its_timeout(entry):
    """The driver never answers (the sim blocks the call until STOP): connect()
    raises TimeoutError at its timeout, not later, and the reader works
    again once the driver lets go.  GET_STATE hangs first, or the cold
    reset after it."""
    from scardio import Disposition
    from scardio.sim import EntryPoint, Fault
    with sim_reader() as (reader, sim):
        sim.insert()
        reader.connect(timeout=5).disconnect(Disposition.UNPOWER)  # the lane has run
        sim.fault(EntryPoint[entry], Fault.BLOCK)
        try:
            t0 = time.monotonic()
            with pytest.raises(errors.TimeoutError, match="no answer from the driver"):
                reader.connect(timeout=0.3)
            took = time.monotonic() - t0
            assert 0.3 <= took < 0.3 + 0.25, took  # at its timeout, not the next one
            assert reader.card is None  # nothing half-connected is left
        finally:
            sim.stop()  # the driver lets go
        assert reader.connect(timeout=5).connected


def test_a_hung_driver_does_not_hold_connect_waiting_for_the_reader():
    """A second connect() behind one stuck in the driver gives up at its own
    timeout too (it waits for the reader lock no longer than that)."""
    import threading
    from scardio.sim import EntryPoint, Fault
    with sim_reader() as (reader, sim):
        sim.insert()
        sim.fault(EntryPoint.ICC_PRESENCE, Fault.BLOCK)
        # (it may connect once the driver lets go below, or time out)
        first = threading.Thread(target=lambda: reader.connect(timeout=3), daemon=True)
        first.start()
        try:
            time.sleep(0.2)  # the first holds the reader, stuck in the driver
            t0 = time.monotonic()
            with pytest.raises(errors.TimeoutError):
                reader.connect(timeout=0.3)
            assert time.monotonic() - t0 < 0.3 + 0.25
        finally:
            sim.stop()
            first.join(10)
        card = reader.card
        if card is not None:
            card.disconnect()
        assert reader.connect(timeout=5).connected
