cdef bint _forever(object timeout, double *seconds) except -1:
    """Parse a timeout: True for None or inf (no timeout), else False with
    the seconds in *seconds; ValueError if negative or NaN."""
    if timeout is None:
        return True
    seconds[0] = PyFloat_AsDouble(timeout)  # TypeError for a non-number
    if not seconds[0] >= 0.0:  # also refuses NaN
        raise ValueError(f"timeout must be seconds >= 0, inf or None, got {timeout!r}")
    return isinf(seconds[0])


cdef inline int _slice_ms(bint forever, double deadline):
    """The next slice of a wait: WAIT_SLICE_MS, or what is left of it,
    rounded up so that a short remainder never spins (0 once past it)."""
    cdef double left
    if forever:
        return WAIT_SLICE_MS
    left = deadline - _monotonic()
    if left <= 0.0:
        return 0
    if left * 1000.0 < WAIT_SLICE_MS:
        return <int>(left * 1000.0) + 1
    return WAIT_SLICE_MS


cdef bint _wait_in_slices(scio_op *op, bint forever, double deadline) except -1:
    """Wait for `op` until `deadline` (time.monotonic(); not if forever) in
    slices that let a signal handler run (Ctrl-C raises): True once done,
    False at the deadline."""
    cdef int done = 0
    cdef int slice_ms
    while not done:
        if not forever and _monotonic() >= deadline:
            return False
        PyErr_CheckSignals()
        slice_ms = _slice_ms(forever, deadline)
        with nogil:
            done = scio_op_wait(op, slice_ms)
    return True


cdef object _given_up(uint32_t code):
    """The TimeoutError of a waiter that gave up on the IOCTL `code` (0:
    not started) on the I/O lane: it finishes there unwaited."""
    from .constants import ioctl_name
    what = ioctl_name(code) if code else "the loop"
    return _errors.TimeoutError(f"{what}: no answer from the driver within the timeout "
                                "(given up)", status=SCIO_PENDING, ioctl=code or None)

