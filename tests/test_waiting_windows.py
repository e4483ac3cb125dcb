"""The Windows code paths of scardio.waiting, Monitor and aio, run here on a
model of the Win32 calls (tests/fake_win32.py): the real Monitor and aio
code, fake devices whose waitable() is a manual-reset event signalled
exactly while completions wait.  What the model cannot show (the real
_winapi / _overlapped calls, a real queue event) needs Windows; the queue
event itself is tested in C under Wine."""

from __future__ import annotations

import ast
import asyncio
import contextlib
import os
import re
import subprocess
import sys
import threading
import time
from typing import Any, Iterator

import pytest

from fake_win32 import WAIT_LIMIT, FakeHandles, FakeWindowsDevice
from helpers_reader import Recorder, next_lun
from scardio import IOCTL, Monitor, aio, errors, waiting
from scardio.discovery import ReaderDescriptor
from scardio.monitor import ARRIVAL, DEPARTURE
from scardio.reader import Reader
from scardio.sim import SIM_LIBRARY, SimControl, open_device

SRC = os.path.dirname(os.path.abspath(waiting.__file__))
SELECT_AID = "00 A4 04 00 08 F07363617264696F"


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHandles]:
    fake = FakeHandles()
    monkeypatch.setattr(waiting, "handle_api", lambda: fake)
    yield fake


@contextlib.contextmanager
def win_reader(api: FakeHandles) -> Iterator[tuple[Reader, SimControl]]:
    lun = next_lun()
    dev = FakeWindowsDevice(open_device(lun), api)
    desc = ReaderDescriptor(f"scardio Simulated Reader {lun}", "sim", SIM_LIBRARY,
                            f"sim:{lun}", lun, {"available": True})
    reader = Reader(dev, desc, power_down_timeout=5.0)
    try:
        yield reader, SimControl(dev)
    finally:
        reader.close()


def threads_named(prefix: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(prefix)]


# -- the model itself ---------------------------------------------------------

def test_model_events_are_manual_reset_and_the_lowest_index_wins():
    api = FakeHandles()
    a, b, c = api.make_event(), api.make_event(), api.make_event()
    assert api.wait_any([a, b, c], 0.01) is None
    api.set_event(c)
    api.set_event(b)
    assert api.wait_any([a, b, c], 0) == 1
    assert api.wait_any([a, b, c], 0) == 1, "a manual-reset event stays signalled"
    api.reset_event(b)
    assert api.wait_any([a, b, c], None) == 2
    with pytest.raises(ValueError):
        api.wait_any([a] * (WAIT_LIMIT + 1), 0)
    assert api.wait_any([a] * (WAIT_LIMIT - 1) + [c], 0) == WAIT_LIMIT - 1
    api.close_event(a)
    with pytest.raises(OSError):
        api.wait_any([a, c], 0)


def test_model_device_handle_is_signalled_exactly_while_completions_wait(api):
    with win_reader(api) as (reader, sim):
        dev = reader.device
        h = dev.waitable()
        assert dev.fileno() == -1
        op = dev.submit(IOCTL.IS_PRESENT)
        time.sleep(0.05)
        assert not api.signalled(h)
        sim.insert()
        assert api.wait_any([h], 5) == 0
        assert dev.harvest() == [op]
        assert not api.signalled(h)
        dev.wake()
        assert api.wait_any([h], 5) == 0
        assert dev.harvest() == []
        assert not api.signalled(h)


# -- HandleWaiter ---------------------------------------------------------------

def test_handle_waiter_reports_every_signalled_handle_and_wakes():
    api = FakeHandles()
    w = waiting.HandleWaiter(api)
    a, b, c = api.make_event(), api.make_event(), api.make_event()
    for h, name in ((a, "a"), (b, "b"), (c, "c")):
        w.register(h, name)
    assert w.wait(0.01) == []
    api.set_event(a)
    api.set_event(c)
    assert w.wait(0) == ["a", "c"], "the lowest signalled handle must not hide the rest"
    api.reset_event(a)
    api.reset_event(c)
    threading.Timer(0.05, w.wake).start()
    t0 = time.monotonic()
    assert w.wait(5) == []
    assert time.monotonic() - t0 < 4
    assert w.wait(0.01) == [], "the wake is consumed by the wait it ended"
    w.unregister(b)
    api.set_event(b)
    assert w.wait(0.01) == []
    w.close()
    w.wake()  # after close: a no-op, not a call on a closed handle
    assert api.open_events() == 3


def test_handle_waiter_refuses_more_queues_than_one_wait_takes():
    api = FakeHandles()
    w = waiting.HandleWaiter(api)
    handles = [api.make_event() for _ in range(waiting.MAX_HANDLES)]
    for i, h in enumerate(handles):
        w.register(h, i)
    api.set_event(handles[-1])
    assert w.wait(0) == [waiting.MAX_HANDLES - 1]  # the fullest wait _winapi takes
    with pytest.raises(waiting.TooManyWaitablesError, match="at most 61"):
        w.register(api.make_event(), "one too many")
    assert waiting.MAX_HANDLES + 1 == WAIT_LIMIT


# -- Monitor on handles ------------------------------------------------------------

def test_monitor_on_handles_one_thread_events_in_order(api):
    rec = Recorder()
    with win_reader(api) as (r1, s1), win_reader(api) as (r2, s2):
        before = {t.ident for t in threading.enumerate()}
        with Monitor([r1, r2], rec, queue_events=True) as mon:
            started = [t for t in threading.enumerate() if t.ident not in before]
            assert [t.name for t in started] == ["scardio-monitor"]
            s1.insert()
            assert mon.get(timeout=5).kind == ARRIVAL
            s2.insert()
            s1.remove()
            evs = [mon.get(timeout=5), mon.get(timeout=5)]
            assert sorted((e.reader is r1, e.kind) for e in evs) == \
                [(False, ARRIVAL), (True, DEPARTURE)]
            for _ in range(10):
                s2.remove()
                s2.insert()
            kinds = [e.kind for e in mon.events(timeout=5, count=20)]
            assert kinds == [DEPARTURE, ARRIVAL] * 10
            mon.remove(r1)
            assert mon.readers == [r2]
            s1.insert()  # no longer tracked
            with pytest.raises(errors.TimeoutError):
                mon.get(timeout=0.1)
            waits = api.waits["scardio-monitor"]
            assert waits < 200, f"{waits} waits for 24 events: the monitor spins"
        assert threads_named("scardio-monitor") == []
    assert api.open_events() == 0, "the monitor's wake event was not closed"


def test_monitor_on_handles_refuses_a_reader_past_the_limit(api, monkeypatch):
    monkeypatch.setattr(waiting, "MAX_HANDLES", 1)
    with win_reader(api) as (r1, s1), win_reader(api) as (r2, _):
        with Monitor([r1]) as mon:
            with pytest.raises(waiting.TooManyWaitablesError):
                mon.add(r2)
            assert mon.readers == [r1]
            s1.insert()
            assert mon.get(timeout=5).kind == ARRIVAL
            assert r2.session.tracked_by == 0, "the refused reader is not tracked"


def test_monitor_refusing_a_reader_at_start_leaves_no_thread(api, monkeypatch):
    monkeypatch.setattr(waiting, "MAX_HANDLES", 1)
    with win_reader(api) as (r1, _), win_reader(api) as (r2, _):
        with pytest.raises(waiting.TooManyWaitablesError):
            Monitor([r1, r2])
        deadline = time.monotonic() + 5
        while threads_named("scardio-monitor") and time.monotonic() < deadline:
            time.sleep(0.01)
        assert threads_named("scardio-monitor") == []
        assert r1.session.tracked_by == 0 and r2.session.tracked_by == 0


def test_closing_a_monitored_reader_on_handles(api):
    with win_reader(api) as (reader, sim):
        with Monitor([reader]) as mon:
            sim.insert()
            assert mon.get(timeout=5).kind == ARRIVAL
            reader.close()
            assert mon.readers == []
    assert api.open_events() == 0


# -- aio on handles ---------------------------------------------------------------

def test_aio_on_handles_one_waiter_thread_per_reader_never_one_per_call(api):
    async def main() -> None:
        with win_reader(api) as (reader, sim):
            r = aio.AsyncReader(reader)
            base = threading.active_count()
            assert await r.state() is not None
            waiters = threads_named("scardio-waiter")
            assert len(waiters) == 1
            asyncio.get_running_loop().call_later(0.05, sim.insert)
            await r.wait_for_card(timeout=5)
            async with await r.connect() as card:
                for _ in range(20):
                    assert (await card.transmit(SELECT_AID)).ok
            assert threading.active_count() == base + 1
            assert threads_named("scardio-waiter") == waiters
            assert not threads_named("asyncio_"), "an executor thread was started"
            waits = api.waits[waiters[0].name]
            assert waits < 100, f"{waits} waits for ~30 completions: the waiter spins"
            await r.aclose()
            assert not waiters[0].is_alive()
        assert api.open_events() == 0, "the waiter's stop event was not closed"
    asyncio.run(main())


def test_aio_on_handles_monitor_and_wait_share_the_waiter(api):
    async def main() -> None:
        with win_reader(api) as (reader, sim):
            r = aio.AsyncReader(reader)
            loop = asyncio.get_running_loop()
            async with aio.AsyncMonitor([r]) as mon:
                loop.call_later(0.02, sim.insert)
                await r.wait_for_card(timeout=5)
                assert (await mon.get(timeout=5)).kind == ARRIVAL
                loop.call_later(0.02, sim.remove)
                assert (await mon.get(timeout=5)).kind == DEPARTURE
                assert len(threads_named("scardio-waiter")) == 1
            task = asyncio.ensure_future(r.wait_for_card())
            await asyncio.sleep(0.05)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await asyncio.sleep(0.05)  # as in test_aio: the driver lets the request go
            loop.call_later(0.02, sim.insert)
            await r.wait_for_card(timeout=5)  # the cancelled request let the slot go
            await r.aclose()
        assert threads_named("scardio-waiter") == []
    asyncio.run(main())


def test_aio_on_handles_under_a_selector_loop(api):
    async def main() -> None:
        with win_reader(api) as (reader, sim):
            r = aio.AsyncReader(reader)
            asyncio.get_running_loop().call_later(0.02, sim.insert)
            await r.wait_for_card(timeout=5)
            await r.aclose()
    loop = asyncio.SelectorEventLoop()
    try:
        loop.run_until_complete(main())
    finally:
        loop.close()


def test_handle_watcher_stops_when_the_loop_is_gone():
    api = FakeHandles()
    h = api.make_event()
    calls: list[Any] = []
    watcher = waiting.HandleWatcher(api, h, lambda done: calls.append(done) or False)
    api.set_event(h)
    deadline = time.monotonic() + 5
    while watcher.alive and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not watcher.alive and len(calls) == 1, "a refused notify must end the thread"
    watcher.stop()
    assert api.open_events() == 1  # only the queue's own event is left


# -- the existing suites, on the model ----------------------------------------------

#: The scenario suites of the threaded and asyncio runtimes, run again with
#: every simulated device on the model (tests/conftest.py, WIN32_MODEL).
MODEL_SUITES = ["test_monitor.py", "test_aio.py", "test_reader_styles.py",
                "test_surfaces.py", "test_reliability_events.py",
                "test_reliability_shutdown.py", "test_reliability_concurrency.py"]

#: Asserts that aio starts no thread at all, true only where waitables
#: are descriptors; the one waiter thread is asserted above instead.
MODEL_DESELECTED = ["test_aio.py::test_open_wait_connect_transmit_no_threads"]


def test_runtime_suites_pass_on_the_model():
    tests = os.path.dirname(os.path.abspath(__file__))
    env = dict(os.environ, SCARDIO_TEST_WIN32_MODEL="1")
    args = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x",
            *(os.path.join(tests, m) for m in MODEL_SUITES),
            *(f"--deselect=tests/{d}" for d in MODEL_DESELECTED)]
    proc = subprocess.run(args, cwd=os.path.dirname(tests), env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    passed = re.search(r"(\d+) passed", proc.stdout.splitlines()[-1])
    assert passed and int(passed.group(1)) >= 100, proc.stdout[-2000:]  # really ran them


# -- the sources -------------------------------------------------------------------

@pytest.mark.parametrize("module", ["monitor.py", "aio.py"])
def test_runtimes_name_no_platform_and_start_no_thread_per_call(module):
    # The code, not the prose: imports, attributes and string constants.
    with open(os.path.join(SRC, module), encoding="utf-8") as f:
        tree = ast.parse(f.read())
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    attributes = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    strings = {n.value for n in ast.walk(tree)
               if isinstance(n, ast.Constant) and isinstance(n.value, str)}
    assert not imported & {"selectors", "select", "socket", "sys", "os", "platform",
                           "_winapi", "_overlapped", "msvcrt"}
    assert not attributes & {"set_blocking", "run_in_executor", "fileno", "platform",
                             "WaitForMultipleObjects"}
    assert not strings & {"win32", "nt", "darwin", "linux"}
    assert "waitable" in attributes  # they do wait on the queue's waitable
