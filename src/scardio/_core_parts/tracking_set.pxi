# -- a tracking set: one thread waits in the driver for many readers ------------

cdef enum:
    # Completions taken from one wait (more are taken by the next).
    TRACKING_SET_BATCH = 32


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
            _completed(entry, done[i].status)
        return ran

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
