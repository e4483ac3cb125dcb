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


def run(coro, timeout=20.0):
    async def bounded():
        return await asyncio.wait_for(coro, timeout)
    return asyncio.run(bounded())


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
