"""One timer thread for every reader's power-down timeout.

A disconnect with LEAVE arms a deadline; a reconnect before it cancels it.
Starting a thread per disconnect (threading.Timer) costs more than the
whole connect sequence on a fast driver, so deadlines share one thread that
sleeps on a condition until the earliest one and exits when none is left.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from typing import Callable, Optional

__all__ = ["Deadline", "schedule"]

_LINGER = 0.5  # seconds the idle timer thread waits before it exits


class Deadline:
    """A scheduled callback; cancel() makes sure it does not run (unless it
    has started already)."""

    __slots__ = ("when", "seq", "callback", "active")

    def __init__(self, when: float, seq: int, callback: Callable[[], None]) -> None:
        self.when = when
        self.seq = seq
        self.callback = callback
        self.active = True

    def __lt__(self, other: "Deadline") -> bool:
        return (self.when, self.seq) < (other.when, other.seq)

    def cancel(self) -> None:
        self.active = False  # dropped lazily when it reaches the top of the heap


class _Scheduler:
    def __init__(self) -> None:
        self._cv = threading.Condition()
        self._heap: list[Deadline] = []
        self._seq = itertools.count()
        self._thread: Optional[threading.Thread] = None
        self._wakes_at: Optional[float] = None  # what the thread waits for

    def schedule(self, delay: float, callback: Callable[[], None]) -> Deadline:
        with self._cv:
            entry = Deadline(time.monotonic() + delay, next(self._seq), callback)
            heapq.heappush(self._heap, entry)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, daemon=True,
                                                name="scardio power-down timer")
                self._thread.start()
            elif self._wakes_at is None or entry.when < self._wakes_at:
                self._cv.notify()  # lingering, or waiting for a later deadline
            return entry

    def _run(self) -> None:
        while True:
            with self._cv:
                while self._heap and not self._heap[0].active:
                    heapq.heappop(self._heap)
                if not self._heap:
                    self._wakes_at = None
                    # Linger a little: reconnect-heavy code re-arms at once,
                    # and a thread per disconnect is what this avoids.
                    if self._cv.wait(_LINGER) and self._heap:
                        continue
                    if not self._heap:
                        self._thread = None  # a later schedule() starts another
                        return
                    continue
                wait = self._heap[0].when - time.monotonic()
                if wait > 0:
                    self._wakes_at = self._heap[0].when
                    self._cv.wait(wait)
                    continue
                entry = heapq.heappop(self._heap)
            if entry.active:
                try:
                    entry.callback()
                except Exception:  # one reader's failure must not stop the others
                    pass


_scheduler = _Scheduler()


def schedule(delay: float, callback: Callable[[], None]) -> Deadline:
    """Run callback() on the timer thread after `delay` seconds."""
    return _scheduler.schedule(delay, callback)
