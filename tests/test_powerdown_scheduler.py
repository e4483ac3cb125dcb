"""The shared power-down timer thread."""

from __future__ import annotations

import threading
import time

from scardio import powerdown


def _timer_threads():
    return [t for t in threading.enumerate() if t.name == "scardio power-down timer"]


def test_deadlines_fire_in_order_and_cancelled_ones_never():
    fired = []
    done = threading.Event()
    powerdown.schedule(0.06, lambda: (fired.append("late"), done.set()))
    powerdown.schedule(0.02, lambda: fired.append("early"))
    cancelled = powerdown.schedule(0.04, lambda: fired.append("cancelled"))
    cancelled.cancel()
    assert done.wait(2)
    assert fired == ["early", "late"]


def test_an_earlier_deadline_preempts_a_later_wait():
    got = threading.Event()
    t0 = time.monotonic()
    long = powerdown.schedule(30, lambda: None)
    powerdown.schedule(0.02, got.set)
    assert got.wait(2)
    assert time.monotonic() - t0 < 1.0
    long.cancel()


def test_a_failing_callback_does_not_stop_the_timer():
    ok = threading.Event()
    powerdown.schedule(0.01, lambda: 1 / 0)
    powerdown.schedule(0.02, ok.set)
    assert ok.wait(2)


def test_one_thread_for_many_deadlines_and_none_when_idle():
    entries = [powerdown.schedule(0.05 + i / 1000, lambda: None) for i in range(100)]
    assert len(_timer_threads()) == 1
    for e in entries:
        e.cancel()
    deadline = time.monotonic() + 5
    while _timer_threads() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _timer_threads() == []


def test_a_rearmed_timer_fires_once_at_its_last_deadline_and_leaves_nothing_queued():
    fired = []
    done = threading.Event()
    timer = powerdown.Timer(lambda arg: (fired.append(arg), done.set()))
    for i in range(1000):  # a connect / disconnect loop: arm, cancel, arm ...
        timer.arm(0.05, i)
        timer.cancel()
    timer.arm(0.05, "last")
    assert len(powerdown._scheduler._heap) <= 2  # not one entry per arm
    assert done.wait(2)
    time.sleep(0.1)
    assert fired == ["last"]
    assert not timer.active


def test_a_cancelled_timer_does_not_fire_and_can_be_armed_again():
    fired = threading.Event()
    timer = powerdown.Timer(lambda arg: fired.set())
    timer.arm(0.02)
    timer.cancel()
    assert not fired.wait(0.1)
    timer.arm(0.02)
    assert fired.wait(2)


def _wait_until_lingering(timeout: float = 5.0) -> None:
    s = powerdown._scheduler
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with s._lock:
            idle = s._thread is not None and not s._heap
        if idle:
            time.sleep(0.05)  # past a callback still running: waiting on the condition
            return
        time.sleep(0.01)
    raise AssertionError("the timer thread did not go idle")


def test_arming_past_the_linger_does_not_wake_the_idle_thread_and_still_fires_on_time():
    # A connect / disconnect loop arms while the thread lingers with nothing
    # queued: waking it for a deadline seconds away would cost each
    # disconnect a thread wake-up (and the thread, finding the timer
    # cancelled by the next connect, would be woken again and again).
    s = powerdown._scheduler
    powerdown.schedule(0.01, lambda: None)
    _wait_until_lingering()
    wakes = []
    real_notify = s._cv.notify
    s._cv.notify = lambda n=1: (wakes.append(n), real_notify(n))  # type: ignore[method-assign]
    try:
        fired = threading.Event()
        t0 = time.monotonic()
        delay = powerdown._LINGER + 0.2
        timer = powerdown.Timer(lambda arg: fired.set())
        for _ in range(200):
            timer.arm(delay)
            timer.cancel()
        timer.arm(delay)
        assert wakes == []
        assert fired.wait(delay + 5)
        assert time.monotonic() - t0 >= delay
    finally:
        del s._cv.notify
    # an earlier deadline than the linger's end still wakes it at once
    _wait_until_lingering()
    got = threading.Event()
    t0 = time.monotonic()
    powerdown.schedule(0.02, got.set)
    assert got.wait(2)
    assert time.monotonic() - t0 < powerdown._LINGER
