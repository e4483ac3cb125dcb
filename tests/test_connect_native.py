"""The connect and power-down loops run by the core (``Device.run_loop``:
the runners run a :class:`~scardio.sequences.Loop` a sequence yields there)
answer exactly what the same loops answer run IOCTL by IOCTL (a device
without run_loop, as a tracing proxy is): the same ATR, protocol and
actions, the same typed errors and messages, the same driver calls and the
same card state afterwards, under driver faults at any step, with and
without a deadline.  Where the core stops (an unusual answer), the loop's
steps replay what the core did and decide; a replay that disagrees with
the record is refused.  (benchmarks/test_bench_connect.py measures the
speed.)"""

from __future__ import annotations

import itertools
import time
from typing import Any, Optional

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scardio import IOCTL, Disposition, Reader, errors
from scardio._core import LOOP_CONNECT
from scardio.constants import Attr, Protocol
from scardio.reader import TracingDevice
from scardio.runner import run_sync
from scardio.sequences import U32, Loop, replayed
from scardio.sequences.connect import connect_loop_steps, connect_steps, connected
from scardio.sequences.disconnect import power_down_steps
from scardio.sim import EntryPoint, Fault, SimControl, open_device

_LUNS = itertools.count(0x700)

#: Where the connect loop's IOCTLs reach the driver.
ENTRIES = [EntryPoint.ICC_PRESENCE, EntryPoint.GET_CAPABILITIES, EntryPoint.POWER_ICC,
           EntryPoint.SET_PROTOCOL]
FAULTS = st.one_of(
    st.tuples(st.sampled_from(ENTRIES), st.just(Fault.RETURN), st.integers(600, 618)),
    st.tuples(st.sampled_from(ENTRIES),
              st.sampled_from([Fault.REMOVE_CARD, Fault.OVERLONG_LENGTH, Fault.LONG_ATR]),
              st.integers(0, 40)))
PROTOCOLS = st.sampled_from([Protocol.T0, Protocol.T1, Protocol.T0 | Protocol.T1,
                             Protocol.RAW, Protocol.OPTIMAL, Protocol.DEFAULT,
                             Protocol.T0 | Protocol.DEFAULT])


def prepared(state: str) -> tuple[Any, SimControl]:
    """A simulated reader: empty, a card just in (T=1 or T=0), or a card
    left connected (powered, a protocol in force)."""
    dev = open_device(next(_LUNS))
    sim = SimControl(dev)
    if state != "empty":
        sim.insert(t0=state.endswith("t0"))
    if state.startswith("connected"):
        run_sync(dev, connect_steps(Protocol.T0 | Protocol.T1))
    sim.reset_counters()
    return dev, sim


def step_by_step(dev: Any) -> TracingDevice:
    """`dev` as a device without the core's loops."""
    return TracingDevice(dev, lambda record: None)


def outcome(call: Any) -> tuple[Any, ...]:
    try:
        c = call()
    except Exception as exc:  # every error: its type and message
        return ("error", type(exc), str(exc))
    return ("ok", c.atr, c.protocol, list(c.actions))


def outcome_list(call: Any) -> tuple[Any, ...]:
    try:
        return ("ok", call())
    except Exception as exc:
        return ("error", type(exc), str(exc))


def after(dev: Any, sim: SimControl) -> tuple[Any, ...]:
    sim.stop()  # a fault left armed goes
    counters = sim.counters()
    return (dev.ioctl(IOCTL.GET_STATE, b"", 4), counters.calls, counters.powered,
            counters.protocol)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(["empty", "in t1", "in t0", "connected t1", "connected t0"]),
       st.lists(FAULTS, max_size=3), PROTOCOLS, st.integers(0, 8), st.booleans())
def test_the_core_loop_answers_what_the_sequence_answers(state: str, faults: list[Any],
                                                         protocols: int, max_steps: int,
                                                         bounded: bool) -> None:
    (native, sim_n), (steps, sim_s) = prepared(state), prepared(state)
    try:
        for entry, kind, value in faults:
            sim_n.fault(entry, kind, value)
            sim_s.fault(entry, kind, value)
        deadline: Optional[float] = time.monotonic() + 30 if bounded else None
        a = outcome(lambda: run_sync(native, connect_steps(
            protocols, max_steps=max_steps, deadline=deadline), deadline=deadline))
        b = outcome(lambda: run_sync(step_by_step(steps), connect_steps(
            protocols, max_steps=max_steps, deadline=deadline), deadline=deadline))
        assert a == b
        assert after(native, sim_n) == after(steps, sim_s)  # the same driver calls
        # then the power-down loop, from whatever state that left
        for entry, kind, value in faults[1:]:
            sim_n.fault(entry, kind, value)
            sim_s.fault(entry, kind, value)
        a = outcome_list(lambda: run_sync(native, power_down_steps(), deadline=deadline))
        b = outcome_list(lambda: run_sync(step_by_step(steps), power_down_steps(),
                                          deadline=deadline))
        assert a == b
        assert after(native, sim_n) == after(steps, sim_s)  # the same driver calls
    finally:
        native.close()
        steps.close()


def test_an_ordinary_connect_replays_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    import scardio.sequences as sequences
    used: list[Any] = []
    real = sequences.replayed
    monkeypatch.setattr(sequences, "replayed", lambda *a: used.append(a) or real(*a))
    dev, sim = prepared("in t1")
    reader = Reader(dev)
    try:
        for timeout in (None, 5.0):
            card = reader.connect(timeout=timeout)
            assert card.connect_actions[-1] == "SET_PROTOCOL(T=1)"
            card.disconnect(Disposition.UNPOWER)
        assert used == []
        sim.remove()
        with pytest.raises(errors.NoCardError, match=r"no card in the reader \(state ABSENT\)"):
            reader.connect()
        assert len(used) == 1  # the sequence said what the answer means
    finally:
        reader.close()


def test_a_traced_reader_traces_every_ioctl_of_a_connect() -> None:
    seen: list[Any] = []
    dev, sim = prepared("in t1")
    reader = Reader(TracingDevice(dev, seen.append))
    try:
        del seen[:]  # the start-up's GET_ATTRIBUTEs
        reader.connect(timeout=5).disconnect(Disposition.UNPOWER)
        codes = [r.code for r in seen]
        assert codes[:5] == [IOCTL.GET_STATE, IOCTL.POWER, IOCTL.GET_STATE,
                             IOCTL.GET_ATTRIBUTE, IOCTL.SET_PROTOCOL]
    finally:
        reader.close()


def test_a_share_mode_asked_runs_the_sequence() -> None:
    dev, sim = prepared("in t1")
    reader = Reader(dev)
    try:
        card = reader.connect(share="exclusive")
        assert card.connected and card.share == "exclusive"
        card.disconnect()
    finally:
        reader.close()


def test_the_trail_reads_as_the_sequence_writes_its_actions() -> None:
    dev, _ = prepared("connected t1")
    try:
        # left in T=1, asked for T=0: a warm reset, and SET_PROTOCOL refused
        done, record, trail = dev.run_loop(LOOP_CONNECT, Protocol.T0, 8)
        assert done is False and trail is None
        assert [step[0] for step in record] == [
            IOCTL.GET_STATE, IOCTL.GET_ATTRIBUTE, IOCTL.GET_ATTRIBUTE, IOCTL.POWER,
            IOCTL.GET_STATE, IOCTL.GET_ATTRIBUTE, IOCTL.SET_PROTOCOL]
        with pytest.raises(errors.NotSupportedError,
                           match=r"does not support the requested protocol\(s\) T=0"):
            run_sync(dev, replayed(connect_loop_steps(Protocol.T0, 8, None), record))
    finally:
        dev.close()
    dev, _ = prepared("in t0")
    try:
        done, atr, trail = dev.run_loop(LOOP_CONNECT, Protocol.T0 | Protocol.T1, 8)
        assert done is True
        c = connected(atr, trail)
        assert list(c.actions) == ["SWALLOWED", "COLD_RESET", "NEGOTIABLE", "ATR",
                                   "SET_PROTOCOL(T=0)"]
        assert c.protocol is Protocol.T0 and c.atr == atr
        again = connected(atr, dev.run_loop(LOOP_CONNECT, Protocol.T0 | Protocol.T1, 8)[2])
        assert list(again.actions) == ["SPECIFIC", "ATR+PROTOCOL(0x1)", "SET_PROTOCOL(T=0)"]
    finally:
        dev.close()
    with pytest.raises(RuntimeError, match="unreadable connect trail"):
        connected(b"\x3b\x00", b"\x7f")
    with pytest.raises(RuntimeError, match="without SET_PROTOCOL"):
        connected(b"\x3b\x00", b"\x05\x10")


def test_a_replay_that_disagrees_with_the_record_is_refused() -> None:
    record = [(IOCTL.GET_STATE, b"", 0, 0, U32.pack(5)),
              (IOCTL.GET_ATTRIBUTE, U32.pack(Attr.VENDOR_NAME), 0, 0, b"x")]
    steps = replayed(connect_loop_steps(Protocol.T1, 8, None), record)
    with pytest.raises(RuntimeError, match="where the sequence asks for GET_ATTRIBUTE"):
        next(steps)


def test_a_failed_step_in_the_record_is_thrown_in_as_the_typed_error() -> None:
    record = [(IOCTL.GET_STATE, b"", 0xC0000178, 0, b"")]  # NO_MEDIA
    steps = replayed(connect_loop_steps(Protocol.T1, 8, None), record)
    with pytest.raises(errors.NoCardError) as info:
        next(steps)
    assert info.value.ioctl == IOCTL.GET_STATE


@pytest.mark.parametrize("bad", [-1, 1.5, 2**32])
def test_max_steps_the_core_cannot_take_go_step_by_step(bad: Any) -> None:
    (native, _), (steps, _) = prepared("in t1"), prepared("in t1")
    try:
        a = outcome(lambda: run_sync(native, connect_steps(Protocol.T1, max_steps=bad)))
        b = outcome(lambda: run_sync(step_by_step(steps),
                                     connect_steps(Protocol.T1, max_steps=bad)))
        assert a == b
        if bad == 2**32:  # past what the core takes: the steps themselves
            gen = connect_steps(Protocol.T1, max_steps=bad)
            assert type(next(gen)) is not Loop
            gen.close()
    finally:
        native.close()
        steps.close()


def test_bad_protocols_fail_before_any_ioctl() -> None:
    for bad in (-1, 2**32, "T1"):
        with pytest.raises((ValueError, OverflowError, __import__("struct").error)):
            next(connect_steps(bad))  # type: ignore[arg-type]


def test_a_model_device_runs_the_loops_step_by_step() -> None:
    from scripted_device import ScriptedDevice
    with pytest.raises(errors.NoCardError, match="UNKNOWN"):
        run_sync(ScriptedDevice([99]), connect_steps(Protocol.T1))


@pytest.mark.parametrize("fault", [
    None, (EntryPoint.SET_PROTOCOL, Fault.RETURN, 612), (EntryPoint.POWER_ICC, Fault.LONG_ATR, 40),
    (EntryPoint.GET_CAPABILITIES, Fault.RETURN, 606),
    (EntryPoint.ICC_PRESENCE, Fault.REMOVE_CARD, 0)], ids=str)
@pytest.mark.parametrize("timeout", [None, 5.0])
def test_asyncio_runs_the_loops_in_the_core_with_the_same_answers(fault: Any,
                                                                   timeout: Any) -> None:
    import asyncio

    import scardio.aio as aio
    from test_aio import open_sim

    async def main() -> None:
        r, sim = await open_sim(power_down_timeout=None)
        steps, sim_s = prepared("empty")
        try:
            assert callable(getattr(r.reader.device, "submit_loop", None))
            for s in (sim, sim_s):
                s.insert()
                s.reset_counters()
                if fault is not None:
                    s.fault(*fault)

            async def connect() -> Any:
                card = await r.connect(timeout=timeout)
                return card._card
            a = await _outcome_of(connect())
            deadline = None if timeout is None else time.monotonic() + timeout
            b = outcome(lambda: run_sync(step_by_step(steps), connect_steps(
                Protocol.T0 | Protocol.T1, deadline=deadline), deadline=deadline))
            assert a == b
            assert after(r.reader.device, sim) == after(steps, sim_s)
            if a[0] == "ok":  # and the power-down loop through the same runner
                card = r.card
                assert isinstance(card, aio.AsyncCard)
                await card.disconnect(Disposition.UNPOWER)
                run_sync(step_by_step(steps), power_down_steps())
                assert after(r.reader.device, sim) == after(steps, sim_s)
        finally:
            await r.aclose()
            steps.close()
    asyncio.run(asyncio.wait_for(main(), 30))


async def _outcome_of(coro: Any) -> tuple[Any, ...]:
    try:
        c = await coro
    except Exception as exc:
        return ("error", type(exc), str(exc))
    return ("ok", c.atr_bytes, c.protocol, list(c.connect_actions))
