# ---- C callbacks into a Python callable -----------------------------------
# A C library that takes "a function and a context" (a simulated reader's
# external card, for one) can be handed these: call(ctx, op, in, in_len, out,
# out_cap) runs fn(op, bytes(in)), which answers bytes (copied into out;
# more than out_cap gives -2) or a negative int; release(ctx) drops the
# reference bytes_callback() took.  Both may run on any thread.

cdef extern from "Python.h":
    int Py_IsInitialized() nogil

# Set when the interpreter starts finalizing (an atexit handler registered at
# import, so it runs after those of the modules above): from then on no
# callback touches Python (a release leaks its object rather than crash).
cdef int _callbacks_closed = 0

def _close_callbacks():
    global _callbacks_closed
    _callbacks_closed = 1

import atexit as _atexit
_atexit.register(_close_callbacks)


cdef long _bytes_call_gil(void *ctx, int op, const uint8_t *data, size_t n,
                          uint8_t *out, size_t cap) noexcept with gil:
    cdef Py_ssize_t m
    try:
        res = (<object>ctx)(op, PyBytes_FromStringAndSize(<const char *>data, n)
                            if data != NULL else b"")
        if type(res) is bytes:
            m = len(<bytes>res)
            if <size_t>m > cap:
                return -2
            memcpy(out, PyBytes_AS_STRING(res), m)
            return m
        if type(res) is int and res < 0:
            return res
        return -2
    except BaseException:
        return -1  # the callable is meant to catch its own exceptions


cdef long _bytes_call(void *ctx, int op, const uint8_t *data, size_t n,
                      uint8_t *out, size_t cap) noexcept nogil:
    if _callbacks_closed or not Py_IsInitialized():
        return -1
    # As for the lane: a thread of the core keeps the thread state it gets
    # here (making one per call would cost more than the call).
    if PyGILState_GetThisThreadState() == NULL:
        PyGILState_Ensure()
        PyEval_SaveThread()
    return _bytes_call_gil(ctx, op, data, n, out, cap)


cdef void _release_gil(void *ctx) noexcept with gil:
    Py_DECREF(<object>ctx)


cdef void _bytes_release(void *ctx) noexcept nogil:
    if _callbacks_closed or not Py_IsInitialized():
        return
    if PyGILState_GetThisThreadState() == NULL:
        PyGILState_Ensure()
        PyEval_SaveThread()
    _release_gil(ctx)


def bytes_callback(fn):
    """C function pointers that call `fn(op: int, data: bytes)` from C, as
    (call, release, ctx) addresses; see the comment above for the contract.
    Takes a reference to `fn` that release(ctx) drops: hand the three to
    exactly one owner that calls release once."""
    if not callable(fn):
        raise TypeError(f"bytes_callback() needs a callable, not {type(fn).__name__}")
    Py_INCREF(fn)
    return (<uintptr_t>&_bytes_call, <uintptr_t>&_bytes_release, <uintptr_t><void *>fn)

