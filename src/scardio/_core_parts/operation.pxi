cdef class Operation:
    """An overlapped IOCTL; see Device.submit."""

    cdef scio_op *_op
    cdef unsigned long _generation
    cdef readonly Device device
    cdef readonly uint32_t code
    cdef object __weakref__

    def __cinit__(self):
        self._op = NULL

    def __init__(self):
        raise TypeError("operations come from Device.submit()")

    def __dealloc__(self):
        cdef scio_op *op = self._op
        self._op = NULL
        if op != NULL and self._generation == scio_fork_generation:
            # Forget the device's weak entry (ids are never reused); the
            # device may already be cleared when a cycle is collected.
            if self.device is not None and self.device._ops is not None:
                self.device._ops.pop(scio_op_id(op), None)
            # Cancels it if still pending (the driver's stop function runs on
            # a core thread, so this never blocks); the core frees it on
            # completion.  In a forked child the parent's op is left alone.
            with nogil:
                scio_op_release(op)

    cdef int _check(self) except -1:
        if self._op == NULL:
            raise _errors.InvalidStateError(
                "not an operation: operations come from Device.submit()")
        if self._generation != scio_fork_generation:
            raise _inherited_error("this operation's device")
        return 0

    @property
    def id(self):
        self._check()
        return scio_op_id(self._op)

    @property
    def status(self):
        self._check()
        return scio_op_status(self._op)

    def done(self):
        self._check()
        return scio_op_done(self._op) != 0

    def cancel(self):
        self._check()
        with nogil:
            scio_op_cancel(self._op)

    def wait(self, timeout=None):
        """Wait for completion and return result().  On timeout raise
        scardio.errors.TimeoutError; the operation stays pending.  Ctrl-C
        while waiting cancels the operation and propagates."""
        cdef int done = 0
        cdef int slice_ms
        cdef double seconds = 0.0
        cdef bint forever = _forever(timeout, &seconds)
        cdef double deadline = 0.0
        self._check()
        if not forever:
            deadline = _monotonic() + seconds
        while True:
            slice_ms = _slice_ms(forever, deadline)
            with nogil:
                done = scio_op_wait(self._op, slice_ms)
            if done:
                return self.result()
            if not forever and _monotonic() >= deadline:
                raise _errors.TimeoutError(
                    f"operation {self.id} still pending after {timeout} s",
                    status=SCIO_PENDING, ioctl=self.code)
            try:
                PyErr_CheckSignals()
            except BaseException:
                self.cancel()
                raise

    def result(self):
        """The output of a completed operation, or its typed error."""
        cdef scio_status st
        cdef size_t n = 0
        cdef const uint8_t *p
        self._check()
        st = scio_op_status(self._op)
        if st == SCIO_PENDING:
            raise _errors.InvalidStateError(
                f"operation {self.id} is still pending", ioctl=self.code)
        if st != SCIO_SUCCESS:
            raise _error(st, scio_op_driver_code(self._op), self.code)
        p = scio_op_output(self._op, &n)
        return PyBytes_FromStringAndSize(<const char *>p, n)

    def __repr__(self):
        from .constants import ioctl_name
        if self._op == NULL:
            return "<scardio.Operation (not submitted)>"
        if self._generation != scio_fork_generation:
            return (f"<scardio.Operation {scio_op_id(self._op)} {ioctl_name(self.code)} "
                    f"inherited from the parent process>")
        st = scio_op_status(self._op)
        state = "pending" if st == SCIO_PENDING else (status_name(st) or hex(st))
        return f"<scardio.Operation {self.id} {ioctl_name(self.code)} {state}>"

