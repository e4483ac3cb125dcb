"""asyncio paths: every wait is bounded with asyncio.wait_for / timeouts."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time

import pytest

import scardio.aio as aio
from helpers_reader import SRC, Recorder, next_lun
from scardio import State, errors
from scardio.card import CardDisconnectedError
from scardio.discovery import ReaderDescriptor
from scardio.monitor import ARRIVAL, DEPARTURE
from scardio.sim import SIM_LIBRARY, SimControl

SELECT_AID = "00 A4 04 0C 08 F07363617264696F"


_loop_factory = asyncio.new_event_loop


@pytest.fixture(autouse=True, params=["asyncio", "uvloop"])
def event_loop_kind(request):
    """Every test here runs on the default loop and on uvloop (skipped
    where uvloop is not installed)."""
    global _loop_factory
    if request.param == "uvloop":
        uvloop = pytest.importorskip("uvloop")
        _loop_factory = uvloop.new_event_loop
        if sys.version_info < (3, 11):  # no asyncio.Runner: asyncio.run's policy
            asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    try:
        yield request.param
    finally:
        _loop_factory = asyncio.new_event_loop
        if request.param == "uvloop" and sys.version_info < (3, 11):
            asyncio.set_event_loop_policy(None)


def run(coro, timeout=20.0):
    async def bounded():
        return await asyncio.wait_for(coro, timeout)
    if sys.version_info < (3, 11):
        return asyncio.run(bounded())
    with asyncio.Runner(loop_factory=_loop_factory) as runner:
        return runner.run(bounded())


def sim_desc():
    lun = next_lun()
    return ReaderDescriptor(f"scardio Simulated Reader {lun}", "sim", SIM_LIBRARY,
                            f"sim:{lun}", lun, {"available": True})


async def open_sim(**kw):
    r = await aio.open_reader(sim_desc(), **kw)
    return r, SimControl(r.reader.device)


def test_open_wait_connect_transmit_no_threads():
    async def main():
        threads = threading.active_count()
        async with (await open_sim())[0] as r:
            sim = SimControl(r.reader.device)
            assert r.attributes.vendor_name == "scardio" and r.name.startswith("scardio")
            with pytest.raises(errors.TimeoutError):
                await r.wait_for_card(timeout=0.05)
            loop = asyncio.get_running_loop()
            loop.call_later(0.05, sim.insert)
            t0 = time.monotonic()
            await r.wait_for_card(timeout=5)
            assert time.monotonic() - t0 < 2
            async with await r.connect() as card:
                assert card.protocol_name == "T=1" and card.connected
                assert (await card.transmit(SELECT_AID)).ok
                resp = await card.transmit("00 A4 00 0C 02 0101")
                assert resp.ok
                resp = await card.transmit("00 B0 00 00 08")
                assert resp.data == bytes(range(8))
                assert threading.active_count() == threads  # no thread per call
            assert not card.connected
            with pytest.raises(CardDisconnectedError):
                await card.transmit(SELECT_AID)
            assert await r.state() == State.SPECIFIC
    run(main())


def test_async_connect_no_card_then_the_rows_the_sim_reaches():
    # Every row of the table runs on AsyncReader in
    # tests/test_connect.py::test_table_row_on_a_scripted_device.
    async def main():
        r, sim = await open_sim()
        try:
            with pytest.raises(errors.NoCardError):
                await r.connect()
            sim.insert()
            card = await r.connect()
            assert card.connect_actions[:2] == ["SWALLOWED", "COLD_RESET"]
            await card.disconnect()
            card = await r.connect()
            assert card.connect_actions[:2] == ["SPECIFIC", "ATR+PROTOCOL(0x2)"]
        finally:
            await r.aclose()
    run(main())


def test_async_power_down_timer_fires_and_is_cancelled_by_reconnect():
    async def main():
        r, sim = await open_sim(power_down_timeout=0.2)
        rec = Recorder()
        r.reader.add_listener(rec)
        try:
            sim.insert()
            await (await r.connect()).disconnect()
            assert r.power_down_pending
            card = await r.connect()  # before the timer: reuse
            c = sim.counters()
            assert (c.power_ups, c.resets) == (1, 0)
            assert "power_down_cancelled" in rec.kinds()
            await asyncio.sleep(0.35)
            assert "power_down" not in rec.kinds() and sim.counters().powered
            await card.disconnect()
            await asyncio.sleep(0.35)
            assert "power_down" in rec.kinds() and not sim.counters().powered
        finally:
            await r.aclose()
    run(main())


def test_async_timeout_zero_powers_down_at_disconnect():
    async def main():
        r, sim = await open_sim(power_down_timeout=0)
        rec = Recorder()
        r.reader.add_listener(rec)
        try:
            sim.insert()
            await (await r.connect()).disconnect()
            assert not r.power_down_pending and not sim.counters().powered
            downs = [e for e in rec.events if e.kind == "power_down"]
            assert len(downs) == 1 and downs[0].detail["reason"] == "timer"
            assert downs[0].detail["actions"] == ["SPECIFIC", "POWER_DOWN", "SWALLOWED"]
            with pytest.raises(ValueError, match="power_down_timeout"):
                r.power_down_timeout = -1
        finally:
            await r.aclose()
    run(main())


def test_async_transmit_after_removal():
    async def main():
        r, sim = await open_sim()
        try:
            sim.insert()
            card = await r.connect()
            sim.remove()
            with pytest.raises(errors.NoCardError):
                await card.transmit(SELECT_AID)
            with pytest.raises(CardDisconnectedError):
                await card.transmit(SELECT_AID)
        finally:
            await r.aclose()
    run(main())


def test_async_monitor_iterates_events():
    async def main():
        r, sim = await open_sim()
        try:
            loop = asyncio.get_running_loop()
            async with aio.AsyncMonitor([r]) as mon:
                loop.call_later(0.02, sim.insert)
                loop.call_later(0.06, sim.remove)
                t0 = time.monotonic()
                kinds = []
                async for ev in mon:
                    assert ev.timestamp >= t0
                    kinds.append(ev.kind)
                    if len(kinds) == 2:
                        break
                assert kinds == [ARRIVAL, DEPARTURE]
                assert [e async for e in mon.events(timeout=0.1)] == []
            # the monitor let the tracking slot go
            loop.call_later(0.02, sim.insert)
            await r.wait_for_card(timeout=5)
        finally:
            await r.aclose()
    run(main())


def test_async_wait_while_monitored_follows_the_monitor():
    async def main():
        r, sim = await open_sim()
        try:
            async with aio.AsyncMonitor([r]) as mon:
                asyncio.get_running_loop().call_later(0.02, sim.insert)
                await r.wait_for_card(timeout=5)
                assert (await mon.get(timeout=5)).kind == ARRIVAL
        finally:
            await r.aclose()
    run(main())


def test_cancelling_a_wait_cancels_the_request():
    async def main():
        r, sim = await open_sim()
        try:
            task = asyncio.ensure_future(r.wait_for_card())
            await asyncio.sleep(0.05)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await asyncio.sleep(0.05)
            asyncio.get_running_loop().call_later(0.02, sim.insert)
            await r.wait_for_card(timeout=5)  # slot free again
        finally:
            await r.aclose()
    run(main())


def test_aclose_powers_down_once():
    async def main():
        r, sim = await open_sim()
        rec = Recorder()
        r.reader.add_listener(rec)
        sim.insert()
        await r.connect()
        await r.aclose()
        assert r.reader.closed
        assert rec.kinds().count("power_down") == 1
        await r.aclose()  # idempotent
    run(main())


def test_two_loops_in_turn():
    desc = sim_desc()

    async def once():
        r = await aio.open_reader(desc)
        try:
            sim = SimControl(r.reader.device)
            sim.insert()
            card = await r.connect()
            return (await card.transmit(SELECT_AID)).sw
        finally:
            await r.aclose()
    assert run(once()) == 0x9000
    assert run(once()) == 0x9000


def test_async_reader_exposes_what_the_blocking_one_does():
    async def main():
        r = await aio.open_reader(sim_desc())
        try:
            assert r.device is r.reader.device and r.descriptor is r.reader.descriptor
            sim = SimControl(r.device)  # AttributeError before .device existed
            rec = Recorder()
            r.add_listener(rec)
            sim.insert()
            await r.wait_for_card(timeout=5)
            assert r.card is None and not r.closed
            card = await r.connect()
            assert r.card is card and r.info()["name"] == r.name
            await card.disconnect()
            assert r.card is None and rec.kinds()[:2] == ["connect", "disconnect"]
            r.remove_listener(rec)
        finally:
            await r.aclose()
        assert r.closed
    run(main())


def test_module_docstring_example_runs():
    """The example in scardio.aio's docstring, as doctest runs it, in a child
    process with a bound: it must insert its card and finish at once."""
    code = ("import doctest, sys, scardio.aio\n"
            "r = doctest.testmod(scardio.aio, verbose=False)\n"
            "print(r.attempted, r.failed)\n"
            "sys.exit(1 if r.failed or not r.attempted else 0)\n")
    env = dict(os.environ, PYTHONPATH=SRC)
    env.pop("SCARDIO_SIM", None)
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=20, env=env)
    assert p.returncode == 0, p.stdout + p.stderr
    attempted, failed = map(int, p.stdout.split()[-2:])
    assert attempted >= 4 and failed == 0
    assert time.monotonic() - t0 < 10  # no 30 s wait for a card nobody inserts


def test_async_monitor_resumes_after_a_transient_error_and_restarts_after_gone():
    from scardio import errors
    from scardio.monitor import ERROR
    from scardio.sim import EntryPoint, Fault

    async def main():
        r, sim = await open_sim()
        try:
            async with aio.AsyncMonitor([r]) as mon:
                await asyncio.sleep(0.05)  # waiting for a card
                sim.fault(EntryPoint.ICC_PRESENCE, Fault.RETURN, 612)  # one-off
                sim.insert()  # the next presence check fails
                ev = await mon.get(timeout=5)
                assert ev.kind == ERROR and not isinstance(ev.error, errors.DeviceGoneError)
                kinds = []
                for i in range(2):
                    if i:
                        sim.insert()
                    kinds.append((await mon.get(timeout=5)).kind)
                    sim.remove()
                    kinds.append((await mon.get(timeout=5)).kind)
                assert kinds == [ARRIVAL, DEPARTURE] * 2
                sim.fault(EntryPoint.ICC_PRESENCE, Fault.RETURN, 617)  # gone
                sim.insert()  # the next presence check fails
                ev = await mon.get(timeout=5)
                assert ev.kind == ERROR and isinstance(ev.error, errors.DeviceGoneError)
                assert mon.readers == []
                mon.add(r)  # the card is in
                assert (await mon.get(timeout=5)).kind == ARRIVAL
                assert mon.readers == [r.reader]
        finally:
            await r.aclose()
    run(main())


def test_runs_on_the_loop_of_the_parametrised_kind(event_loop_kind):
    async def main():
        return type(asyncio.get_running_loop()).__module__
    module = run(main())
    assert module.startswith("uvloop") == (event_loop_kind == "uvloop"), module


@pytest.mark.parametrize("closer", ["loop", "thread"])
def test_closing_the_reader_under_an_awaiting_coroutine_raises_closed(closer):
    # Its operation will never be harvested on this loop: the coroutine
    # must get a ClosedError, not wait forever.
    async def main():
        r, sim = await open_sim()
        task = asyncio.ensure_future(r.wait_for_card())
        await asyncio.sleep(0.05)
        assert not task.done()
        if closer == "loop":
            r.reader.close()
        else:
            t = threading.Thread(target=r.reader.close)
            t.start()
        with pytest.raises(errors.ClosedError):
            await asyncio.wait_for(task, 5)
        if closer == "thread":
            t.join(5)
        await r.aclose()  # already closed: a no-op
    run(main())


def test_transmit_deadline_cancels_the_apdu_and_the_reader_goes_on():
    async def main():
        r, sim = await open_sim()
        try:
            sim.insert()
            card = await r.connect()
            assert (await card.transmit(SELECT_AID, timeout=5)).ok
            sim.set_latency(300_000)  # every driver call now takes 0.3 s
            t0 = time.monotonic()
            with pytest.raises(errors.TimeoutError):
                await card.transmit(SELECT_AID, timeout=0.05)
            assert time.monotonic() - t0 < 2.0  # the timer, not the driver, ended it
            sim.set_latency(0)
            assert (await card.transmit(SELECT_AID, timeout=5)).ok
            assert r.completions.pending() == 0  # nothing left watched
        finally:
            await r.aclose()
    run(main())


def test_many_awaited_operations_leave_nothing_behind():
    # Every operation's entries (the link's, the dispatcher's, the
    # binding's weak map) go away with it.
    async def main():
        r, sim = await open_sim()
        try:
            sim.insert()
            card = await r.connect()
            for _ in range(200):
                await r.state()
                await card.transmit(SELECT_AID)
            link = r._link()
            assert r.completions.pending() == 0 and not link._pending
        finally:
            await r.aclose()
    run(main())


SIGINT_CHILD = r"""
import asyncio, sys
import scardio.aio as aio

async def main():
    r = await aio.open_reader("scardio Simulated Reader 0", sim=1)
    try:
        print("waiting", flush=True)
        await r.wait_for_card()  # no card: pends until Ctrl-C
    finally:
        await r.aclose()
        print("closed", r.closed, r.completions.pending(), flush=True)

if sys.argv[1] == "uvloop":
    import uvloop
    factory = uvloop.new_event_loop
else:
    factory = asyncio.new_event_loop
if sys.version_info >= (3, 11):
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(main())
else:
    asyncio.set_event_loop_policy(None if sys.argv[1] != "uvloop" else uvloop.EventLoopPolicy())
    asyncio.run(main())
"""


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_ctrl_c_while_awaiting_cancels_the_request_and_closes(event_loop_kind):
    import signal
    env = dict(os.environ, PYTHONPATH=SRC)
    env.pop("SCARDIO_SIM", None)
    p = subprocess.Popen([sys.executable, "-c", SIGINT_CHILD, event_loop_kind],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert p.stdout is not None
        assert p.stdout.readline().strip() == "waiting"
        time.sleep(0.1)
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=15)
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate()
    assert p.returncode != 0 and "KeyboardInterrupt" in err, err
    assert out.split() == ["closed", "True", "0"], out + err
