cdef class _LaneCall:
    """What Device.call_on_lane hands the lane thread: the function, then
    its outcome."""
    cdef object fn
    cdef object value
    cdef object error


cdef void _lane_run(void *ctx, int run) noexcept with gil:
    # `call` holds its own reference; drop the one the submitter lent the core.
    cdef _LaneCall call = <_LaneCall>ctx
    Py_DECREF(call)
    if run:
        try:
            call.value = call.fn()
        except BaseException as exc:
            call.error = exc
    call.fn = None


cdef scio_status _lane_trampoline(scio_op *op, void *ctx, int run) noexcept nogil:
    # Runs exactly once per call: on the lane (run) or where an unrun call
    # was cancelled.  A thread of the core keeps the Python thread state it
    # first gets here (PyGILState_Ensure without a Release): making a new one
    # per call would cost more than the call.
    if PyGILState_GetThisThreadState() == NULL:
        PyGILState_Ensure()
        PyEval_SaveThread()
    _lane_run(ctx, run)
    return SCIO_SUCCESS

