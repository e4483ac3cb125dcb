"""The per-call asyncio paths await their one IOCTL without a sequence
generator: AsyncCard.transmit's common call (bytes, the card's defaults, no
timeout), AsyncReader.state() and get_attribute().  These tests pin that
they answer exactly what the full paths (the sequences through run_async,
the blocking reader) answer: the same responses, the same typed errors and
messages, the same card state, the lock released, and cancellation as
before (benchmarks/test_bench_aio_overhead.py measures the speed)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, AsyncIterator, Awaitable, Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import scardio.aio as aio
from scardio import errors
from scardio.apdu import APDULengthError
from scardio.constants import Attr, Protocol, State
from scardio.sim import EntryPoint, Fault

from test_aio import open_sim
from test_transmit_fast_path import command_apdus

ECHO = b"\x80\xEE\x00\x00\x01"


def run(make: Callable[[], Awaitable[Any]], loop_kind: str = "asyncio") -> Any:
    """Run `make()` on a fresh loop of `loop_kind`, bounded."""
    factory = asyncio.new_event_loop
    if loop_kind == "uvloop":
        factory = pytest.importorskip("uvloop").new_event_loop
    loop = factory()
    try:
        return loop.run_until_complete(asyncio.wait_for(make(), 30))
    finally:
        loop.close()


async def outcome_of(coro: Awaitable[Any]) -> tuple[str, Any, Any]:
    try:
        return ("ok", await coro, None)
    except Exception as exc:  # every error: its type and its message
        return ("error", type(exc), str(exc))


def full_path(card: aio.AsyncCard, raw: bytes) -> Awaitable[Any]:
    """The same call through transmit_steps: the options given explicitly,
    as the card's defaults."""
    return card.transmit(raw, auto_get_response=card.auto_get_response,
                         auto_resend=card.auto_resend)


@contextlib.asynccontextmanager
async def sim_card(t0: bool = False) -> AsyncIterator[tuple[aio.AsyncReader, Any,
                                                            aio.AsyncCard]]:
    r, sim = await open_sim()
    try:
        sim.insert(t0=t0)
        card = await r.connect(Protocol.T0 if t0 else Protocol.T0 | Protocol.T1)
        yield r, sim, card
    finally:
        await r.aclose()


def generator_calls(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """The APDUs transmit_steps is asked for from scardio.aio."""
    seen: list[bytes] = []
    real = aio.transmit_steps

    def spy(raw: bytes, *args: Any, **kw: Any) -> Any:
        seen.append(raw)
        return real(raw, *args, **kw)
    monkeypatch.setattr(aio, "transmit_steps", spy)
    return seen


@settings(max_examples=60, deadline=None)
@given(st.lists(command_apdus(), min_size=1, max_size=8), st.booleans())
def test_fast_path_answers_what_the_full_path_answers(apdus: list[bytes], t0: bool) -> None:
    async def main() -> None:
        async with sim_card(t0) as (_, _, fast), sim_card(t0) as (_, _, full):
            for raw in apdus:  # the same history on both cards: the same card state
                a = await outcome_of(fast.transmit(raw))
                b = await outcome_of(full_path(full, raw))
                assert a == b, raw.hex()
                if a[0] == "ok":  # a Response built in place is a whole tuple
                    assert type(a[1]) is type(b[1])
                    assert hash(a[1]) == hash(b[1]) and a[1][:] == b[1][:]
            assert fast.connected and full.connected
    run(main)


@pytest.mark.parametrize("loop_kind", ["asyncio", "uvloop"])
def test_bytes_take_the_fast_path_and_the_rest_the_generator(
        monkeypatch: pytest.MonkeyPatch, loop_kind: str) -> None:
    async def main() -> None:
        seen = generator_calls(monkeypatch)
        async with sim_card() as (r, _, card):
            for raw in (ECHO, b"\x80\xEE\x00\x00", b"\x80\xEE\x00\x00\x02\x01\x02",
                        b"\x80\xEE\x00\x00\xFF" + bytes(255) + b"\x00",
                        b"\x80\xEE\x00\x00\x00\x00\x01"):  # extended: the large buffer
                assert (await card.transmit(raw)).ok
            assert seen == []
            slow: list[Any] = [bytearray(ECHO), ECHO.hex(), list(ECHO)]
            for raw in slow:
                assert (await card.transmit(raw)).ok
            await card.transmit(ECHO, timeout=5)
            await card.transmit(ECHO, auto_get_response=False)
            await card.transmit(ECHO, auto_resend=False)
            assert len(seen) == len(slow) + 3
            assert r.completions.pending() == 0 and not r._link()._pending
    run(main, loop_kind)


def test_fast_path_follow_ups_61xx_and_6cxx_as_the_full_path() -> None:
    async def main() -> None:
        async with sim_card(t0=True) as (_, _, fast), sim_card(t0=True) as (_, _, full):
            case4 = b"\x80\xEE\x00\x00\x03\x01\x02\x03\x00"  # T=0 case 4: 61xx
            a, b = await fast.transmit(case4), await full_path(full, case4)
            assert a == b and a.ok and a.data
            fast.auto_get_response = False
            assert (await fast.transmit(case4)).sw1 == 0x61
            # 6Cxx: READ BINARY past the end of EF 2F01 with too long an Le
            read = b"\x00\xB0\x0F\xF0\x20"
            for card in (fast, full):
                assert (await card.transmit(b"\x00\xA4\x00\x00")).ok  # the MF
                assert (await card.transmit(b"\x00\xA4\x00\x00\x02\x2F\x01")).ok
                assert (await card.transmit(read, auto_resend=False)).sw == 0x6C10
            a, b = await fast.transmit(read), await full_path(full, read)
            assert a == b and a.ok and len(a.data) == 0x10
    run(main)


@pytest.mark.parametrize("kind, value", [(Fault.RETURN, c) for c in range(600, 619)]
                         + [(Fault.REMOVE_CARD, 0), (Fault.OVERLONG_LENGTH, 4)])
def test_fast_path_driver_errors_are_the_full_paths(kind: Fault, value: int) -> None:
    async def one(fast: bool) -> tuple[Any, bool, Any]:
        async with sim_card() as (r, sim, card):
            sim.fault(EntryPoint.TRANSMIT, kind, value)
            result = await outcome_of(card.transmit(ECHO) if fast else full_path(card, ECHO))
            assert not r._lock.locked()
            return result, card.connected, card._card._gone

    async def main() -> None:
        assert await one(True) == await one(False)
    run(main)


def test_fast_path_on_a_gone_card_and_a_bad_length_is_typed_and_releases_the_lock() -> None:
    async def main() -> None:
        async with sim_card() as (r, sim, card):
            with pytest.raises(APDULengthError, match="too short"):
                await card.transmit(b"\x80")
            assert not r._lock.locked()
            sim.fault(EntryPoint.TRANSMIT, Fault.RETURN, 616)
            with pytest.raises(errors.NoCardError):
                await card.transmit(ECHO)
            assert not r._lock.locked()
            with pytest.raises(errors.InvalidStateError, match="card is not connected: the "
                               "card was removed; connect again"):
                await card.transmit(ECHO)
            assert not r._lock.locked()
    run(main)


@pytest.mark.parametrize("loop_kind", ["asyncio", "uvloop"])
def test_cancelling_a_fast_path_transmit_cancels_the_apdu_and_the_reader_goes_on(
        loop_kind: str) -> None:
    async def main() -> None:
        async with sim_card() as (r, sim, card):
            sim.set_latency(300_000)  # every driver call now takes 0.3 s
            task = asyncio.ensure_future(card.transmit(ECHO))
            await asyncio.sleep(0.05)
            assert not task.done()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert not r._lock.locked()
            sim.set_latency(0)
            assert (await card.transmit(ECHO)) == (b"\x00", 0x90, 0x00)
            assert r.completions.pending() == 0 and not r._link()._pending
    run(main, loop_kind)


def test_a_transaction_holds_the_lock_across_fast_path_transmits() -> None:
    async def main() -> None:
        async with sim_card() as (r, _, card):
            async with card.transaction():
                assert r._lock.locked()
                assert (await card.transmit(ECHO)).ok  # the lock is this task's
                assert r._lock.locked()
            assert not r._lock.locked()
    run(main)


@pytest.mark.parametrize("loop_kind", ["asyncio", "uvloop"])
def test_state_and_get_attribute_run_no_sequence(monkeypatch: pytest.MonkeyPatch,
                                                 loop_kind: str) -> None:
    async def main() -> None:
        async with sim_card() as (r, sim, card):
            sequences: list[Any] = []
            real = aio.run_async

            def spy(link: Any, steps: Any, **kw: Any) -> Any:
                sequences.append(steps)
                return real(link, steps, **kw)
            monkeypatch.setattr(aio, "run_async", spy)
            blocking = r.reader
            assert await r.state() is blocking.state() is State.SPECIFIC
            assert await r.is_card_present()
            vendor = int(Attr.VENDOR_NAME)
            assert await r.get_attribute(vendor) == blocking.device.ioctl(
                aio.IOCTL.GET_ATTRIBUTE, aio.U32.pack(vendor), 256)
            assert (await card.transmit(ECHO)).ok
            assert sequences == []
            sim.remove()
            assert await r.state() is blocking.state() is State.ABSENT
            assert r.completions.pending() == 0 and not r._link()._pending
    run(main, loop_kind)


def test_get_attribute_errors_are_the_devices() -> None:
    async def main() -> None:
        async with sim_card() as (r, _, _):
            vendor = int(Attr.VENDOR_NAME)  # a name longer than one byte
            with pytest.raises(errors.ScardioError) as info:
                r.reader.device.ioctl(aio.IOCTL.GET_ATTRIBUTE, aio.U32.pack(vendor), 1)
            with pytest.raises(type(info.value)) as ainfo:
                await r.get_attribute(vendor, 1)
            assert str(ainfo.value) == str(info.value)
            r.reader.close()
            with pytest.raises(errors.ClosedError):
                await r.state()
            with pytest.raises(errors.ClosedError):
                await r.get_attribute(int(Attr.VENDOR_NAME))
    run(main)


@pytest.mark.parametrize("loop_kind", ["asyncio", "uvloop"])
def test_cancelling_state_cancels_the_request(loop_kind: str) -> None:
    async def main() -> None:
        async with sim_card() as (r, sim, _):
            sim.set_latency(300_000)
            task = asyncio.ensure_future(r.state())
            await asyncio.sleep(0.05)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            sim.set_latency(0)
            assert await r.state() is State.SPECIFIC
            assert r.completions.pending() == 0 and not r._link()._pending
    run(main, loop_kind)


@pytest.mark.parametrize("monitor", ["AsyncMonitor", "Monitor"])
@pytest.mark.parametrize("loop_kind", ["asyncio", "uvloop"])
def test_the_loops_harvest_delivers_a_monitors_events_among_awaited_operations(
        loop_kind: str, monitor: str) -> None:
    """The loop's harvest settles its own futures directly and hands every
    other completion (a monitor's tracking requests: an AsyncMonitor's on
    this loop, or a threaded Monitor's, whose thread harvests the same
    queue) to the dispatcher: none is lost or delivered twice."""
    from scardio.monitor import ARRIVAL, DEPARTURE, Monitor

    async def main() -> None:
        r, sim = await open_sim()
        try:
            with contextlib.ExitStack() as stack:
                if monitor == "Monitor":
                    threaded = stack.enter_context(Monitor([r.reader]))

                    async def get() -> Any:
                        return await asyncio.get_running_loop().run_in_executor(
                            None, threaded.get, 5)
                else:
                    amon = aio.AsyncMonitor([r]).start()
                    stack.callback(amon.close)

                    async def get() -> Any:
                        return await amon.get(timeout=5)
                kinds = []
                for i in range(6):
                    (sim.insert if i % 2 == 0 else sim.remove)()
                    for _ in range(50):  # operations awaited while the event comes
                        await r.state()
                    kinds.append((await get()).kind)
                assert kinds == [ARRIVAL, DEPARTURE] * 3
                assert not r._link()._pending
        finally:
            await r.aclose()
    run(main, loop_kind)
