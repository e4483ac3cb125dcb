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
#: returning and the user's callback (the tracker's completion,
#: note_presence, the event, the event's __init__: the monitor's queue
#: calls the tracker itself), plus drop_card on a departure.
MAX_CALLS = {ARRIVAL: 4, DEPARTURE: 5}


def _calls_before_each_callback(kinds: list[str]) -> dict[str, list[str]]:
    """For each event, the Python functions the monitor thread called
    between its last wait and the callback."""
    seen: dict[str, list[str]] = {}
    done = threading.Event()
    since_wait: list[str] = []
    state = {"waiting": False}
    waits = {"poll", "select"}  # epoll.poll / selectors' select
    from_native: list[bool] = []

    def callback(ev: Any) -> None:
        seen[ev.kind] = list(since_wait)
        if len(seen) == len(kinds):
            done.set()

    def profile(frame: Any, event: str, arg: Any) -> None:
        if event == "call" and frame.f_code.co_name == "_completed" \
                and frame.f_back is not None and frame.f_back.f_code.co_name == "_run":
            # The monitor's own queue waits in (and calls the tracker from)
            # its native dispatch, which makes no frame: the wait ended here.
            from_native.append(True)
            state["waiting"] = False
            since_wait.clear()
        if event == "c_call" and getattr(arg, "__name__", "") in waits:
            state["waiting"] = True
        elif event == "c_return" and getattr(arg, "__name__", "") in waits:
            state["waiting"] = False
            since_wait.clear()
        elif event == "call" and not state["waiting"]:
            if frame.f_code is callback.__code__:
                return
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
    assert from_native, "the tracker was not called from the monitor's queue"
    return seen


def test_a_card_event_reaches_the_callback_through_few_python_calls():
    seen = _calls_before_each_callback([ARRIVAL, DEPARTURE])
    for kind, calls in seen.items():
        assert len(calls) <= MAX_CALLS[kind], (kind, calls)
        assert "_completed" in calls and "_event" in calls, calls  # the real path
        assert "harvest" not in calls, calls  # no Python harvest on the way


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
