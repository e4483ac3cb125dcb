"""A device's completion dispatcher, shared by the threaded Monitor and
the asyncio runtime."""

from __future__ import annotations

import collections
import logging
import threading
from typing import Any, Callable, Iterable, Optional

from . import errors

__all__ = ["Completions"]

log = logging.getLogger(__name__)

_Entry = tuple[Any, Callable[[Any], None]]


class Completions:
    """Routes a device's completed operations to their callbacks.

    Any number of harvesters (the Monitor thread, an asyncio loop's
    add_reader callback) may pop the device's queue; each completion is
    delivered exactly once to whoever watched it.  Holding the operation
    here also keeps it alive (a dropped Operation is cancelled).

    Exactly once without a lock of its own: an entry is delivered by
    whoever pops it from the handler map, and a dict's pop is atomic.  A
    completion harvested before its watch() is caught by watch() itself,
    which looks at ``op.done()`` after inserting the entry (the core marks
    an operation done before its record can be harvested), so a harvest
    never has to scan the handlers it did not pop."""

    def __init__(self, device: Any) -> None:
        self.device = device
        self._handlers: dict[int, _Entry] = {}
        self._local = threading.local()

    def watch(self, op: Any, callback: Callable[[Any], None]) -> None:
        """Call `callback(op)` once `op` completed, on the harvesting thread
        (at once, on this thread, if it already did)."""
        op_id = op.id
        self._handlers[op_id] = (op, callback)
        if op.done():  # completed (and perhaps harvested) before we looked
            entry = self._handlers.pop(op_id, None)
            if entry is not None:
                self._run((entry,))

    def unwatch(self, op: Any) -> None:
        self._handlers.pop(op.id, None)

    def _run(self, entries: Iterable[_Entry]) -> None:
        # Trampoline: a callback that submits an operation which is already
        # complete (a card flipping faster than we resubmit) must not recurse
        # into the next callback, or a burst of events overflows the stack.
        local = self._local
        ready: Optional[collections.deque[_Entry]] = getattr(local, "ready", None)
        if ready is not None:
            ready.extend(entries)
            return
        self._drain(collections.deque(entries))

    def _drain(self, ready: "collections.deque[_Entry]") -> None:
        """Run `ready`'s callbacks in turn as this thread's trampoline queue
        (a callback's completions join it instead of recursing)."""
        local = self._local
        local.ready = ready
        try:
            while ready:
                op, callback = ready.popleft()
                try:
                    callback(op)
                except Exception:  # one broken callback must not starve the rest
                    log.exception("completion callback failed for %r", op)
        finally:
            local.ready = None

    def harvest(self, timeout: Optional[float] = 0.0) -> int:
        """Pop what completed and run the callbacks; returns how many ran.

        The harvesting thread runs this on every card event before the
        user sees it: the entries go straight into the trampoline's queue
        (no list of them, no extra call)."""
        try:
            ops = self.device.harvest(timeout)
        except errors.ClosedError:
            return 0
        if not ops:
            return 0
        pop = self._handlers.pop
        local = self._local
        outer: Optional[collections.deque[_Entry]] = getattr(local, "ready", None)
        ready = collections.deque() if outer is None else outer
        ran = 0
        for op in ops:  # a plain loop: no generator object per harvest
            entry = pop(op.id, None)
            if entry is not None:
                ready.append(entry)
                ran += 1
        if outer is None:  # else inside a callback: the running loop calls them
            self._drain(ready)
        return ran

    def take(self, timeout: Optional[float] = 0.0) -> list[_Entry]:
        """Pop what completed and hand over its watchers' entries, each
        ``(op, callback)``, without running them: the caller delivers each
        exactly once (through :meth:`run` for any callback that may watch
        again)."""
        try:
            ops = self.device.harvest(timeout)
        except errors.ClosedError:
            return []
        pop = self._handlers.pop
        entries = []
        for op in ops:  # a plain loop: no generator object per harvest
            entry = pop(op.id, None)
            if entry is not None:
                entries.append(entry)
        return entries

    def run(self, entries: Iterable[_Entry]) -> None:
        """Run entries from :meth:`take` (their callbacks, on this thread)."""
        self._run(entries)

    def pending(self) -> int:
        return len(self._handlers)
