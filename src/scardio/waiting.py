"""Waiting on completion queues' waitables (``Device.waitable()``), per OS.

A waitable is a descriptor on POSIX (eventfd, pipe read end) and an event
HANDLE on Windows; either is signalled exactly while completions or a
``Device.wake()`` wait to be harvested.  This module is the only place that
knows the difference:

- :class:`SelectorWaiter` blocks in ``selectors`` on descriptors, woken by a
  socket pair;
- :class:`HandleWaiter` blocks in ``WaitForMultipleObjects`` on handles plus
  a wake event (at most :data:`MAX_HANDLES` queues per waiter);
- :class:`HandleWatcher` is one thread per queue handle that tells an event
  loop when the handle is signalled, then waits until the loop harvested
  (the event is manual-reset: waiting again at once would spin).

The handle classes reach Windows only through a :class:`HandleApi`, so they
are tested anywhere with a model of it.  :func:`new_waiter` picks the
waiter of this OS; :func:`handle_api` is None where waitables are
descriptors.
"""

from __future__ import annotations

import importlib
import select
import selectors
import socket
import sys
import threading
from typing import Any, Callable, Optional, Protocol, Sequence, Union

from . import errors

__all__ = ["Waiter", "SelectorWaiter", "HandleWaiter", "HandleWatcher", "HandleApi",
           "Win32Handles", "TooManyWaitablesError", "MAX_HANDLES", "MAX_WAIT_HANDLES",
           "handle_api", "new_waiter"]

#: Handles one ``_winapi.WaitForMultipleObjects`` call takes: Windows'
#: MAXIMUM_WAIT_OBJECTS is 64, and CPython refuses 63 or more (it keeps
#: room for its Ctrl+C event).
MAX_WAIT_HANDLES = 62

#: Queue handles one :class:`HandleWaiter` waits on: one wait's worth,
#: less the waiter's own wake event.
MAX_HANDLES = MAX_WAIT_HANDLES - 1


class TooManyWaitablesError(errors.ScardioError, ValueError):
    """A :class:`HandleWaiter` already waits on :data:`MAX_HANDLES` queues."""


class HandleApi(Protocol):
    """The Win32 calls the handle waiters need (events are manual-reset)."""

    def wait_any(self, handles: Sequence[int], timeout: Optional[float]) -> Optional[int]:
        """Index of the first signalled handle (the lowest, as
        WaitForMultipleObjects), or None after `timeout` seconds (None:
        forever).  At most :data:`MAX_WAIT_HANDLES` handles."""

    def make_event(self) -> int:
        """A new unsignalled manual-reset event."""

    def set_event(self, event: int) -> None:
        """Signal `event` (SetEvent)."""

    def reset_event(self, event: int) -> None:
        """Unsignal `event` (ResetEvent)."""

    def close_event(self, event: int) -> None:
        """Close `event` (CloseHandle)."""


class Win32Handles:
    """:class:`HandleApi` over the stdlib's ``_winapi`` and ``_overlapped``
    (those asyncio's Windows loop uses; the wait releases the GIL)."""

    def __init__(self) -> None:
        self._winapi: Any = importlib.import_module("_winapi")
        self._overlapped: Any = importlib.import_module("_overlapped")

    def wait_any(self, handles: Sequence[int], timeout: Optional[float]) -> Optional[int]:
        ms = self._winapi.INFINITE if timeout is None else max(0, int(timeout * 1000 + 0.999))
        rc = int(self._winapi.WaitForMultipleObjects(list(handles), False, ms))
        if rc == self._winapi.WAIT_TIMEOUT:
            return None
        index = rc - int(self._winapi.WAIT_OBJECT_0)
        if not 0 <= index < len(handles):  # WAIT_ABANDONED_0 + i: not an event
            raise OSError(f"WaitForMultipleObjects returned {rc:#x}")
        return index

    def make_event(self) -> int:
        return int(self._overlapped.CreateEvent(None, True, False, None))

    def set_event(self, event: int) -> None:
        self._overlapped.SetEvent(event)

    def reset_event(self, event: int) -> None:
        self._overlapped.ResetEvent(event)

    def close_event(self, event: int) -> None:
        self._winapi.CloseHandle(event)


_api: Optional[HandleApi] = None


def handle_api() -> Optional[HandleApi]:
    """This OS's :class:`HandleApi`: None where waitables are descriptors."""
    global _api
    if sys.platform != "win32":
        return None
    if _api is None:
        _api = Win32Handles()
    return _api


class Waiter(Protocol):
    """Blocks one thread until waitables are signalled or :meth:`wake` is
    called.  `register`, `unregister` and `wait` belong to the waiting
    thread; `wake` may be called from any thread."""

    def register(self, waitable: int, data: Any) -> None:
        """Wait on `waitable` too; :meth:`wait` answers `data` for it."""

    def unregister(self, waitable: int) -> None:
        """Stop waiting on `waitable` (before its device closes)."""

    def wait(self, timeout: Optional[float] = None) -> list[Any]:
        """The `data` of the signalled waitables; [] when woken or timed out."""

    def wake(self) -> None:
        """Make the current or next :meth:`wait` return (thread-safe)."""

    def close(self) -> None:
        """Release the waiter's own descriptors or events."""


class SelectorWaiter:
    """:class:`Waiter` over descriptors (POSIX).

    The wake-up is a socket pair of its own, not one device's
    ``Device.wake()``: a waiter may have no device, and any harvester of a
    device (an asyncio loop too) consumes that device's wake-ups.

    Where the OS has epoll the wait is one ``epoll.poll`` and a dict
    lookup per ready descriptor: the harvesting thread runs this on every
    card event before it can dispatch, and ``selectors``' generic select
    (its timeout rounding, key objects and event masks) is several times
    that much Python.  Elsewhere ``selectors`` serves (*use_epoll*: None
    chooses so, False always takes ``selectors``)."""

    def __init__(self, use_epoll: Optional[bool] = None) -> None:
        if use_epoll is None:
            use_epoll = hasattr(select, "epoll")
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._wake_fd = self._wake_r.fileno()
        self._data: dict[int, Any] = {}  # descriptor -> its data (epoll)
        self._epoll: Any = select.epoll() if use_epoll else None
        self._sel: Optional[selectors.BaseSelector] = None
        if self._epoll is not None:
            self._epoll.register(self._wake_fd, select.EPOLLIN)
        else:
            self._sel = selectors.DefaultSelector()
            self._sel.register(self._wake_r, selectors.EVENT_READ, None)

    def register(self, waitable: int, data: Any) -> None:
        if self._sel is not None:
            self._sel.register(waitable, selectors.EVENT_READ, data)
            return
        if waitable in self._data:
            raise KeyError(f"{waitable!r} is already registered")
        self._epoll.register(waitable, select.EPOLLIN)
        self._data[waitable] = data

    def unregister(self, waitable: int) -> None:
        if self._sel is not None:
            try:
                self._sel.unregister(waitable)
            except (KeyError, ValueError):
                pass
            return
        if waitable not in self._data:
            return
        del self._data[waitable]
        try:
            self._epoll.unregister(waitable)
        except (OSError, ValueError):
            pass  # closed already: the kernel dropped it

    def wait(self, timeout: Optional[float] = None) -> list[Any]:
        if self._sel is not None:
            return self._wait_selector(timeout)
        ready = []
        data = self._data
        for fd, _ in self._epoll.poll(timeout):
            if fd == self._wake_fd:
                self._drain_wake()
            else:
                ready.append(data[fd])
        return ready

    def _wait_selector(self, timeout: Optional[float]) -> list[Any]:
        assert self._sel is not None
        ready = []
        for key, _ in self._sel.select(timeout):
            if key.data is None:
                self._drain_wake()
            else:
                ready.append(key.data)
        return ready

    def _drain_wake(self) -> None:
        try:
            while self._wake_r.recv(512):
                pass
        except BlockingIOError:
            pass

    def wake(self) -> None:
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass  # a full buffer is readable already; a closed one woke for good

    def close(self) -> None:
        if self._sel is not None:
            self._sel.close()
        else:
            self._epoll.close()
        self._wake_r.close()
        self._wake_w.close()


class HandleWaiter:
    """:class:`Waiter` over event handles (Windows): one
    WaitForMultipleObjects on the registered handles and a wake event.
    More than :data:`MAX_HANDLES` raises :class:`TooManyWaitablesError`
    (a wait per thread beyond that would cost a thread per 61 readers and
    a hand-off between them; one monitor per 61 readers does the same)."""

    def __init__(self, api: HandleApi) -> None:
        self._api = api
        self._wake_event = api.make_event()
        self._wake_lock = threading.Lock()  # no wake() on a closed event
        self._closed = False
        self._handles: list[int] = []
        self._data: list[Any] = []

    def register(self, waitable: int, data: Any) -> None:
        if waitable in self._handles:
            raise KeyError(f"{waitable!r} is already registered")
        if len(self._handles) >= MAX_HANDLES:
            raise TooManyWaitablesError(
                f"one waiter waits on at most {MAX_HANDLES} completion queues "
                f"(WaitForMultipleObjects); use another Monitor for more readers")
        self._handles.append(waitable)
        self._data.append(data)

    def unregister(self, waitable: int) -> None:
        if waitable in self._handles:
            i = self._handles.index(waitable)
            del self._handles[i], self._data[i]

    def wait(self, timeout: Optional[float] = None) -> list[Any]:
        handles = [self._wake_event, *self._handles]
        first = self._api.wait_any(handles, timeout)
        if first is None:
            return []
        if first == 0:
            # Reset before the caller looks at what woke it: a wake() after
            # this reset signals again, one before it is seen by the caller.
            self._api.reset_event(self._wake_event)
        ready = [first]
        # The wait names the lowest signalled handle only: collect the
        # others too, so a busy low queue cannot starve the rest.
        while ready[-1] + 1 < len(handles):
            start = ready[-1] + 1
            more = self._api.wait_any(handles[start:], 0)
            if more is None:
                break
            ready.append(start + more)
        return [self._data[i - 1] for i in ready if i > 0]

    def wake(self) -> None:
        with self._wake_lock:
            if not self._closed:
                self._api.set_event(self._wake_event)

    def close(self) -> None:
        with self._wake_lock:
            if not self._closed:
                self._closed = True
                self._api.close_event(self._wake_event)


class HandleWatcher:
    """One thread waiting on one queue handle for an event loop.

    When the handle is signalled it calls `notify(done)`, which schedules
    the loop's harvest and calls `done()` after it (or returns False: stop
    watching); the thread waits for `done` before waiting on the handle
    again, since the manual-reset event stays signalled until the harvest
    and waiting at once would spin.  A thread rather than the proactor
    loop's handle wait: the same code serves every event loop (a selector
    loop has no handle wait)."""

    def __init__(self, api: HandleApi, handle: int,
                 notify: Callable[[Callable[[], None]], bool], name: str = "") -> None:
        self._api = api
        self._handle = handle
        self._notify = notify
        self._stop_event = api.make_event()
        self._lock = threading.Lock()  # stop() vs the thread closing its event
        self._exited = False
        self._harvested = threading.Event()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"scardio-waiter {name}".rstrip())
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stopping:
                if self._api.wait_any([self._stop_event, self._handle], None) != 1:
                    return
                self._harvested.clear()
                if self._stopping or not self._notify(self._harvested.set):
                    return
                self._harvested.wait()
        finally:
            with self._lock:
                self._exited = True
                self._api.close_event(self._stop_event)

    def stop(self, timeout: float = 2.0) -> None:
        """Stop waiting (before the handle's device closes) and join the
        thread (unless called on it).  Idempotent."""
        with self._lock:
            self._stopping = True
            self._harvested.set()
            if not self._exited:
                self._api.set_event(self._stop_event)
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()


def new_waiter() -> Union[SelectorWaiter, HandleWaiter]:
    """The :class:`Waiter` of this OS."""
    api = handle_api()
    return SelectorWaiter() if api is None else HandleWaiter(api)
