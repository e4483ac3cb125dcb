"""The Monitor's way from a tracking completion to the user's callback:
how much Python it runs (the latency a Monitor adds to a card event is
that code, run on the harvesting thread after the card moved), and the
waiter it blocks in."""

from __future__ import annotations

import select
import socket
import sys
import threading
from typing import Any

import pytest

from helpers_reader import sim_reader
from scardio import Monitor
from scardio.monitor import ARRIVAL, DEPARTURE
from scardio.waiting import SelectorWaiter

#: Python functions the harvesting thread may call between its wait
#: returning and the user's callback: none, on an arrival as on a
#: departure (no card connected).  The monitor's queue runs the event's
#: herald in the binding, which records the presence, stamps the event
#: made before the request went out and calls the callbacks; the tracker's
#: bookkeeping comes after them.
MAX_CALLS = {ARRIVAL: 0, DEPARTURE: 0}


def _calls_before_each_callback(kinds: list[str]) -> dict[str, dict[str, Any]]:
    """For each event: the Python functions the monitor thread called
    between its last wait and the callback, the function the callback was
    called from, and those called after it until the next wait."""
    seen: dict[str, dict[str, Any]] = {}
    done = threading.Event()
    since_wait: list[str] = []
    last: dict[str, Any] = {}
    waits = {"poll", "select"}  # epoll.poll / selectors' select

    def callback(ev: Any) -> None:
        seen[ev.kind] = last["event"] = {"before": list(since_wait),
                                         "from": sys._getframe(1).f_code.co_name,
                                         "after": []}
        if len(seen) == len(kinds):
            done.set()

    def profile(frame: Any, event: str, arg: Any) -> None:
        # The loop's last step before it waits again (in the queue's native
        # dispatch, which a profiler does not see, or in a waiter).
        if event == "return" and frame.f_code.co_name == "_run_due_timers" or \
                event == "c_return" and getattr(arg, "__name__", "") in waits:
            since_wait.clear()
            last.pop("event", None)
        elif event == "call" and frame.f_code is not callback.__code__:
            if "event" in last:
                last["event"]["after"].append(frame.f_code.co_name)
            else:
                since_wait.append(frame.f_code.co_name)

    with sim_reader() as (reader, sim):
        mon = Monitor([reader], callback=callback, start=False)
        threading.setprofile(profile)
        try:
            mon.start()
        finally:
            threading.setprofile(None)  # only the monitor thread is profiled
        try:
            for kind in kinds:
                sim.insert() if kind == ARRIVAL else sim.remove()
                assert done.wait(5) or kind in seen, f"no {kind}"
        finally:
            mon.close()
    return seen


def test_a_card_event_reaches_the_callback_through_few_python_calls():
    seen = _calls_before_each_callback([ARRIVAL, DEPARTURE])
    assert set(seen) == {ARRIVAL, DEPARTURE}, seen
    for kind, got in seen.items():
        assert len(got["before"]) <= MAX_CALLS[kind], (kind, got)
        # Called by the queue's dispatch in the binding, straight from the
        # monitor's loop; the tracker's bookkeeping (the next request) after.
        assert got["from"] == "_run", (kind, got)
        assert "_completed" in got["after"] and "harvest" not in got["after"], (kind, got)


waiters = [pytest.param(False, id="selectors")]
if hasattr(select, "epoll"):
    waiters.insert(0, pytest.param(True, id="epoll"))


@pytest.mark.skipif(sys.platform == "win32", reason="descriptors are POSIX waitables")
@pytest.mark.parametrize("use_epoll", waiters)
def test_selector_waiter_reports_registered_data_wakes_and_unregisters(use_epoll):
    w = SelectorWaiter(use_epoll=use_epoll)
    a_r, a_w = socket.socketpair()
    b_r, b_w = socket.socketpair()
    try:
        assert w.wait(0.01) == []
        w.register(a_r.fileno(), "a")
        w.register(b_r.fileno(), "b")
        with pytest.raises(KeyError):
            w.register(a_r.fileno(), "again")
        b_w.send(b"x")
        assert w.wait(1.0) == ["b"]
        a_w.send(b"x")
        assert sorted(w.wait(1.0)) == ["a", "b"]  # level-triggered: b not read
        b_r.recv(16)
        a_r.recv(16)
        w.wake()
        w.wake()
        assert w.wait(1.0) == []  # woken, and the wake-ups consumed
        assert w.wait(0.01) == []
        w.unregister(b_r.fileno())
        w.unregister(b_r.fileno())  # again: nothing to do
        b_w.send(b"x")
        assert w.wait(0.01) == []
        w.register(b_r.fileno(), None)  # None is data too
        b_r.recv(16)
        w.unregister(b_r.fileno())
        b_w.send(b"x")
        assert w.wait(0.01) == []
        threading.Timer(0.05, w.wake).start()
        assert w.wait(None) == []  # no timeout: the wake ends it
    finally:
        w.close()
        for s in (a_r, a_w, b_r, b_w):
            s.close()
