"""One timer thread for every reader's power-down timeout.

A disconnect with LEAVE arms a deadline; a reconnect before it cancels it.
Starting a thread per disconnect (threading.Timer) costs more than the
whole connect sequence on a fast driver, so deadlines share one thread that
sleeps on a condition until the earliest one and exits when none is left.

Each reader owns one re-armable :class:`Timer`, so that a connect /
disconnect loop costs no heap operation and leaves nothing behind: a timer
sits in the thread's heap at most once (under the deadline it had when it
was queued); re-arming it for a later deadline only records the new one,
and the thread queues it again when it reaches the old one.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from typing import Any, Callable, Optional

__all__ = ["Timer", "Deadline", "schedule"]

_LINGER = 0.5  # seconds the idle timer thread waits before it exits


class Timer:
    """A deadline on the shared timer thread that can be armed again and
    again: after ``arm(delay, arg)``, ``callback(arg)`` runs on the
    thread once the delay has passed, unless ``cancel()`` or another
    ``arm()`` came first (a callback that has started already runs on)."""

    __slots__ = ("callback", "arg", "when", "queued", "__weakref__")

    def __init__(self, callback: Callable[[Any], None]) -> None:
        self.callback = callback
        self.arg: Any = None
        #: When the callback is due (time.monotonic()); None: not armed.
        self.when: Optional[float] = None
        #: The (deadline, seq) under which the timer sits in the heap, if it does.
        self.queued: Optional[tuple[float, int]] = None

    def arm(self, delay: float, arg: Any = None) -> "Timer":
        when = _monotonic() + delay
        with _scheduler_lock:
            self.when = when
            self.arg = arg
            queued = self.queued
            # Queued already for no later: the thread re-queues it when it
            # gets to the old deadline, and need not be woken (the usual
            # disconnect, each a little later than the one before).
            if queued is None or queued[0] > when:
                _scheduler.queue(self, when)
        return self

    def cancel(self) -> None:
        # No lock: one store, which the thread reads once per look at the
        # timer (a deallocator at interpreter exit may call this while the
        # frozen timer thread holds the lock).  Its heap entry is dropped
        # when it comes up.
        self.when = None

    @property
    def active(self) -> bool:
        """Whether the timer is armed and has not fired."""
        return self.when is not None


#: What :func:`schedule` returns (a one-shot :class:`Timer`).
Deadline = Timer


class _Scheduler:
    def __init__(self) -> None:
        self._lock = threading.Lock()  # taken directly where nothing waits: cheaper
        self._cv = threading.Condition(self._lock)
        self._heap: list[tuple[float, int, Timer]] = []
        self._seq = itertools.count()
        self._thread: Optional[threading.Thread] = None
        self._wakes_at: Optional[float] = None  # what the thread waits for

    def queue(self, timer: Timer, when: float) -> None:
        """Put `timer` in the heap under `when` (the lock held), starting
        the thread or waking it if it would sleep past `when`."""
        key = (when, next(self._seq))
        timer.queued = key
        heapq.heappush(self._heap, (key[0], key[1], timer))
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, daemon=True,
                                            name="scardio power-down timer")
            self._thread.start()
        elif self._wakes_at is None or when < self._wakes_at:
            # Only when it would sleep past the new deadline: a wake-up
            # per disconnect costs the caller more than the disconnect.
            self._cv.notify()

    def _due(self) -> Optional[Timer]:
        """With the lock held: pop what is due, re-queue what was moved
        later, drop what was cancelled; the timer to fire now, if any, else
        None with the heap's head in the future (or the heap empty)."""
        heap = self._heap
        while heap:
            when, seq, timer = heap[0]
            if timer.queued != (when, seq):
                heapq.heappop(heap)  # superseded by a later push of the same timer
                continue
            due = timer.when  # read once: cancel() may clear it at any time
            if due is None:
                heapq.heappop(heap)
                timer.queued = None
                continue
            now = time.monotonic()
            if when > now:
                return None
            heapq.heappop(heap)
            timer.queued = None
            if due > now:  # re-armed for later meanwhile
                key = (due, next(self._seq))
                timer.queued = key
                heapq.heappush(heap, (key[0], key[1], timer))
                continue
            timer.when = None
            return timer
        return None

    def _run(self) -> None:
        while True:
            with self._cv:
                timer = self._due()
                if timer is None:
                    if not self._heap:
                        # Linger a little: reconnect-heavy code re-arms at once,
                        # and a thread per disconnect is what this avoids.  The
                        # thread looks at the heap when the linger ends, so an
                        # arm() for later than that need not wake it.
                        self._wakes_at = time.monotonic() + _LINGER
                        if self._cv.wait(_LINGER) and self._heap:
                            continue
                        if not self._heap:
                            self._thread = None  # a later arm() starts another
                            return
                        continue
                    self._wakes_at = self._heap[0][0]
                    self._cv.wait(self._wakes_at - time.monotonic())
                    continue
                callback, arg = timer.callback, timer.arg
            try:
                callback(arg)
            except Exception:  # one reader's failure must not stop the others
                pass


_scheduler = _Scheduler()
_scheduler_lock = _scheduler._lock
_monotonic = time.monotonic


def schedule(delay: float, callback: Callable[[], None]) -> Timer:
    """Run callback() on the timer thread after `delay` seconds; returns
    the (one-shot) timer, whose cancel() stops it."""
    return Timer(lambda _arg: callback()).arm(delay)
