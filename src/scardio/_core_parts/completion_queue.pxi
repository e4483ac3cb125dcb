# -- a completion queue of one's own ------------------------------------------

cdef class CompletionQueue:
    """A completion queue of its own, for one harvesting thread over many
    devices: operations submitted through it complete here, not into their
    device's queue, and :meth:`dispatch` (GIL released while it waits)
    calls each one's callback.  The thread that completes an operation
    wakes the dispatching thread directly (the queue's condition variable),
    and the callbacks are called from here, with no Python in between.
    :meth:`submit` and :meth:`dispatch` belong to one thread (that of the
    callbacks); :meth:`wake` may be called from any."""

    cdef scio_queue *_q
    cdef dict _handlers  # op id -> (Operation, callback, Herald or None)
    cdef unsigned long _generation

    def __cinit__(self):
        self._q = scio_queue_new()
        if self._q == NULL:
            raise MemoryError("no memory for a completion queue")
        self._handlers = {}
        self._generation = scio_fork_generation

    def __dealloc__(self):
        # Operations still pending keep the queue alive until they complete.
        if self._q != NULL and self._generation == scio_fork_generation:
            scio_queue_free(self._q)
        self._q = NULL

    cdef int _check(self) except -1:
        if self._generation != scio_fork_generation:
            raise _inherited_error("this completion queue")
        return 0

    def submit(self, Device device, code, callback, Herald herald=None):
        """Start an overlapped IOCTL (no input, no output) on `device` whose
        completion comes here: :meth:`dispatch` calls ``callback(op)`` once
        it completed, after `herald`'s announcement (a tracking request's
        event, see :class:`Herald`) when it succeeded.  Returns the
        Operation."""
        cdef scio_op *op = NULL
        cdef scio_status st
        cdef uint32_t code_v = _dword(code, "code")
        self._check()
        device._check_open()
        with nogil:
            st = scio_submit_to(device._dev, self._q, code_v, NULL, 0, 0, 0, &op)
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
        """Make the current or next :meth:`dispatch` return (thread-safe)."""
        self._check()
        scio_queue_wake(self._q)

    def pending(self):
        """How many submitted operations still have a callback here."""
        return len(self._handlers)

    def waitable(self):
        """The queue's waitable, as Device.waitable(): signalled exactly
        while completions (or a wake()) wait to be dispatched."""
        cdef void *h
        self._check()
        h = scio_queue_handle(self._q)
        if h != NULL:
            return <uintptr_t>h
        return scio_queue_fd(self._q)

    def dispatch(self, timeout=None):
        """Wait up to `timeout` seconds (None or inf: until a completion or
        a wake(); GIL released) for the first completion, then call the
        callbacks of everything completed, oldest first; returns how many
        ran.  A callback that raises is logged; the others still run."""
        cdef scio_completion c
        cdef int rc
        cdef int slice_ms
        cdef double seconds = 0.0
        cdef bint forever = _forever(timeout, &seconds)
        cdef double deadline = 0.0
        cdef int ran = 0
        self._check()
        if not forever and seconds <= 0.0:
            rc = scio_queue_pop(self._q, 0, &c)
        else:
            if not forever:
                deadline = _monotonic() + seconds
            while True:
                slice_ms = _slice_ms(forever, deadline)
                with nogil:
                    rc = scio_queue_pop(self._q, slice_ms, &c)
                if rc != 0 or (not forever and _monotonic() >= deadline):
                    break
                PyErr_CheckSignals()
        handlers = self._handlers
        while rc == 1:
            entry = handlers.pop(c.op_id, None)
            if entry is not None:
                ran += 1
                _completed(entry, c.status)
            rc = scio_queue_pop(self._q, 0, &c)  # does not wait
        return ran

