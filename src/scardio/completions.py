"""A device's completion dispatcher, shared by the threaded Monitor and
the asyncio runtime."""

from __future__ import annotations

import collections
import logging
import threading
from typing import Any, Callable, Optional

from . import errors

__all__ = ["Completions"]

log = logging.getLogger(__name__)


class Completions:
    """Routes a device's completed operations to their callbacks.

    Any number of harvesters (the Monitor thread, an asyncio loop's
    add_reader callback) may pop the device's queue; each completion is
    delivered exactly once to whoever watched it.  Holding the operation
    here also keeps it alive (a dropped Operation is cancelled)."""

    def __init__(self, device: Any) -> None:
        self.device = device
        self._lock = threading.Lock()
        self._handlers: dict[int, tuple[Any, Callable[[Any], None]]] = {}
        self._local = threading.local()

    def watch(self, op: Any, callback: Callable[[Any], None]) -> None:
        with self._lock:
            self._handlers[op.id] = (op, callback)
        if op.done():  # completed (and perhaps harvested) before we looked
            self._fire(op.id)

    def unwatch(self, op: Any) -> None:
        with self._lock:
            self._handlers.pop(op.id, None)

    def _fire(self, op_id: int) -> None:
        with self._lock:
            entry = self._handlers.pop(op_id, None)
        if entry is None:
            return
        # Trampoline: a callback that submits an operation which is already
        # complete (a card flipping faster than we resubmit) must not recurse
        # into the next callback, or a burst of events overflows the stack.
        ready: Optional[collections.deque[tuple[Any, Callable[[Any], None]]]] = \
            getattr(self._local, "ready", None)
        if ready is not None:
            ready.append(entry)
            return
        ready = self._local.ready = collections.deque([entry])
        try:
            while ready:
                op, callback = ready.popleft()
                try:
                    callback(op)
                except Exception:  # one broken callback must not starve the rest
                    log.exception("completion callback failed for %r", op)
        finally:
            self._local.ready = None

    def harvest(self, timeout: Optional[float] = 0.0) -> int:
        """Pop what completed and run the callbacks; returns how many ran."""
        try:
            ops = self.device.harvest(timeout)
        except errors.ClosedError:
            ops = []
        n = 0
        for op in ops:
            self._fire(op.id)
            n += 1
        # Operations whose record was popped by the binding's weak map miss
        # (or that completed between watch() and now) are caught here.
        with self._lock:
            late = [i for i, (op, _) in self._handlers.items() if op.done()]
        for i in late:
            self._fire(i)
            n += 1
        return n

    def pending(self) -> int:
        with self._lock:
            return len(self._handlers)
