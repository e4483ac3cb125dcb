# -- a tracking set: one thread waits in the driver for many readers ------------

cdef enum:
    # Completions taken from one wait (more are taken by the next).
    TRACKING_SET_BATCH = 32


cdef class Herald:
    """What a :class:`TrackingSet` tells first when a request it holds
    succeeded, before the request's own callback: an event made before the
    request went out, stamped and handed to the callbacks, so that between
    the driver's answer and a user's callback runs little more than that.

    *event*: an object with a ``__dict__``, whose ``timestamp``
    (time.monotonic()) and ``seq`` (the next item of the iterator *seq*)
    are set then; *session*: the reader's :class:`SessionBase`, told
    first (``note_presence(present)``: the state the callbacks should
    see); *callbacks*: a one-item list holding the tuple of callbacks, each
    called with the event, one that raises ignored (its owner replaces the
    tuple, never changes it); *after(event)*: called last, or None.
    :attr:`ran` tells the request's callback that the event went out."""

    cdef readonly object event
    cdef readonly bint ran
    cdef dict _fields
    cdef SessionBase _session
    cdef bint _present
    cdef object _seq, _after
    cdef list _callbacks

    def __init__(self):
        raise TypeError("use Herald.for_event()")

    @classmethod
    def for_event(cls, event, SessionBase session not None, bint present, seq,
                  list callbacks not None, after=None):
        """The herald of `event` (see the class)."""
        cdef Herald self
        if len(callbacks) != 1 or type(callbacks[0]) is not tuple:
            raise TypeError("callbacks must be a one-item list holding a tuple")
        self = Herald.__new__(Herald)
        self.event = event
        self._fields = event.__dict__
        self._session = session
        self._present = present
        self._seq = seq
        self._callbacks = callbacks
        self._after = after
        return self

    cdef int announce(self) except -1:
        cdef object event = self.event
        self._session.note_presence(self._present)
        self._fields["timestamp"] = _monotonic()
        self._fields["seq"] = next(self._seq)
        self.ran = True
        for callback in <tuple>self._callbacks[0]:
            try:
                callback(event)
            except Exception:
                pass  # one bad callback must not keep the event from the others
        if self._after is not None:
            self._after(event)
        return 0


cdef class TrackingSet:
    """The tracking requests (IS_PRESENT / IS_ABSENT) of many devices,
    waited for together in the calling thread: :meth:`dispatch` blocks
    (GIL released) in one call of the devices' backend over all of them
    (through PC/SC one ``SCardGetStatusChange`` over their readers), then
    calls the callback of each request that completed, with no thread
    between the driver's answer and the callback.  Made for one device's
    backend (:meth:`for_device`; ``NotSupportedError`` when it has no such
    wait); a device of another backend is not :meth:`accepts`-ed, and a set
    holds at most :attr:`capacity` requests.  A request holds its device's
    one tracking slot as any does; cancelling it (``Operation.cancel``,
    closing the device) ends it at once, or wakes the dispatch that waits
    on it.  :meth:`submit` and
    :meth:`dispatch` belong to one thread (that of the callbacks);
    :meth:`wake` may be called from any."""

    cdef scio_track_set *_s
    cdef dict _handlers  # op id -> (Operation, callback, Herald or None)
    cdef unsigned long _generation
    cdef bint _dispatching
    cdef object _log

    def __cinit__(self):
        self._s = NULL
        self._handlers = {}
        self._generation = scio_fork_generation

    def __init__(self):
        raise TypeError("use TrackingSet.for_device()")

    @classmethod
    def for_device(cls, Device device):
        """A set for devices of `device`'s backend."""
        cdef scio_status st
        cdef scio_track_set *s = NULL
        cdef TrackingSet self = TrackingSet.__new__(TrackingSet)
        device._check_open()
        with nogil:
            st = scio_track_set_new(device._dev, &s)
        if st != SCIO_SUCCESS:
            raise _error(st, 0, None, "a tracking set for this device's backend")
        self._s = s
        return self

    def __dealloc__(self):
        cdef scio_track_set *s = self._s
        self._s = NULL
        if s != NULL and self._generation == scio_fork_generation:
            with nogil:
                scio_track_set_free(s)

    cdef int _check(self) except -1:
        if self._generation != scio_fork_generation:
            raise _inherited_error("this tracking set")
        if self._s == NULL:
            raise _errors.ClosedError("the tracking set is closed")
        return 0

    @property
    def capacity(self):
        """The most requests the set holds at once (0: no limit)."""
        self._check()
        return scio_track_set_capacity(self._s)

    def accepts(self, Device device):
        """True when `device` can join the set (a device of its backend)."""
        if self._s == NULL or self._generation != scio_fork_generation or device._closed:
            return False
        return scio_track_set_accepts(self._s, device._dev) != 0

    def submit(self, Device device, code, callback, Herald herald=None):
        """Start IS_PRESENT or IS_ABSENT on `device`, held by the set:
        :meth:`dispatch` waits for it and calls ``callback(op)`` once it
        completed, after `herald`'s announcement when it succeeded.
        Returns the Operation."""
        cdef scio_op *op = NULL
        cdef scio_status st
        cdef uint32_t code_v = _dword(code, "code")
        self._check()
        device._check_open()
        with nogil:
            st = scio_track_set_submit(self._s, device._dev, code_v, 0, &op)
        if st != SCIO_SUCCESS:
            raise _error(st, 0, code_v)
        o = device._tracked(op, code_v)
        self._handlers[scio_op_id(op)] = (o, callback, herald)
        return o

    def unwatch(self, Operation op):
        """Forget `op`'s callback (its completion is then dropped)."""
        op._check()
        self._handlers.pop(scio_op_id(op._op), None)

    def wake(self):
        """Make the current or next :meth:`dispatch` return (thread-safe;
        returns once a running wait has left the driver)."""
        cdef scio_track_set *s = self._s
        if self._generation != scio_fork_generation:
            raise _inherited_error("this tracking set")
        if s == NULL:
            return
        with nogil:
            scio_track_set_wake(s)

    def pending(self):
        """How many submitted requests still have a callback here."""
        return len(self._handlers)

    def dispatch(self, timeout=None):
        """Wait up to `timeout` seconds (None or inf: until a request
        completes or a wake(); GIL released) in the driver for the set's
        requests, then call the callbacks of those that completed; returns
        how many ran.  A callback that raises is logged; the others still
        run."""
        cdef scio_completion done[TRACKING_SET_BATCH]
        cdef int n = 0, i, ms
        cdef double seconds = 0.0
        cdef bint forever = _forever(timeout, &seconds)
        cdef double deadline = 0.0
        cdef int ran = 0
        cdef scio_track_set *s
        self._check()
        if self._dispatching:
            raise _errors.InvalidStateError("dispatch() is already running on this set")
        s = self._s
        if not forever:
            deadline = _monotonic() + seconds
        self._dispatching = True
        try:
            while True:
                # Sliced (coarsely: each slice is a new wait in the driver),
                # so that Ctrl-C is seen on the main thread.
                if forever:
                    ms = PCSC_WAIT_SLICE_MS
                else:
                    seconds = deadline - _monotonic()
                    ms = 0 if seconds <= 0.0 else (
                        PCSC_WAIT_SLICE_MS if seconds * 1000.0 >= PCSC_WAIT_SLICE_MS
                        else <int>(seconds * 1000.0) + 1)
                with nogil:
                    n = scio_track_set_wait(s, ms, done, TRACKING_SET_BATCH)
                if n != 0 or ms == 0 or (not forever and _monotonic() >= deadline):
                    break
                PyErr_CheckSignals()
        finally:
            self._dispatching = False
        handlers = self._handlers
        for i in range(n if n > 0 else 0):
            entry = handlers.pop(done[i].op_id, None)
            if entry is None:
                continue  # cancelled after unwatch(): not an event
            ran += 1
            herald = entry[2]
            if herald is not None and done[i].status == SCIO_SUCCESS:
                try:
                    (<Herald>herald).announce()
                except Exception:  # the request's own callback still runs
                    self._failed("announcing", entry[0])
            try:
                (<object>entry[1])(entry[0])
            except Exception:  # one broken callback must not starve the rest
                self._failed("completion callback", entry[0])
        return ran

    cdef _failed(self, what, op):
        if self._log is None:
            import logging
            self._log = logging.getLogger("scardio.completions")
        self._log.exception("%s failed for %r", what, op)

    def close(self):
        """Cancel every request the set holds and free it (idempotent; not
        while a dispatch() runs)."""
        cdef scio_track_set *s = self._s
        if s == NULL:
            return
        if self._dispatching:
            raise _errors.InvalidStateError("close() while dispatch() runs on this set")
        self._s = NULL
        self._handlers.clear()
        if self._generation == scio_fork_generation:
            with nogil:
                scio_track_set_free(s)

    @property
    def closed(self):
        return self._s == NULL
