"""A model of the Win32 calls scardio.waiting uses, for testing the Windows
code paths of Monitor and aio on any OS.

FakeHandles models manual-reset events and WaitForMultipleObjects as
CPython's ``_winapi`` exposes it: the lowest signalled index wins, an event
stays signalled until reset, more than 62 handles is a ValueError, an unknown
(or closed) handle an OSError.  FakeWindowsDevice is a simulated reader whose
``waitable()`` is such an event, signalled exactly while the real completion
queue has completions or wake-ups waiting (it follows the queue's eventfd),
and whose ``fileno()`` is -1, as on Windows.
"""

from __future__ import annotations

import itertools
import select
import socket
import threading
import time
from typing import Any, Optional, Sequence

from scardio import errors

WAIT_LIMIT = 62  # _winapi.WaitForMultipleObjects refuses 63 handles or more


class FakeHandles:
    """scardio.waiting.HandleApi over threading primitives."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._events: dict[int, bool] = {}
        self._numbers = itertools.count(0x1004, 4)
        self.waits: dict[str, int] = {}  # thread name -> wait_any calls

    # -- the HandleApi ---------------------------------------------------------
    def make_event(self) -> int:
        with self._cond:
            h = next(self._numbers)
            self._events[h] = False
            return h

    def set_event(self, event: int) -> None:
        with self._cond:
            self._check(event)
            self._events[event] = True
            self._cond.notify_all()

    def reset_event(self, event: int) -> None:
        with self._cond:
            self._check(event)
            self._events[event] = False

    def close_event(self, event: int) -> None:
        with self._cond:
            self._check(event)
            del self._events[event]
            self._cond.notify_all()

    def wait_any(self, handles: Sequence[int], timeout: Optional[float]) -> Optional[int]:
        handles = list(handles)
        if len(handles) >= WAIT_LIMIT + 1:
            raise ValueError(f"need at most {WAIT_LIMIT + 1} handles, "
                             f"got a sequence of length {len(handles)}")
        if not handles:
            raise OSError(87, "The parameter is incorrect")
        name = threading.current_thread().name
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            self.waits[name] = self.waits.get(name, 0) + 1
            while True:
                for h in handles:
                    self._check(h)  # closed under a wait: the real call fails too
                for i, h in enumerate(handles):
                    if self._events[h]:
                        return i
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return None
                self._cond.wait(left)

    # -- for the tests -----------------------------------------------------------
    def signalled(self, event: int) -> bool:
        with self._cond:
            self._check(event)
            return self._events[event]

    def open_events(self) -> int:
        with self._cond:
            return len(self._events)

    def _check(self, event: int) -> None:
        if event not in self._events:
            raise OSError(6, "The handle is invalid")


def _readable(fd: int) -> bool:
    return bool(select.select([fd], [], [], 0)[0])


class FakeWindowsDevice:
    """A real simulated Device seen as on Windows: no descriptor, an event
    handle that mirrors its completion queue."""

    def __init__(self, device: Any, api: FakeHandles) -> None:
        self._device = device
        self._api = api
        self._fd = device.fileno()
        self._event = api.make_event()
        self._lock = threading.Lock()  # event updates vs harvests
        self._close_lock = threading.Lock()
        self._closing = False
        self._harvested = threading.Event()
        self._stop_r, self._stop_w = socket.socketpair()
        self._bridge = threading.Thread(target=self._follow, daemon=True,
                                        name="fake-win32 queue")
        self._bridge.start()

    def _follow(self) -> None:
        # Set the event when the queue becomes signalled; reset happens in
        # harvest(), so the event is never set while the queue is empty.
        while True:
            ready = select.select([self._fd, self._stop_r], [], [])[0]
            if self._stop_r in ready:
                return
            with self._lock:
                if not _readable(self._fd):
                    continue
                self._api.set_event(self._event)
                self._harvested.clear()
            self._harvested.wait()

    def _sync(self) -> None:
        if _readable(self._fd):
            self._api.set_event(self._event)
        else:
            self._api.reset_event(self._event)

    def fileno(self) -> int:
        self._check_open()
        return -1

    def waitable(self) -> int:
        self._check_open()
        return self._event

    def harvest(self, timeout: float = 0.0) -> list[Any]:
        with self._lock:
            try:
                return self._device.harvest(timeout)  # type: ignore[no-any-return]
            finally:
                if not self._device.closed:
                    self._sync()
                self._harvested.set()

    def close(self) -> None:
        with self._close_lock:
            if self._closing:
                return
            self._closing = True
        self._stop_w.send(b"x")
        self._harvested.set()
        self._bridge.join(5)
        self._device.close()
        self._api.close_event(self._event)
        self._stop_r.close()
        self._stop_w.close()

    def __enter__(self) -> "FakeWindowsDevice":
        self._check_open()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._device.closed:
            raise errors.ClosedError("device is closed")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._device, name)
