"""Card-state monitor: arrivals and departures over one or many readers.

Each reader keeps exactly one overlapped tracking request pending
(IS_PRESENT while empty, IS_ABSENT while a card is in: the spec's start-up
step 5); when it completes, the event is recorded with a time.monotonic()
timestamp and the opposite request is submitted at once.  Nothing sleeps or
polls in Python: the driver (or the core's polling for drivers without a
polling thread) completes the request.

Threading model: one harvesting thread per :class:`Monitor`, whatever the
number of readers and the OS.  When every reader it tracks was opened by
scardio through a backend that can wait for many readers in one call (the
PC/SC resource manager's: one ``SCardGetStatusChange`` over all of them),
the monitor thread waits in the driver itself
(:class:`scardio._core.TrackingSet`) and runs the callbacks of the
requests that call completed: no lane thread per reader, no thread hop
between the resource manager's answer and the callback.  Otherwise the
tracking requests of readers opened by scardio complete into a completion
queue of the monitor's own (:class:`scardio._core.CompletionQueue`): the
lane thread that completes one wakes the monitor thread directly, and the
queue calls the tracker with no Python in between.  The monitor moves its
readers' requests between the two as readers come and go (no event is
lost: each backend keeps what the last completed request saw).  Readers
whose device is another object (a stand-in) are
waited on through their completion waitable (``Device.waitable()``) and
the :class:`scardio.waiting.Waiter` of the OS (``selectors`` on
descriptors, ``WaitForMultipleObjects`` on handles: at most
:data:`scardio.waiting.MAX_HANDLES` such readers per monitor there); while
the monitor has any, it waits there, with its own queue's waitable among
them.  A thread per reader blocked
in ``op.wait`` would work too, but costs N threads and N wake-ups for N
readers, and closing a reader would need to cancel and join its own thread;
with one waiting thread adding or removing a reader is one registration.

Callbacks run on the harvesting thread, in event order; keep them short.

Reader hotplug: given a *reader_list* (:class:`ReaderList`, e.g.
:class:`scardio.pcsc.ReaderListWatch`), a monitor watches every reader of
that list: the ones listed at start are opened and tracked at once, a
reader that appears is reported as a ``reader-added`` event, opened and
tracked (its card, if any, then gives an arrival), and a reader that goes
away is reported once as ``reader-removed``: its pending tracking request
ends with :class:`~scardio.errors.DeviceGoneError` inside the monitor, which
reports the removal instead of an ``error`` event, and no departure is
invented for a card that was in it.  One more thread per such monitor waits
for the list to change.  Readers opened directly have no such list: a
monitor of them tracks the readers it was given (found at start-up) only.
"""

from __future__ import annotations

import collections
import functools
import heapq
import itertools
import logging
import math
import queue
import threading
import time
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Callable, Iterable, Iterator, Optional, Protocol, Union

from . import _core, errors, waiting
from .constants import IOCTL
from .reader import Reader
from .session import WAIT_SLICE

__all__ = ["CardEvent", "Monitor", "Tracker", "Cancellable", "Schedule", "ReaderList",
           "ARRIVAL", "DEPARTURE", "ERROR", "READER_ADDED", "READER_REMOVED"]

log = logging.getLogger(__name__)

ARRIVAL = "arrival"
DEPARTURE = "departure"
ERROR = "error"
#: A reader appeared in the monitor's reader list (and is now tracked).
READER_ADDED = "reader-added"
#: A tracked reader left the monitor's reader list (its tracking ended).
READER_REMOVED = "reader-removed"

# Plain ints for the per-event path (an enum member is a class lookup).
_IS_PRESENT = int(IOCTL.IS_PRESENT)
_IS_ABSENT = int(IOCTL.IS_ABSENT)
_SUCCESS = 0  # an operation's status when it succeeded (SCIO_SUCCESS)
_CANCELLED = 0xC0000120  # ... when it was cancelled (SCIO_CANCELLED)

#: Where a Tracker's requests complete: a completion queue of the
#: harvesting thread's, or a tracking set it waits in itself.
_Harvest = Union[_core.CompletionQueue, _core.TrackingSet]


@dataclass(frozen=True)
class CardEvent:
    """``kind`` is "arrival", "departure" or "error" (``error`` set; a
    transient driver error is retried with a bounded backoff, and only
    :class:`~scardio.errors.DeviceGoneError` ends tracking of the reader,
    which :meth:`Monitor.add` restarts), and with a monitor's reader list
    also "reader-added" (`reader` appeared and is tracked from now on) and
    "reader-removed" (`reader` went away: its tracking ended, and the monitor
    closes it if it opened it).  ``timestamp`` is time.monotonic() when
    the completion was seen; ``seq`` counts events of the monitor."""
    kind: str
    reader: Reader = field(compare=False)
    timestamp: float
    seq: int = 0
    error: Optional[BaseException] = field(default=None, compare=False)

    @property
    def reader_name(self) -> str:
        return self.reader.name

    def as_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"event": self.kind, "reader": self.reader.name,
                             "t": self.timestamp, "seq": self.seq}
        if self.error is not None:
            d["error"] = str(self.error)
        return d


_new_event = object.__new__


class Cancellable(Protocol):
    """What a scheduler hands back for a call it will make later."""

    def cancel(self) -> None: ...


#: ``schedule(delay, fn)``: call ``fn()`` once, `delay` seconds from now.
Schedule = Callable[[float, Callable[[], None]], Cancellable]


def _timer_thread(delay: float, fn: Callable[[], None]) -> Cancellable:
    timer = threading.Timer(delay, fn)
    timer.daemon = True
    timer.start()
    return timer


def _default_schedule() -> Schedule:
    """The running asyncio loop's call_later when there is one (scardio.aio
    makes its trackers on the loop, which harvests their completions), else
    a timer thread per call.  (The Monitor passes its own: asyncio is
    imported only for trackers made without one.)"""
    import asyncio
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return _timer_thread
    return loop.call_later


class Tracker:
    """The IS_PRESENT / IS_ABSENT ping-pong of one reader.  `emit` receives
    (kind, error) and is called on whichever thread harvested the
    completion.  Retries after a transient error are made through
    `schedule` (``schedule(delay, fn)``): the harvesting loop's own timer,
    so that they run, and report, on that thread too.  Without one, a
    Tracker made on a running asyncio loop uses the loop's call_later, and
    any other one a timer thread per retry.  Its requests complete into the
    reader's device queue (harvested through ``reader.completions``), or,
    given a *queue* (:class:`scardio._core.CompletionQueue`, the harvesting
    thread's), or a :class:`scardio._core.TrackingSet`, into that one.
    With a *queue* and a *herald* (``herald(kind)``: the
    :class:`scardio._core.Herald` of the arrival or departure a request
    going out will report), the queue announces the event itself, before
    this tracker's bookkeeping, and `emit` gets only the errors.  Shared by
    the threaded Monitor and scardio.aio."""

    def __init__(self, reader: Reader, emit: Callable[[str, Optional[BaseException]], None],
                 schedule: Optional[Schedule] = None, *,
                 queue: Optional[_Harvest] = None,
                 herald: Optional[Callable[[str], _core.Herald]] = None) -> None:
        self.reader = reader
        self._emit = emit
        self._schedule: Schedule = schedule or _default_schedule()
        self._queue: Optional[_Harvest] = queue
        self._herald = herald
        self._op: Any = None
        self._told: Optional[_core.Herald] = None  # the pending request's herald
        self._lock = threading.Lock()
        self._code: int = IOCTL.IS_PRESENT
        self._retry_delay = self.RETRY_FIRST
        self._retry: Optional[Cancellable] = None
        self.stopped = False

    def start(self) -> None:
        self.reader.session.tracked_by += 1
        self._submit(IOCTL.IS_PRESENT)

    #: Retry delays after a transient driver error: doubling, bounded.
    RETRY_FIRST = 0.05
    RETRY_MAX = 1.0

    def _submit(self, code: int) -> None:
        self._code = code
        failed: Optional[BaseException] = None
        queue = self._queue
        herald = None
        if self._herald is not None and queue is not None:
            # made now, so that the completion has only to stamp it
            herald = self._herald(ARRIVAL if code == _IS_PRESENT else DEPARTURE)
        with self._lock:
            if self.stopped:
                return
            try:
                if queue is not None:
                    # watched at once: its dispatch runs on this thread, later
                    op = queue.submit(self.reader.device, code, self._completed, herald)
                else:
                    op = self.reader.device.submit(code)
            except errors.ScardioError as exc:
                failed = exc
            else:
                self._op = op
                self._told = herald
        if failed is not None:
            self._fail(failed)
            return
        if queue is None:
            self.reader.completions.watch(op, self._completed)

    def _fail(self, exc: BaseException) -> None:
        """Report a driver error.  Only a reader that is gone ends
        tracking; any other error is retried after a bounded backoff."""
        gone = isinstance(exc, errors.DeviceGoneError) or self.reader.closed
        with self._lock:
            if self.stopped:
                return
            if gone:
                self.stopped = True
            delay = self._retry_delay
            self._retry_delay = min(self.RETRY_MAX, delay * 2)
        if gone:
            self.reader.session.tracked_by -= 1
        self._emit(ERROR, exc)  # outside the lock: a callback may stop us
        if gone:
            return
        code = self._code
        retry = self._schedule(delay, lambda: self._submit(code))
        with self._lock:
            if not self.stopped:
                self._retry = retry
                return
        retry.cancel()  # stopped by a callback meanwhile

    def _completed(self, op: Any) -> None:
        # On the harvesting thread between the card moving and the user
        # seeing it: as little as can be before the event goes out (the
        # status, not result()'s output copy and its exception frames; the
        # next request only after the event).
        with self._lock:
            if op is not self._op:
                return
            self._op = None
            told, self._told = self._told, None
        if op.status != _SUCCESS:
            try:
                op.result()
            except errors.CancelledError:
                return  # stop() or close(): not an event
            except errors.ScardioError as exc:
                self._fail(exc)
            return
        if self.stopped:
            return
        self._retry_delay = self.RETRY_FIRST  # the driver answers again
        arrived = op.code == _IS_PRESENT
        session = self.reader.session
        if told is None or not told.ran:
            session.note_presence(arrived)
            self._emit(ARRIVAL if arrived else DEPARTURE, None)
        self._submit(_IS_ABSENT if arrived else _IS_PRESENT)
        # Once the next request holds the reader's tracking slot: a waiter
        # following the monitor may submit its own right after.
        session.tell_presence_waiters(arrived)

    def move_to(self, queue: _Harvest) -> None:
        """Have the pending request, and every later one, complete into
        `queue` (a CompletionQueue or a TrackingSet) instead.  On the
        harvesting thread.  The pending one is cancelled and asked again
        there: its backend keeps what the last completed request saw, so no
        card event falls between the two; one that completed meanwhile is
        still reported (by a timer of the harvesting loop, after the
        dispatch it came from)."""
        with self._lock:
            old, self._queue = self._queue, queue
            if self.stopped or old is queue:
                return
            op, self._op = self._op, None
            told, self._told = self._told, None
        if op is None:
            return  # a retry is due: it submits there
        if old is not None:
            old.unwatch(op)
        if not op.done():
            op.cancel()
            try:
                op.wait(1.0)
            except errors.ScardioError:
                pass
        status = op.status if op.done() else _CANCELLED
        if status != _CANCELLED:
            with self._lock:
                if self.stopped:
                    return
                self._op = op
                self._told = told  # announced already if it ran
            self._schedule(0.0, functools.partial(self._completed, op))
            return
        self._submit(self._code)

    def stop(self, wait: float = 1.0) -> None:
        """Cancel the pending request and wait (bounded) until the driver
        let it go, so the reader's one tracking slot is free again."""
        with self._lock:
            if self.stopped:
                return
            self.stopped = True
            op, self._op = self._op, None
            told, self._told = self._told, None
            retry, self._retry = self._retry, None
        if retry is not None:
            retry.cancel()
        self.reader.session.tracked_by -= 1
        if told is not None and told.ran:
            # stopped by a callback of its event: the waiters still hear of it
            self.reader.session.tell_presence_waiters(op.code == _IS_PRESENT)
        if op is not None:
            if self._queue is not None:
                self._queue.unwatch(op)
            else:
                self.reader.completions.unwatch(op)
            op.cancel()
            try:
                op.wait(wait)
            except errors.ScardioError:
                pass


class ReaderList(Protocol):
    """Where a :class:`Monitor` learns of readers appearing and going away
    (:class:`scardio.pcsc.ReaderListWatch` is the resource manager's)."""

    def names(self) -> list[str]:
        """The readers present now."""
        ...

    def wait_change(self, known: int) -> None:
        """Block until the list may have changed (`known`: how many readers
        the last :meth:`names` returned) or :meth:`wake` was called."""
        ...

    def wake(self) -> None:
        """End a running :meth:`wait_change` (any thread)."""
        ...

    def open(self, name: str) -> Reader:
        """Open the reader called `name`."""
        ...

    def close(self) -> None: ...


class _ListWatcher:
    """The thread that waits for a reader list to change and hands every
    new listing to `post` (which blocks until the listing is applied)."""

    #: Backoff bound while the list cannot be read (its service stopped).
    RETRY_MAX = 1.0

    def __init__(self, source: ReaderList, post: Callable[[list[str]], bool]) -> None:
        self._source = source
        self._post = post
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="scardio-reader-list",
                                        daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        delay = 0.05
        while not self._stop.is_set():
            try:
                names = self._source.names()
                if not self._post(names):
                    return  # the monitor is closing
                delay = 0.05
                self._source.wait_change(len(names))
            except errors.ScardioError as exc:
                if self._stop.is_set():
                    return
                log.debug("reader list: %s (retrying in %.2f s)", exc, delay)
                self._stop.wait(delay)
                delay = min(self.RETRY_MAX, delay * 2)
            except Exception:  # the thread must outlive any one failure
                log.exception("reader list watch failed")
                self._stop.wait(self.RETRY_MAX)

    def stop(self, timeout: float) -> None:
        self._stop.set()
        self._source.wake()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)


def _names_of(reader: Any) -> tuple[str, ...]:
    """The names a reader list may call `reader` by."""
    return tuple(getattr(reader, "names", None) or (reader.name,))


class _Hotplug:
    """A monitor's side of its reader list, run on the monitor's own thread
    (the harvesting thread, or the asyncio loop): applies each listing
    (readers that appeared are opened, reported and tracked; tracked ones
    that left are reported and dropped) and turns the end of tracking of a
    reader that left the list into its removal.  Shared by Monitor and
    scardio.aio.AsyncMonitor."""

    def __init__(self, source: ReaderList, tracked: Callable[[], list[Tracker]],
                 add: Callable[[Reader], None], remove: Callable[[Reader], None],
                 emit: Callable[[str, Reader], None], schedule: Schedule) -> None:
        self.source = source
        self._tracked = tracked
        self._add, self._remove, self._emit = add, remove, emit
        self._schedule = schedule
        self._listed: set[str] = set()  # the list's names, as last applied
        self._owned: dict[int, Reader] = {}  # readers opened here: closed here

    def _trackers_named(self, name: str) -> list[Tracker]:
        return [t for t in self._tracked() if name in _names_of(t.reader)]

    def apply(self, names: list[str], initial: bool) -> None:
        present = set(names)
        for name in sorted(self._listed - present):
            self._listed.discard(name)
            for tracker in self._trackers_named(name):
                self._emit(READER_REMOVED, tracker.reader)
                self._drop(tracker.reader)
        for name in names:
            if name in self._listed:
                continue
            self._listed.add(name)
            if any(not t.stopped for t in self._trackers_named(name)):
                continue  # a reader the caller gave
            try:
                reader = self.source.open(name)
            except errors.ScardioError as exc:
                # Gone again, or held: tried again when the list next changes.
                log.warning("could not open reader %r that appeared: %s", name, exc)
                self._listed.discard(name)
                continue
            self._owned[id(reader)] = reader
            self._add(reader)  # tracked once the event is out
            if not initial:
                self._emit(READER_ADDED, reader)

    def vanished(self, reader: Reader, error: Optional[BaseException]) -> bool:
        """Tracking of `reader` ended with `error`: if the device is gone
        and the reader left the list, report its removal (once) instead."""
        if not isinstance(error, errors.DeviceGoneError) or reader.closed:
            return False
        try:
            names = self.source.names()
        except errors.ScardioError:
            return False  # the list's service is gone too: the error stands
        known = _names_of(reader)
        if any(n in names for n in known):
            return False
        self._listed.difference_update(known)
        self._emit(READER_REMOVED, reader)
        # Later: this runs inside the harvest of the reader's completions.
        self._schedule(0.0, lambda: self._drop(reader))
        return True

    def _drop(self, reader: Reader) -> None:
        """Stop tracking a reader that went away; close it if it is ours."""
        self._remove(reader)
        owned = self._owned.pop(id(reader), None)
        if owned is not None:
            try:
                owned.close()
            except errors.ScardioError:
                pass

    def close(self) -> None:
        """Close the readers opened here, then the list."""
        owned, self._owned = list(self._owned.values()), {}
        for reader in owned:
            try:
                reader.close()
            except errors.ScardioError:
                pass
        self.source.close()


class _Timer:
    """A call the monitor thread makes once `when` (time.monotonic()) is due."""

    __slots__ = ("when", "fn", "cancelled")

    def __init__(self, when: float, fn: Callable[[], None]) -> None:
        self.when = when
        self.fn = fn
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class _Command:
    """An add / remove / stop for the monitor thread, and its outcome."""

    def __init__(self, what: str, reader: Any) -> None:
        self.what = what
        self.reader: Reader = reader
        self.done = threading.Event()
        self.error: Optional[BaseException] = None


class Monitor:
    """Watch readers for card arrivals and departures.

    >>> with Monitor([reader]) as mon:          # doctest: +SKIP
    ...     for event in mon.events(timeout=10):
    ...         print(event.kind, event.reader.name)

    Events go to every callback (on the monitor thread) and, when the
    monitor queues events, to an internal queue read by :meth:`get`,
    :meth:`events` and iteration.  A card that is already in when a reader
    is added gives an arrival at once.

    *queue_events*: by default a monitor given a *callback* queues nothing
    (a callback-only consumer retains no events however long it runs) and
    one without a callback queues every event; pass True to have both.
    *max_queue* > 0 bounds the queue: when it is full the oldest event is
    dropped and counted in :attr:`dropped`; neither the harvesting thread
    nor :meth:`close` ever blocks on it.

    *reader_list*: watch every reader of this list (readers appearing and
    going away: see the module's docstring); the monitor closes it, and
    the readers it opened, when it closes.  Without one (the default), only
    the readers given or added are tracked.
    """

    def __init__(self, readers: Iterable[Reader] = (),
                 callback: Optional[Callable[[CardEvent], None]] = None, *,
                 start: bool = True, max_queue: int = 0,
                 queue_events: Optional[bool] = None,
                 reader_list: Optional[ReaderList] = None) -> None:
        if max_queue < 0:
            raise ValueError(f"max_queue must be >= 0, not {max_queue}")
        # One item, the tuple of callbacks: add_callback replaces the tuple
        # (a dispatch keeps the one it took), heralds read the slot.
        self._callbacks: list[tuple[Callable[[CardEvent], None], ...]] = \
            [(callback,) if callback else ()]
        self._queue_events = callback is None if queue_events is None else queue_events
        self._max_queue = max_queue
        self._queue: "collections.deque[CardEvent]" = collections.deque()
        self._queue_ready = threading.Condition(threading.Lock())
        self._queue_closed = False
        self._dropped = 0
        self._waiter = waiting.new_waiter()
        self._own = _core.CompletionQueue()  # the tracking of native devices
        self._own_waited = False  # its waitable is registered with the waiter
        self._native = 0  # readers tracked through the queue (or the set)
        # The driver's own wait over many readers (TrackingSet), made for
        # the first native reader whose backend has one; while every
        # native reader's device is in it and no stand-in is tracked, the
        # thread waits there itself (no lane thread, no hop through the
        # queue), else on the queue.
        self._set: Optional[_core.TrackingSet] = None
        self._off_set: set[int] = set()  # native readers the set does not take
        self._on_set = False
        self._commands: "queue.SimpleQueue[_Command]" = queue.SimpleQueue()
        self._trackers: dict[int, Tracker] = {}
        self._waitables: dict[int, int] = {}  # id(reader) -> its registered waitable
        self._lock = threading.Lock()
        self._timers: list[tuple[float, int, _Timer]] = []  # a heap, under _lock
        self._timer_order = itertools.count()
        self._seq = itertools.count(1)  # the events' seq
        self._closed = False
        self._thread: Optional[threading.Thread] = None
        self._pending = list(readers)
        self._reader_list = reader_list
        self._hotplug = None if reader_list is None else _Hotplug(
            reader_list, self._tracked, self._hotplug_add, self._hotplug_remove,
            lambda kind, r: self._event(r, kind, None), self._schedule)
        self._list_watcher: Optional[_ListWatcher] = None
        if start:
            self.start()

    # -- control ------------------------------------------------------------
    def start(self) -> "Monitor":
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="scardio-monitor",
                                            daemon=True)
            self._thread.start()
            pending, self._pending = self._pending, []
            try:
                for r in pending:
                    self.add(r)
                if self._reader_list is not None:
                    self._command("readers", (self._reader_list.names(), True), 30.0)
                    self._list_watcher = _ListWatcher(self._reader_list, self._post_listing)
                    self._list_watcher.start()
            except BaseException:
                self.close()  # no thread left behind by a refused reader
                raise
        return self

    def add_callback(self, callback: Callable[[CardEvent], None]) -> None:
        """Call `callback(CardEvent)` for every event, on the monitor thread."""
        self._callbacks[0] = self._callbacks[0] + (callback,)

    @property
    def readers(self) -> list[Reader]:
        with self._lock:
            return [t.reader for t in self._trackers.values() if not t.stopped]

    def add(self, reader: Reader, timeout: float = 5.0) -> None:
        """Start tracking `reader` (returns once its first request is out)."""
        if self._thread is None:
            self._pending.append(reader)
            return
        self._command("add", reader, timeout)

    def remove(self, reader: Reader, timeout: float = 5.0) -> None:
        """Stop tracking `reader`; its tracking slot is free on return."""
        self._command("remove", reader, timeout)

    def _command(self, what: str, reader: Any, timeout: float) -> None:
        if self._closed:
            raise errors.ClosedError("monitor is closed")
        if threading.current_thread() is self._thread:
            self._do(what, reader)  # from a callback: we are the waiting thread
            return
        command = _Command(what, reader)
        self._commands.put(command)
        self._wake()
        if not command.done.wait(timeout):
            raise errors.TimeoutError(f"monitor thread did not {what} {reader.name!r} "
                                      f"within {timeout} s")
        if command.error is not None:
            raise command.error

    def _post_listing(self, names: list[str]) -> bool:
        """From the list watcher: apply a listing on the monitor thread;
        False once the monitor is closing."""
        try:
            self._command("readers", (names, False), 30.0)
        except errors.ClosedError:
            return False
        return not self._closed

    # -- the harvesting thread ------------------------------------------------
    def _hotplug_add(self, reader: Reader) -> None:
        self._do("add", reader)

    def _hotplug_remove(self, reader: Reader) -> None:
        self._do("remove", reader)

    def _tracked(self) -> list[Tracker]:
        return list(self._trackers.values())

    def _do(self, what: str, reader: Any) -> None:
        if what == "readers":
            assert self._hotplug is not None
            self._hotplug.apply(*reader)
            return
        key = id(reader)
        if what == "add":
            if reader.closed:
                return
            old = self._trackers.get(key)
            if old is not None and not old.stopped:
                return
            if old is not None:  # its reader went away once: track it afresh
                self._do("remove", reader)
            # No Python frame between the tracker and _event unless a
            # reader list may turn the reader's end into its removal.
            on_event: Callable[[str, Optional[BaseException]], None]
            if self._hotplug is None:
                on_event = functools.partial(self._event, reader)
            else:
                def on_event(kind: str, err: Optional[BaseException], r: Reader = reader) -> None:
                    if kind == ERROR and self._hotplug is not None \
                            and self._hotplug.vanished(r, err):
                        return  # reported as its removal
                    self._event(r, kind, err)
            # may refuse (too many waitables): nothing to undo yet
            if isinstance(reader.device, _core.Device):
                self._native += 1
                if not self._set_takes(reader.device):
                    self._off_set.add(key)
                self._switch_wait(self._want_set())
                tracker = Tracker(reader, on_event, self._schedule,
                                  queue=self._set if self._on_set else self._own,
                                  herald=functools.partial(self._herald, reader))
                undo: Callable[[], None] = functools.partial(self._undo_native, key)
            else:
                tracker = Tracker(reader, on_event, self._schedule)
                waitable = reader.device.waitable()
                self._waiter.register(waitable, reader)
                self._waitables[key] = waitable
                undo = functools.partial(self._undo_waitable, key)
            try:
                self._wait_queue_too()
                self._switch_wait(self._want_set())
            except waiting.TooManyWaitablesError:
                undo()
                raise
            with self._lock:
                self._trackers[key] = tracker
            reader.add_close_hook(self._reader_closing)
            tracker.start()
        else:
            with self._lock:
                gone = self._trackers.pop(key, None)
            if gone is None:
                return
            tracker = gone
            reader.remove_close_hook(self._reader_closing)
            waitable = self._waitables.pop(key, None)
            if waitable is None:
                self._native -= 1
                self._off_set.discard(key)
            else:
                self._waiter.unregister(waitable)
            self._wait_queue_too()
            tracker.stop()
            self._switch_wait(self._want_set())

    def _wait_queue_too(self) -> None:
        """While readers of both kinds are tracked the thread waits in the
        waiter: have it wait on the queue's waitable there too."""
        want = bool(self._native and self._waitables)
        if want == self._own_waited:
            return
        if want:
            self._waiter.register(self._own.waitable(), self._own)
        else:
            self._waiter.unregister(self._own.waitable())
        self._own_waited = want

    def _undo_native(self, key: int) -> None:
        self._native -= 1
        self._off_set.discard(key)
        self._switch_wait(self._want_set())

    # -- the driver's own wait (TrackingSet) ------------------------------------
    def _set_takes(self, device: _core.Device) -> bool:
        """Can `device` be waited for in the monitor's tracking set (made
        now for the first device whose backend has one)?"""
        if self._set is None:
            try:
                self._set = _core.TrackingSet.for_device(device)
            except errors.NotSupportedError:
                return False
            except errors.ScardioError as exc:
                log.debug("no tracking set for %r: %s", device, exc)
                return False
        return self._set.accepts(device)

    def _want_set(self) -> bool:
        if self._set is None or not self._native or self._off_set or self._waitables:
            return False
        capacity = self._set.capacity
        return not capacity or self._native <= capacity

    def _switch_wait(self, on_set: bool) -> None:
        """Move every native reader's tracking to the set or to the queue
        (on the monitor thread: a wake sent meanwhile to the other one only
        makes one wait return early)."""
        if on_set == self._on_set:
            return
        self._on_set = on_set
        target: _Harvest = self._set if on_set and self._set is not None else self._own
        for tracker in list(self._trackers.values()):
            if isinstance(tracker.reader.device, _core.Device):
                tracker.move_to(target)

    def _undo_waitable(self, key: int) -> None:
        self._waiter.unregister(self._waitables.pop(key))

    def _wake(self) -> None:
        # Where the thread waits: it switches only while applying commands
        # and timers, which the caller queued before it looked here.
        if self._waitables:
            self._waiter.wake()
        elif self._on_set and self._set is not None:
            self._set.wake()
        else:
            self._own.wake()

    def _close_set(self) -> None:
        tracking_set, self._set = self._set, None
        self._on_set = False
        if tracking_set is not None:
            tracking_set.close()

    def _reader_closing(self, reader: Reader) -> None:
        # Before the device (and its descriptor) goes away.
        try:
            self.remove(reader)
        except errors.ScardioError:
            pass

    def _schedule(self, delay: float, fn: Callable[[], None]) -> _Timer:
        """Have the monitor thread call `fn` in `delay` seconds (the
        waiter's timeout is the next one due)."""
        timer = _Timer(time.monotonic() + delay, fn)
        with self._lock:
            heapq.heappush(self._timers, (timer.when, next(self._timer_order), timer))
        if threading.current_thread() is not self._thread:
            self._wake()  # it may be waiting without a timeout
        return timer

    def _run_due_timers(self) -> Optional[float]:
        """Run the timers that are due (one may schedule another); the
        seconds until the next one, None when there is none."""
        while True:
            with self._lock:
                while self._timers and self._timers[0][2].cancelled:
                    heapq.heappop(self._timers)
                if not self._timers:
                    return None
                left = self._timers[0][0] - time.monotonic()
                if left > 0:
                    return left
                _, _, timer = heapq.heappop(self._timers)
            try:
                timer.fn()
            except Exception:  # the thread must outlive any one failure
                log.exception("monitor timer %r failed", timer.fn)

    def _run(self) -> None:
        own = self._own
        try:
            left: Optional[float] = None
            while not self._closed:
                if self._waitables:
                    ready = self._waiter.wait(left)
                else:
                    if self._on_set and self._set is not None:
                        # in the driver itself, its callbacks run from here
                        self._set.dispatch(left)
                    else:
                        own.dispatch(left)  # woken by the lanes, wake() or the timeout
                    # A callback may have added a stand-in reader: a wake sent
                    # meanwhile went to the queue, so look without blocking
                    # (the commands below are read before the next wait).
                    ready = self._waiter.wait(0) if self._waitables else []
                for reader in ready:
                    try:
                        if reader is own:
                            own.dispatch(0)
                        else:
                            reader.completions.harvest()
                    except Exception:  # the thread must outlive any one failure
                        log.exception("harvesting %r failed", reader)
                while True:
                    try:
                        command = self._commands.get_nowait()
                    except queue.Empty:
                        break
                    try:
                        if command.what != "stop":
                            self._do(command.what, command.reader)
                    except waiting.TooManyWaitablesError as exc:
                        command.error = exc
                    except Exception:
                        log.exception("monitor could not %s %r", command.what,
                                      command.reader)
                    finally:
                        command.done.set()
                left = self._run_due_timers()
        finally:
            # The thread owns the waiter and the set: close them here, never
            # under a wait running on another thread.
            self._waiter.close()
            self._close_set()

    @staticmethod
    def _made_event(kind: str, reader: Reader, timestamp: float, seq: int,
                    error: Optional[BaseException]) -> CardEvent:
        # As CardEvent(...) makes it, without the generated __init__'s
        # frame: this runs between the card and the callback.
        ev = _new_event(CardEvent)
        ev.__dict__.update(kind=kind, reader=reader, timestamp=timestamp, seq=seq, error=error)
        return ev

    def _herald(self, reader: Reader, kind: str) -> _core.Herald:
        """The announcement of the `kind` event a tracking request of
        `reader` going out into the tracking set or the queue will report,
        made now."""
        return _core.Herald.for_event(self._made_event(kind, reader, 0.0, 0, None),
                                      reader.session, kind == ARRIVAL, self._seq,
                                      self._callbacks,
                                      self._enqueue if self._queue_events else None)

    def _event(self, reader: Reader, kind: str, error: Optional[BaseException]) -> None:
        # Only the monitor thread makes events (trackers, retries, heralds
        # and hotplug all run on it), so the count needs no lock.
        ev = self._made_event(kind, reader, time.monotonic(), next(self._seq), error)
        for cb in self._callbacks[0]:
            try:
                cb(ev)
            except Exception:
                pass  # one bad callback must not stop the monitor
        if self._queue_events:
            self._enqueue(ev)

    def _enqueue(self, ev: CardEvent) -> None:
        with self._queue_ready:
            if self._max_queue and len(self._queue) >= self._max_queue:
                self._queue.popleft()  # drop the oldest: never block the harvester
                self._dropped += 1
            self._queue.append(ev)
            self._queue_ready.notify()

    @property
    def dropped(self) -> int:
        """Events dropped (oldest first) because the bounded queue was full."""
        return self._dropped

    # -- consuming ------------------------------------------------------------
    def get(self, timeout: Optional[float] = None) -> CardEvent:
        """The next event; scardio.errors.TimeoutError after `timeout` s,
        ClosedError once the monitor is closed and drained."""
        if not self._queue_events:
            raise errors.InvalidStateError(
                "this monitor has a callback and queues no events; "
                "pass queue_events=True to read them with get() as well")
        if timeout is not None and not timeout >= 0:
            raise ValueError(f"timeout must be >= 0 or None, not {timeout}")
        deadline = None if timeout is None or timeout == math.inf \
            else time.monotonic() + timeout
        with self._queue_ready:
            while not self._queue:
                if self._queue_closed:
                    raise errors.ClosedError("monitor is closed")
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise errors.TimeoutError(f"no card event within {timeout} s")
                # sliced: Ctrl-C is seen between (a lock wait ignores it on Windows)
                self._queue_ready.wait(WAIT_SLICE if left is None else min(left, WAIT_SLICE))
            return self._queue.popleft()

    def events(self, timeout: Optional[float] = None,
               count: Optional[int] = None) -> Iterator[CardEvent]:
        """Yield events until `count` were seen, `timeout` seconds (in all)
        passed, or the monitor closed.  Ends quietly in every case."""
        deadline = None if timeout is None else time.monotonic() + timeout
        n = 0
        while count is None or n < count:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if left is not None and left <= 0:
                return
            try:
                ev = self.get(left)
            except (errors.TimeoutError, errors.ClosedError):
                return
            n += 1
            yield ev

    def __iter__(self) -> Iterator[CardEvent]:
        return self.events()

    # -- closing --------------------------------------------------------------
    def close(self, timeout: float = 5.0) -> None:
        """Stop tracking every reader (cancelling their requests), stop the
        thread.  The readers stay open.  Idempotent."""
        if self._closed:
            return
        if self._list_watcher is not None:
            self._list_watcher.stop(timeout)
        for r in self.readers:
            try:
                self.remove(r, timeout)
            except errors.ScardioError:
                pass
        self._closed = True
        if self._hotplug is not None:
            self._hotplug.close()
        if self._thread is None:
            self._waiter.close()
            self._close_set()
        elif self._thread is not threading.current_thread():
            self._commands.put(_Command("stop", None))
            self._wake()
            self._thread.join(timeout)
        with self._queue_ready:  # never blocks: the queue is not bounded by a lock
            self._queue_closed = True
            self._queue_ready.notify_all()

    def __enter__(self) -> "Monitor":
        return self.start()

    def __exit__(self, exc_type: Optional[type[BaseException]],
                 exc: Optional[BaseException], tb: Optional[TracebackType]) -> None:
        self.close()

    def __del__(self) -> None:
        if not getattr(self, "_closed", True):
            try:
                self.close(1.0)
            except Exception:
                pass
