# cython: language_level=3, boundscheck=False, wraparound=False
"""Binding over the scardio C core (native/scio.h): Device and Operation.

The GIL is released around every call that can block.  Inputs are read in
place through the buffer protocol; outputs are written straight into the
bytes object that is returned whenever it is large, so no copy is made that
can be avoided.
"""

import os
from operator import index as _index
from time import monotonic as _monotonic

from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release, PyBUF_SIMPLE
from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING
from cpython.exc cimport PyErr_CheckSignals
from cpython.float cimport PyFloat_AsDouble
from cpython.ref cimport PyObject, Py_INCREF, Py_DECREF
from cpython.weakref cimport PyWeakref_NewRef
from libc.math cimport isinf
from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t, uintptr_t
from libc.string cimport memcpy

from ._scio cimport *

from . import errors as _errors

cdef extern from "Python.h":
    int _PyBytes_Resize(PyObject **b, Py_ssize_t newsize) except -1
    ctypedef struct PyThreadState:
        pass
    PyThreadState *PyGILState_GetThisThreadState() nogil
    int PyGILState_Ensure() nogil
    PyThreadState *PyEval_SaveThread() nogil

MAX_INPUT = SCIO_MAX_INPUT
MAX_OUTPUT = SCIO_MAX_OUTPUT
MAX_ATR = SCIO_MAX_ATR
MAX_APDU = SCIO_MAX_APDU
MAX_RESPONSE = SCIO_MAX_RESPONSE
DEFAULT_POLL_MS = SCIO_DEFAULT_POLL_MS
DEFAULT_CLOSE_MS = SCIO_DEFAULT_CLOSE_MS
STATUS_PENDING = SCIO_PENDING
#: The loops Device.run_loop() runs, and the decisions it records in their
#: trails (scio.h).
LOOP_CONNECT = SCIO_LOOP_CONNECT
LOOP_POWER_DOWN = SCIO_LOOP_POWER_DOWN
LOOP_TRAIL = {"ATR": SCIO_TRAIL_ATR, "ATR_PROTOCOL": SCIO_TRAIL_ATR_PROTOCOL,
              "SWALLOW": SCIO_TRAIL_SWALLOW, "COLD_RESET": SCIO_TRAIL_COLD_RESET,
              "WARM_RESET": SCIO_TRAIL_WARM_RESET, "SET_PROTOCOL": SCIO_TRAIL_SET_PROTOCOL,
              "POWER_DOWN": SCIO_TRAIL_POWER_DOWN}
#: LUNs, IOCTL codes, option values: DWORDs (32 bits on every platform).
MAX_DWORD = 0xFFFFFFFF

cdef enum:
    # Outputs up to this size go through a stack buffer and one small copy;
    # larger ones are written into the result bytes object directly.
    SMALL_OUTPUT = 512
    # Waits are sliced so that Ctrl-C is seen while blocked.
    WAIT_SLICE_MS = 100
    # ... those of the PC/SC reader-list watch too, more coarsely: each slice
    # is a round trip to the resource manager (the C side slices as much).
    PCSC_WAIT_SLICE_MS = 1000


cdef extern from "Python.h":
    # Declared without an exception check: the callers look at the value.
    unsigned long long PyLong_AsUnsignedLongLong(object o)
    Py_ssize_t PyLong_AsSsize_t(object o)
    bint PyLong_Check(object o)
    void PyErr_Clear()


cdef inline uint32_t _dword(object value, str name) except? 0xFFFFFFFF:
    """An integer argument that must fit a DWORD: ValueError naming the
    argument and its range otherwise (a non-integer stays a TypeError)."""
    cdef unsigned long long v
    if PyLong_Check(value):
        v = PyLong_AsUnsignedLongLong(value)  # (unsigned)-1 and OverflowError if < 0
        if v <= 0xFFFFFFFFULL:
            return <uint32_t>v
    return _dword_slow(value, name)


cdef uint32_t _dword_slow(object value, str name) except? 0xFFFFFFFF:
    if not PyLong_Check(value):
        return _dword(_index(value), name)  # TypeError unless it has __index__
    PyErr_Clear()
    raise ValueError(f"{name} must be in 0..{MAX_DWORD} (0xFFFFFFFF), got {value!r}")


cdef inline Py_ssize_t _size(object value, str name) except -1:
    """A size argument: ValueError unless 0 <= value <= sys.maxsize."""
    cdef Py_ssize_t n
    if PyLong_Check(value):
        n = PyLong_AsSsize_t(value)  # -1 and OverflowError when too large
        if n >= 0:
            return n
    return _size_slow(value, name)


cdef Py_ssize_t _size_slow(object value, str name) except -1:
    if not PyLong_Check(value):
        return _size(_index(value), name)
    PyErr_Clear()
    raise ValueError(f"{name} must be >= 0 (at most MAX_OUTPUT = {SCIO_MAX_OUTPUT} "
                     f"bytes are used), got {value!r}")


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


cdef bytes _c_string(object value, str name, bint fs):
    """`value` as the bytes of a C string; ValueError if it holds a NUL,
    which C would silently cut the string at."""
    cdef bytes b = os.fsencode(value) if fs else str(value).encode("utf-8")
    if b"\0" in b:
        raise ValueError(f"{name} must not contain a NUL character, got {value!r}")
    return b


# The core's fork generation (scio_fork_generation) is bumped in the child
# of every fork() that runs the C library's fork handlers, os.fork() and a
# fork() made from C alike: a device (and its operations) opened in another
# generation belongs to the parent, whose lane threads and driver state the
# child does not have.  A global read, so the check costs no more than a
# module variable did.
if scio_watch_forks() != 0:
    raise MemoryError("cannot install the fork handler (pthread_atfork)")


cdef object _inherited_error(str what):
    return _errors.InvalidStateError(
        f"{what} was opened in the parent process and cannot be used after fork(); "
        f"open readers again in the child")


def status_name(status):
    """The core's short name of a status, or None."""
    cdef const char *n = scio_status_name(_dword(status, "status"))
    return None if n == NULL else n.decode("ascii")


_errors.use_status_names(status_name)


def list_device_paths():
    """Reader device paths the platform offers (Windows: the interface paths
    of GUID_DEVINTERFACE_SMARTCARD_READER; an empty list elsewhere)."""
    cdef size_t needed = 256
    cdef bytes buf
    cdef char *p
    cdef int n = -1
    for _ in range(4):
        buf = PyBytes_FromStringAndSize(NULL, needed)
        p = PyBytes_AS_STRING(buf)
        with nogil:
            n = scio_list_paths(p, needed, &needed)
        if n >= 0:
            return [p.decode("utf-8") for p in buf.split(b"\0")[:n]]
        if n != -1:
            break
    raise _errors.DriverError("listing reader device paths failed")


def list_pcsc_readers():
    """The names of the readers the PC/SC resource manager holds (an empty
    list when it has none).  Raises ResourceManagerNotRunningError when it
    is not running, DriverNotFoundError when no PC/SC client library is
    installed."""
    cdef size_t needed = 1024
    cdef size_t cap
    cdef bytes buf
    cdef char *p
    cdef char errbuf[512]
    cdef scio_status st = SCIO_BUFFER_TOO_SMALL
    for _ in range(4):
        cap = needed
        buf = PyBytes_FromStringAndSize(NULL, cap)
        p = PyBytes_AS_STRING(buf)
        errbuf[0] = 0
        with nogil:
            st = scio_pcsc_list_readers(p, cap, &needed, errbuf, sizeof(errbuf))
        if st == SCIO_SUCCESS:
            names = []
            for name in buf[:needed].split(b"\0"):
                if not name:
                    break
                names.append(name.decode("utf-8", "replace"))
            return names
        if st != SCIO_BUFFER_TOO_SMALL:
            break
    raise _error(st, 0, None, errbuf.decode("utf-8", "replace") or "listing PC/SC readers")



cdef class PcscReaderWatch:
    """Wait for the PC/SC resource manager's reader list to change (its
    ``\\\\?PnP?\\Notification`` pseudo reader), on a context of its own.

    :meth:`wait` blocks without the GIL; :meth:`wake` (any thread) ends the
    running wait, or the next one; :meth:`close` wakes a running wait and
    returns at once (the wait frees the watch when it returns, within a
    second even if the library dropped the cancel)."""

    cdef scio_pcsc_watch *_w
    cdef int _active
    cdef bint _closing
    # The fork generation that opened it: in a child, its context (and the
    # socket to the resource manager under it) is the parent's, so neither
    # a cancel nor a release may be sent through it.
    cdef unsigned long _generation

    def __cinit__(self):
        cdef char errbuf[512]
        cdef scio_status st
        errbuf[0] = 0
        self._generation = scio_fork_generation
        with nogil:
            st = scio_pcsc_watch_open(&self._w, errbuf, sizeof(errbuf))
        if st != SCIO_SUCCESS:
            self._w = NULL
            raise _error(st, 0, None, errbuf.decode("utf-8", "replace")
                         or "watching the PC/SC reader list")

    cdef bint _inherited(self):
        return self._generation != scio_fork_generation

    def wait(self, timeout=None, known=0):
        """Block until the reader list changes: the reader count reported
        with the change (0 where the resource manager reports none, as
        pcsc-lite).  None after `timeout` seconds (None: no bound) or once
        woken.  `known` is
        the reader count the caller last saw.  Raises NotSupportedError when
        the resource manager has no PnP pseudo reader, its own error
        (ResourceManagerNotRunningError, ...) otherwise."""
        cdef unsigned ms = SCIO_PCSC_WATCH_INFINITE
        cdef unsigned known_c
        cdef unsigned count = 0
        cdef long drv = 0
        cdef scio_status st
        cdef scio_pcsc_watch *w = self._w
        cdef double deadline = 0.0
        cdef double left
        cdef unsigned slice_ms
        if timeout is not None:
            if not timeout >= 0:
                raise ValueError(f"timeout must be >= 0 or None, not {timeout!r}")
            ms = <unsigned>min(float(timeout) * 1000.0, 0xFFFFFFFE)
        if not 0 <= known <= 0xFFFF:
            raise ValueError(f"known must be 0..65535, not {known!r}")
        known_c = known
        if w == NULL or self._closing:
            raise _errors.ClosedError("the reader-list watch is closed")
        if self._inherited():
            raise _inherited_error("this reader-list watch")
        if ms != SCIO_PCSC_WATCH_INFINITE:
            deadline = _monotonic() + ms / 1000.0
        self._active += 1
        try:
            while True:  # sliced, so that Ctrl-C is seen while blocked
                if ms == SCIO_PCSC_WATCH_INFINITE:
                    slice_ms = PCSC_WAIT_SLICE_MS
                else:
                    left = deadline - _monotonic()
                    slice_ms = (0 if left <= 0.0 else
                                min(<unsigned>(left * 1000.0) + 1, PCSC_WAIT_SLICE_MS))
                with nogil:
                    st = scio_pcsc_watch_wait(w, slice_ms, known_c, &count, &drv)
                if st != SCIO_IO_TIMEOUT or slice_ms == 0 or self._closing:
                    break
                PyErr_CheckSignals()
        finally:
            self._active -= 1
            if self._closing and self._active == 0 and self._w != NULL:
                self._w = NULL
                with nogil:
                    scio_pcsc_watch_close(w)
        if st == SCIO_SUCCESS:
            return count
        if st == SCIO_IO_TIMEOUT or st == SCIO_CANCELLED:
            return None
        raise _error(st, drv, None, "watching the PC/SC reader list")

    def wake(self):
        """End the running wait (or the next one) with None."""
        cdef scio_pcsc_watch *w = self._w
        if w != NULL and self._inherited():
            raise _inherited_error("this reader-list watch")
        if w != NULL:
            with nogil:
                scio_pcsc_watch_wake(w)

    def close(self):
        """Stop watching (idempotent); a running wait ends with None."""
        cdef scio_pcsc_watch *w = self._w
        if w == NULL or self._closing:
            return
        self._closing = True
        if self._inherited():
            self._w = NULL  # the parent's: left alone
            return
        if self._active:
            with nogil:
                scio_pcsc_watch_wake(w)
            return  # the running wait frees it as it leaves
        self._w = NULL
        with nogil:
            scio_pcsc_watch_close(w)

    @property
    def closed(self):
        return self._closing or self._w == NULL

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __dealloc__(self):
        if self._w != NULL and not self._inherited():
            scio_pcsc_watch_close(self._w)
        self._w = NULL

cdef object _log_callback = None

cdef void _log_trampoline(int priority, const char *message, void *ctx) noexcept with gil:
    try:
        if _log_callback is not None:
            _log_callback(priority, message.decode("utf-8", "replace"))
    except BaseException:
        pass  # a logging callback must never break a driver call


def set_driver_log(callback):
    """Send drivers' log_msg / log_xxd output to callback(priority, text),
    or drop it (None).  SCARDIO_DRIVER_LOG=1 prints it to stderr too."""
    global _log_callback
    _log_callback = callback
    if callback is None:
        scio_set_log(NULL, NULL)
    else:
        scio_set_log(_log_trampoline, NULL)


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


cdef object _error(scio_status st, long driver_code, object ioctl, str message=""):
    return _errors.error_for_status(st, message, driver_code=driver_code, ioctl=ioctl)


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


cdef object _loop_outcome(const scio_loop *c):
    """Device.run_loop()'s answer, from the loop's record."""
    cdef const scio_loop_step *s
    cdef unsigned i
    cdef unsigned n = c.n if c.n <= SCIO_LOOP_RECORDS else SCIO_LOOP_RECORDS
    cdef unsigned out_len
    if c.complete and c.atr_len <= SCIO_MAX_ATR and c.trail_len <= SCIO_LOOP_TRAIL:
        return (True, PyBytes_FromStringAndSize(<const char *>c.atr, c.atr_len),
                PyBytes_FromStringAndSize(<const char *>c.trail, c.trail_len))
    steps = []
    for i in range(n):
        s = &c.step[i]
        out_len = s.out_len if s.out_len <= SCIO_MAX_ATR else 0
        steps.append((s.code, (<uint32_t>s.in_).to_bytes(4, "little") if s.in_len == 4 else b"",
                      s.status, s.driver_code,
                      PyBytes_FromStringAndSize(<const char *>s.out, out_len)))
    return (False, tuple(steps), None)


cdef int _loop_input(scio_loop *c, object kind, object protocols,
                     object max_steps) except -1:
    """A loop's arguments, each a DWORD, into `c` (no timeout yet)."""
    c.kind = _dword(kind, "kind")
    c.protocols = _dword(protocols, "protocols")
    c.max_steps = _dword(max_steps, "max_steps")
    c.timeout_us = 0
    return 0


def loop_outcome(raw):
    """What run_loop() answers, from the result() of a submit_loop()
    operation (ValueError for anything else)."""
    cdef const unsigned char[:] view = raw
    if view.shape[0] != sizeof(scio_loop):
        raise ValueError(f"not a loop's record: {view.shape[0]} bytes")
    return _loop_outcome(<const scio_loop *>&view[0])


cdef class Device:
    """A reader device: IOCTLs of the smart-card contract, synchronous or
    overlapped.  Thread-safe: any method may be called from any thread."""

    cdef scio_device *_dev
    cdef scio_queue *_queue
    cdef bint _closed
    cdef unsigned long _generation  # the fork generation that opened it
    cdef readonly str library
    cdef readonly str device_name
    cdef readonly unsigned long lun
    # The share mode connections get unless they ask for another: a direct
    # reader's are always exclusive.
    cdef readonly str share
    cdef dict _ops  # op id -> weakref to its Operation: harvest finds live ones

    def __cinit__(self):
        self._dev = NULL
        self._closed = True
        self._ops = {}
        self.share = "exclusive"

    def __init__(self):
        raise TypeError("use Device.open_ifd(), Device.open_path() or Device.open_pcsc()")

    def __dealloc__(self):
        # Bounded by close_timeout_ms, without the GIL: a dropped device
        # frees its reader for the next open.  In a forked child the
        # parent's device is left alone (its threads are not here).
        cdef scio_device *d = self._dev
        self._dev = NULL
        if d != NULL and self._generation == scio_fork_generation:
            with nogil:
                scio_close(d)

    @classmethod
    def open_ifd(cls, library, device_name="", lun=0, *, poll_interval_ms=0,
                 close_timeout_ms=0):
        """Load a pcsc-lite IFD-handler driver and open one reader of it.
        `lun`, `poll_interval_ms` and `close_timeout_ms` (0: the defaults)
        are DWORDs: ValueError outside 0..MAX_DWORD."""
        cdef uint32_t lun_v = _dword(lun, "lun")
        cdef uint32_t poll_v = _dword(poll_interval_ms, "poll_interval_ms")
        cdef uint32_t close_v = _dword(close_timeout_ms, "close_timeout_ms")
        cdef Device self = Device.__new__(Device)
        cdef bytes lib_b = _c_string(library, "library", True)
        cdef bytes name_b = _c_string(device_name, "device_name", True)
        cdef const char *lib_p = lib_b
        cdef const char *name_p = name_b
        cdef scio_ifd_options opts
        cdef char errbuf[512]
        cdef scio_status st
        opts.poll_interval_ms = poll_v
        opts.close_timeout_ms = close_v
        errbuf[0] = 0
        with nogil:
            st = scio_open_ifd(lib_p, name_p, lun_v, NULL, &opts, &self._dev,
                               errbuf, sizeof(errbuf))
        if st == SCIO_NO_SUCH_DEVICE:
            # The driver could not open the channel: say who holds the reader.
            from .holders import channel_open_error
            raise channel_open_error(errbuf.decode("utf-8", "replace"),
                                     os.fsdecode(library), os.fsdecode(device_name), lun)
        if st != SCIO_SUCCESS:
            raise _error(st, 0, None, errbuf.decode("utf-8", "replace"))
        self._queue = scio_device_queue(self._dev)
        self._closed = False
        self._generation = scio_fork_generation
        self.library = os.fsdecode(library)
        self.device_name = os.fsdecode(device_name)
        self.lun = lun_v
        return self

    @classmethod
    def open_path(cls, path):
        """Open a platform reader device by path (Windows: a device interface
        path from list_device_paths(), opened for overlapped DeviceIoControl).
        Elsewhere readers are opened through their driver: open_ifd()."""
        cdef Device self = Device.__new__(Device)
        cdef bytes path_b = _c_string(path, "path", False)
        cdef const char *path_p = path_b
        cdef char errbuf[512]
        cdef scio_status st
        errbuf[0] = 0
        with nogil:
            st = scio_open_path(path_p, NULL, &self._dev, errbuf, sizeof(errbuf))
        if st != SCIO_SUCCESS:
            raise _error(st, 0, None, errbuf.decode("utf-8", "replace"))
        self._queue = scio_device_queue(self._dev)
        self._closed = False
        self._generation = scio_fork_generation
        self.library = ""
        self.device_name = str(path)
        self.lun = 0
        return self

    @classmethod
    def open_pcsc(cls, reader, *, share="shared", close_timeout_ms=0):
        """Open a reader the PC/SC resource manager holds, by its name (see
        list_pcsc_readers()).  `share` is how card connections are shared
        with other clients: "shared" or "exclusive"."""
        cdef uint32_t close_v = _dword(close_timeout_ms, "close_timeout_ms")
        cdef Device self = Device.__new__(Device)
        cdef bytes name_b
        cdef const char *name_p
        cdef scio_pcsc_options opts
        cdef char errbuf[512]
        cdef scio_status st
        if not isinstance(reader, str):
            raise TypeError(f"reader must be a str (a PC/SC reader name), got "
                            f"{type(reader).__name__}")
        if share not in ("shared", "exclusive"):
            raise ValueError(f"share must be 'shared' or 'exclusive', got {share!r}")
        name_b = _c_string(reader, "reader", False)
        name_p = name_b
        opts.share_mode = (SCIO_PCSC_SHARE_EXCLUSIVE if share == "exclusive"
                           else SCIO_PCSC_SHARE_SHARED)
        opts.close_timeout_ms = close_v
        errbuf[0] = 0
        with nogil:
            st = scio_open_pcsc(name_p, NULL, &opts, &self._dev, errbuf, sizeof(errbuf))
        if st != SCIO_SUCCESS:
            raise _error(st, 0, None, errbuf.decode("utf-8", "replace"))
        self._queue = scio_device_queue(self._dev)
        self._closed = False
        self._generation = scio_fork_generation
        self.library = ""
        self.device_name = reader
        self.lun = 0
        self.share = share
        return self

    @property
    def closed(self):
        return self._closed

    cdef int _check_open(self) except -1:
        if self._closed:
            raise _errors.ClosedError("device is closed", status=0xC000009D)
        if self._generation != scio_fork_generation:
            raise _inherited_error("this device")
        return 0

    def ioctl(self, code, input=b"", output_size=0):
        """Run one IOCTL synchronously (GIL released) and return its output.
        `code` is a DWORD; `output_size` >= 0 (above MAX_OUTPUT it is cut)."""
        cdef Py_buffer view
        cdef const char *inp
        cdef Py_ssize_t in_len
        cdef bint have_view = False
        cdef char small[SMALL_OUTPUT]
        cdef object result
        cdef PyObject *raw
        cdef char *outp
        cdef size_t out_len = 0
        cdef scio_status st
        cdef uint32_t code_v = _dword(code, "code")
        cdef Py_ssize_t out_size = _size(output_size, "output_size")
        self._check_open()
        if out_size > SCIO_MAX_OUTPUT:
            out_size = SCIO_MAX_OUTPUT
        if type(input) is bytes:
            inp = PyBytes_AS_STRING(input)
            in_len = len(<bytes>input)
        else:
            PyObject_GetBuffer(input, &view, PyBUF_SIMPLE)
            have_view = True
            inp = <const char *>view.buf
            in_len = view.len
        try:
            if out_size <= SMALL_OUTPUT:
                with nogil:
                    st = scio_ioctl(self._dev, code_v, inp, in_len,
                                    small, out_size, &out_len)
                if st != SCIO_SUCCESS:
                    raise _error(st, scio_device_driver_code(self._dev), code_v)
                return PyBytes_FromStringAndSize(small, out_len)
            result = PyBytes_FromStringAndSize(NULL, out_size)
            outp = PyBytes_AS_STRING(result)
            with nogil:
                st = scio_ioctl(self._dev, code_v, inp, in_len,
                                outp, out_size, &out_len)
            if st != SCIO_SUCCESS:
                raise _error(st, scio_device_driver_code(self._dev), code_v)
            if <Py_ssize_t>out_len != out_size:
                # Shrink in place: _PyBytes_Resize needs the only reference,
                # so move it from `result` into `raw` and back.
                raw = <PyObject *>result
                Py_INCREF(result)
                result = None
                _PyBytes_Resize(&raw, out_len)
                result = <object>raw
                Py_DECREF(result)
            return result
        finally:
            if have_view:
                PyBuffer_Release(&view)

    def submit(self, code, input=b"", output_size=0):
        """Start an overlapped IOCTL; returns an Operation at once.  The
        arguments are checked as ioctl()'s."""
        cdef Py_buffer view
        cdef scio_op *op = NULL
        cdef scio_status st
        cdef uint32_t code_v = _dword(code, "code")
        cdef Py_ssize_t out_size = _size(output_size, "output_size")
        self._check_open()
        PyObject_GetBuffer(input, &view, PyBUF_SIMPLE)
        try:
            with nogil:
                st = scio_submit(self._dev, code_v, view.buf, view.len,
                                 out_size, 0, &op)
        finally:
            PyBuffer_Release(&view)
        if st != SCIO_SUCCESS:
            raise _error(st, 0, code_v)
        return self._tracked(op, code_v)

    def ioctl_on_lane(self, code, input=b"", output_size=0, timeout=None):
        """ioctl(), run on the device's I/O lane thread (after the overlapped
        IOCTLs submitted before it) while the caller waits at most `timeout`
        seconds (None or inf: no limit; GIL released).  Then it raises
        scardio.errors.TimeoutError (status STATUS_PENDING) at once: the
        IOCTL is cancelled if it has not started, else left to finish and
        its result dropped.  Ctrl-C while waiting leaves it likewise.  The
        bounded form of a synchronous call: a hung driver holds the lane,
        not the caller, and the two threads spin briefly for each other
        (docs/architecture.md), so a sequence of them stays cheap."""
        cdef Py_buffer view
        cdef scio_op *op = NULL
        cdef scio_status st
        cdef int done = 0
        cdef int slice_ms
        cdef size_t n = 0
        cdef const uint8_t *p
        cdef double seconds = 0.0
        cdef bint forever = _forever(timeout, &seconds)
        cdef double deadline = 0.0
        cdef uint32_t code_v = _dword(code, "code")
        cdef Py_ssize_t out_size = _size(output_size, "output_size")
        self._check_open()
        if not forever:
            deadline = _monotonic() + seconds
        slice_ms = _slice_ms(forever, deadline)
        PyObject_GetBuffer(input, &view, PyBUF_SIMPLE)
        try:
            # Submit and wait in one GIL-free stretch (the core copies the input).
            with nogil:
                st = scio_submit_awaited(self._dev, code_v, view.buf, view.len, out_size, &op)
                if st == SCIO_SUCCESS and slice_ms != 0:
                    done = scio_op_await(op, slice_ms)
        finally:
            PyBuffer_Release(&view)
        if st != SCIO_SUCCESS:
            raise _error(st, 0, code_v)
        if not done:
            try:
                if not _wait_in_slices(op, forever, deadline):
                    raise _given_up(code_v)
            except BaseException:
                with nogil:
                    scio_op_release(op)  # cancels it if it has not finished
                raise
        # Done: releasing only drops a reference (no driver call, no wait).
        try:
            st = scio_op_status(op)
            if st != SCIO_SUCCESS:
                raise _error(st, scio_op_driver_code(op), code_v)
            p = scio_op_output(op, &n)
            return PyBytes_FromStringAndSize(<const char *>p, n)
        finally:
            scio_op_release(op)

    def lane_apart(self):
        """True when bounded calls from this thread spin for the I/O lane
        thread and it was last seen on another processor (or not yet):
        then a sequence costs least as one ioctl_on_lane() per IOCTL.
        False when the two share a processor (or this thread may use only
        one, or spinning is off): a whole sequence then costs least as one
        call_on_lane() (two context switches for all its IOCTLs)."""
        self._check_open()
        return scio_lane_apart(self._dev) != 0

    def call_on_lane(self, fn, timeout=None):
        """Run fn() on the device's I/O lane thread, after the overlapped
        IOCTLs submitted before it, and return its result or raise its
        exception.  Waits at most `timeout` seconds (None or inf: no limit;
        GIL released); then raises scardio.errors.TimeoutError at once and
        fn runs on, its outcome dropped (a call that has not started is
        cancelled).  Ctrl-C while waiting leaves fn likewise.  fn may make
        synchronous IOCTLs on this device: a sequence of them costs one
        thread hop, not one per IOCTL."""
        cdef scio_op *op = NULL
        cdef scio_status st
        cdef _LaneCall call
        cdef int done = 0
        cdef int slice_ms
        cdef double seconds = 0.0
        cdef bint forever = _forever(timeout, &seconds)
        cdef double deadline = 0.0
        self._check_open()
        if not callable(fn):
            raise TypeError(f"call_on_lane() needs a callable, not {type(fn).__name__}")
        call = _LaneCall.__new__(_LaneCall)
        call.fn = fn
        if not forever:
            deadline = _monotonic() + seconds
        slice_ms = _slice_ms(forever, deadline)
        Py_INCREF(call)  # lent to the core until the trampoline runs
        # Submit and wait in one GIL-free stretch: the lane thread then finds
        # the GIL free when it starts running fn.
        with nogil:
            st = scio_submit_call(self._dev, _lane_trampoline, <void *>call, 0, &op)
            if st == SCIO_SUCCESS and slice_ms != 0:
                done = scio_op_wait(op, slice_ms)
        if st != SCIO_SUCCESS:
            Py_DECREF(call)  # never called
            raise _error(st, 0, None)
        try:
            if not done and not _wait_in_slices(op, forever, deadline):
                raise _errors.TimeoutError(
                    f"no answer from the driver within {timeout} s "
                    f"(the call on the I/O lane was given up)", status=SCIO_PENDING)
            st = scio_op_status(op)
        finally:
            with nogil:
                scio_op_release(op)  # cancels it if it has not finished
        if st != SCIO_SUCCESS:
            raise _error(st, 0, None)
        err = call.error
        if err is not None:
            call.error = None
            raise err
        return call.value

    def run_loop(self, kind, protocols, max_steps, timeout=None):
        """A loop of the spec run by the core as one operation (LOOP_CONNECT:
        GET_STATE until negotiable, the ATR, SET_PROTOCOL(protocols);
        LOOP_POWER_DOWN: POWER_DOWN while GET_STATE says powered; at most
        `max_steps` GET_STATEs), following ordinary answers only.  Returns
        (True, atr, trail) once done so, where trail records its decisions
        (scio.h, "the connect and power-down loops"; atr is the connect
        loop's); else (False, steps, None) where it stopped, each step
        (code, input, status, driver_code, output) for the caller's own
        sequence to replay: it decides what the answer that stopped the
        loop means.

        `timeout` None runs it in the calling thread (GIL released).
        Otherwise it runs on the device's I/O lane (after the overlapped
        IOCTLs submitted before it), stops before any IOCTL that would
        start past `timeout` seconds (inf: never), and the caller waits at
        most that long: then TimeoutError (status STATUS_PENDING) naming
        the IOCTL in progress, which finishes unwaited, as ioctl_on_lane();
        Ctrl-C while waiting leaves it likewise."""
        cdef scio_loop c
        _loop_input(&c, kind, protocols, max_steps)
        return self._run_loop(&c, timeout)

    cdef object _run_loop(self, scio_loop *c, object timeout):
        """run_loop() of the loop in `c` (its arguments filled in)."""
        cdef scio_op *op = NULL
        cdef scio_status st
        cdef int done = 0
        cdef int slice_ms
        cdef size_t n = 0
        cdef const uint8_t *p
        cdef double seconds = 0.0
        cdef bint forever
        cdef double deadline = 0.0
        self._check_open()
        if timeout is None:
            with nogil:
                scio_loop_run(self._dev, c, NULL)
            return _loop_outcome(c)
        forever = _forever(timeout, &seconds)
        if forever:
            slice_ms = WAIT_SLICE_MS
        else:
            deadline = _monotonic() + seconds
            c.timeout_us = <int64_t>(seconds * 1e6) + 1
            # a far deadline needs no second look at the clock
            slice_ms = (WAIT_SLICE_MS if seconds * 1000.0 >= WAIT_SLICE_MS
                        else _slice_ms(forever, deadline))
        with nogil:
            st = scio_submit_loop(self._dev, c, 1, 0, &op)
            if st == SCIO_SUCCESS and slice_ms != 0:
                done = scio_op_await(op, slice_ms)
        if st != SCIO_SUCCESS:
            raise _error(st, 0, None)
        try:
            if not done and not _wait_in_slices(op, forever, deadline):
                raise _given_up(scio_loop_ioctl(op))
            st = scio_op_status(op)
            if st != SCIO_SUCCESS:
                raise _error(st, 0, None)
            p = scio_op_output(op, &n)
            if n != sizeof(scio_loop):
                raise _errors.DriverDataError("the loop returned no record")
            return _loop_outcome(<const scio_loop *>p)
        finally:
            with nogil:
                scio_op_release(op)  # cancels it if it has not finished

    def submit_loop(self, kind, protocols, max_steps, timeout=None):
        """run_loop() overlapped: an Operation at once, completing into the
        queue like submit()'s; its result() is the loop's record, which
        loop_outcome() reads as run_loop() answers.  The loop stops before
        any IOCTL that would start past `timeout` seconds (None or inf:
        never) and before the next one once the operation is cancelled."""
        cdef scio_loop c
        cdef scio_op *op = NULL
        cdef scio_status st
        cdef double seconds = 0.0
        _loop_input(&c, kind, protocols, max_steps)
        if not _forever(timeout, &seconds):
            c.timeout_us = <int64_t>(seconds * 1e6) + 1
        self._check_open()
        with nogil:
            st = scio_submit_loop(self._dev, &c, 0, 0, &op)
        if st != SCIO_SUCCESS:
            raise _error(st, 0, None)
        return self._tracked(op, 0)

    cdef Operation _tracked(self, scio_op *op, uint32_t code):
        """The Operation of a submitted `op`, known to harvest()."""
        cdef Operation o = Operation.__new__(Operation)
        o._op = op
        o._generation = self._generation
        o.device = self
        o.code = code
        self._ops[scio_op_id(op)] = PyWeakref_NewRef(o, None)
        return o

    def fileno(self):
        """A descriptor that is readable while completions wait (-1 where
        the platform has none)."""
        self._check_open()
        return scio_queue_fd(self._queue)

    def waitable(self):
        """The completion queue's waitable, as an int: signalled exactly
        while completions (or a wake()) wait to be harvested.  A descriptor
        on POSIX (fileno(): select, poll, loop.add_reader); on Windows an
        event HANDLE (WaitForSingleObject / WaitForMultipleObjects).  The
        device owns it: never read, reset or close it; valid until close()."""
        cdef void *h
        self._check_open()
        h = scio_queue_handle(self._queue)
        if h != NULL:
            return <uintptr_t>h
        return scio_queue_fd(self._queue)

    def wake(self):
        """Signal the waitable until the next harvest(), which consumes the
        wake-up (returning whatever completed, possibly nothing): how another
        thread stops a waiter blocked on waitable()."""
        self._check_open()
        scio_queue_wake(self._queue)

    def harvest(self, timeout=0.0):
        """Operations completed since the last harvest, oldest first.  Waits
        up to `timeout` seconds (None or inf: until one completes, a wake()
        or Ctrl-C; GIL released) for the first one."""
        cdef scio_completion c
        cdef int rc
        cdef double seconds = 0.0
        cdef bint forever = _forever(timeout, &seconds)
        cdef double deadline = 0.0
        cdef int slice_ms
        done = []
        self._check_open()
        if not forever and seconds <= 0.0:
            # A poll (an event loop's reader callback): a pop that does not
            # wait only takes the queue's lock, which no holder keeps while
            # it needs the GIL, so the GIL stays held (no hand-off per pop).
            rc = scio_queue_pop(self._queue, 0, &c)
        else:
            if not forever:
                deadline = _monotonic() + seconds
            while True:  # sliced, so that Ctrl-C is seen while blocked
                slice_ms = _slice_ms(forever, deadline)
                with nogil:
                    rc = scio_queue_pop(self._queue, slice_ms, &c)
                if rc != 0 or self._closed or (not forever and _monotonic() >= deadline):
                    break
                PyErr_CheckSignals()
        while rc == 1:
            ref = self._ops.pop(c.op_id, None)
            if ref is not None:
                op = ref()
                if op is not None:
                    done.append(op)
            rc = scio_queue_pop(self._queue, 0, &c)  # does not wait: as above
        return done

    def cancel_all(self):
        """Cancel every pending operation (returns at once)."""
        self._check_open()
        with nogil:
            scio_cancel_all(self._dev)

    def close(self):
        """Cancel every pending operation, wait for them (bounded), release
        the driver channel.  Idempotent."""
        if self._dev == NULL or self._closed:
            return
        self._closed = True
        if self._generation != scio_fork_generation:
            # Inherited through fork(): the driver state is the parent's.
            self._dev = NULL
            return
        with nogil:
            scio_shutdown(self._dev)

    def __enter__(self):
        self._check_open()
        return self

    def __exit__(self, exc_type, exc, tb):
        self.close()

    def __repr__(self):
        state = "closed" if self._closed else "open"
        return (f"<scardio.Device {self.library!r} {self.device_name!r} "
                f"lun={self.lun:#x} {state}>")


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
    cdef dict _handlers  # op id -> (Operation, callback)
    cdef unsigned long _generation
    cdef object _log

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

    def submit(self, Device device, code, callback):
        """Start an overlapped IOCTL (no input, no output) on `device` whose
        completion comes here: :meth:`dispatch` calls ``callback(op)`` once
        it completed.  Returns the Operation."""
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
        self._handlers[scio_op_id(op)] = (o, callback)
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
                try:
                    (<object>entry[1])(entry[0])
                except Exception:  # one broken callback must not starve the rest
                    if self._log is None:
                        import logging
                        self._log = logging.getLogger("scardio.completions")
                    self._log.exception("completion callback failed for %r", entry[0])
            rc = scio_queue_pop(self._q, 0, &c)  # does not wait
        return ran


# -- Card.transmit's fast path ------------------------------------------------
# scardio.card.Card derives from CardBase.  CardBase.transmit() does, in C,
# what the common call needs: a short APDU given as bytes, no options, a
# reader whose device is a Device: the reader lock, the I/O header and the
# APDU in one stack buffer, one TRANSMIT without the GIL, the Response built
# in place.  Anything else (another APDU form, a timeout, options, a traced
# or stand-in device, an APDU the length checks may refuse, an extended
# length) goes to Card._transmit_py, the full path, so that every error and
# message stays the one that path gives.

cdef enum:
    # The I/O header plus the longest APDU taken here (a short case 4 is at
    # most 261 bytes); the rest goes the full path.
    FAST_INPUT = 512
    IO_HEADER = SCIO_IO_REQUEST_SIZE
    MAX_T0_APDU = 4 + 1 + 255 + 1
    # Room for a short answer: the I/O header, 256 data bytes, SW1 SW2.
    SHORT_OUT = IO_HEADER + 256 + 2
    MAX_OUT = IO_HEADER + 65536 + 2

cdef extern from "Python.h":
    ctypedef struct PyTypeObject
    PyObject *PyType_GenericAlloc(PyTypeObject *type, Py_ssize_t nitems) except NULL
    void PyTuple_SET_ITEM(PyObject *p, Py_ssize_t pos, PyObject *o)

cdef extern from "pythread.h":
    ctypedef void *PyThread_type_lock
    PyThread_type_lock PyThread_allocate_lock()
    void PyThread_free_lock(PyThread_type_lock lock)
    int PyThread_acquire_lock_timed(PyThread_type_lock lock, long long microseconds,
                                    int intr_flag) nogil
    void PyThread_release_lock(PyThread_type_lock lock) nogil
    unsigned long PyThread_get_thread_ident()
    long long PY_TIMEOUT_MAX
    enum:
        PY_LOCK_ACQUIRED
        PY_LOCK_INTR


cdef struct _LockWaiter:
    # A thread waiting for a ReaderLock, on its own stack, linked into the
    # lock's queue while it waits (touched only with the GIL held).
    PyThread_type_lock wake  # held until a release hands the lock over
    unsigned long ident
    bint granted
    _LockWaiter *next


cdef class ReaderLock:
    """A reentrant lock with :class:`threading.RLock`'s interface (acquire
    with `blocking` and `timeout`, release, the context manager) that the
    binding takes without a Python call: a Reader's lock, shared by the
    transmit fast path and every Python caller.  A blocked acquire releases
    the GIL and runs signal handlers (Ctrl-C) as RLock's does.

    Its owner, count and queue of waiters are guarded by the GIL, so taking
    a free lock and giving it back touch no platform lock (CPython
    3.10-3.12's reads the clock on every attempt, even one that does not
    wait).  A thread that has to wait sleeps on a platform lock of its own,
    in a queue; the release that frees the lock hands it to the first
    waiter (it stays held throughout), so a thread taking it again at once
    cannot overtake the others."""

    cdef unsigned long _owner
    cdef unsigned long _count
    cdef _LockWaiter *_head
    cdef _LockWaiter *_tail

    def __cinit__(self):
        self._owner = 0
        self._count = 0
        self._head = NULL
        self._tail = NULL

    cdef bint _acquire(self, long long timeout_us) except -1:
        """Take the lock (timeout_us < 0: wait forever, 0: do not wait)."""
        cdef unsigned long me = PyThread_get_thread_ident()
        if self._count:
            if self._owner == me:
                if self._count == <unsigned long>-1:
                    raise OverflowError("Internal lock count overflowed")
                self._count += 1
                return True
        elif self._head == NULL:
            self._owner = me
            self._count = 1
            return True
        if timeout_us == 0:
            return False
        return self._wait(me, timeout_us)

    cdef bint _wait(self, unsigned long me, long long timeout_us) except -1:
        """Queue up and sleep until a release hands the lock over."""
        cdef _LockWaiter w
        cdef _LockWaiter *p
        cdef int r
        cdef long long left = -1
        cdef double deadline = 0.0
        w.wake = PyThread_allocate_lock()
        if w.wake == NULL:
            raise MemoryError("cannot allocate a lock")
        PyThread_acquire_lock_timed(w.wake, 0, 0)  # new: always free
        w.ident = me
        w.granted = False
        w.next = NULL
        if self._tail == NULL:
            self._head = &w
        else:
            self._tail.next = &w
        self._tail = &w
        if timeout_us > 0:
            deadline = _monotonic() + timeout_us / 1e6
        try:
            while not w.granted:
                if timeout_us > 0:
                    left = <long long>((deadline - _monotonic()) * 1e6)
                    if left <= 0:
                        break
                with nogil:
                    r = PyThread_acquire_lock_timed(w.wake, left, 1)
                if r == PY_LOCK_INTR and not w.granted:
                    PyErr_CheckSignals()  # a handler's exception propagates
        except BaseException:
            if w.granted:
                self._release()  # handed over as we were interrupted: pass it on
            raise
        finally:
            if not w.granted:  # still queued: leave the queue
                p = self._head
                if p == &w:
                    self._head = w.next
                    p = NULL
                else:
                    while p.next != &w:
                        p = p.next
                    p.next = w.next
                if self._tail == &w:
                    self._tail = p
            # held (by us) or released (by the hand-over): free it either way
            PyThread_acquire_lock_timed(w.wake, 0, 0)
            PyThread_release_lock(w.wake)
            PyThread_free_lock(w.wake)
        return w.granted

    cdef int _release(self) except -1:
        cdef _LockWaiter *w
        if not self._count or self._owner != PyThread_get_thread_ident():
            raise RuntimeError("cannot release un-acquired lock")
        self._count -= 1
        if not self._count:
            w = self._head
            if w == NULL:
                self._owner = 0
            else:  # hand it over: it stays held
                self._head = w.next
                if self._head == NULL:
                    self._tail = NULL
                self._owner = w.ident
                self._count = 1
                w.granted = True
                PyThread_release_lock(w.wake)
        return 0

    def acquire(self, blocking=True, timeout=-1):
        """As RLock.acquire: wait at most `timeout` seconds (-1: forever)
        unless `blocking` is false; True once held (again, by its owner)."""
        cdef double t = PyFloat_AsDouble(timeout)  # TypeError for a non-number
        cdef double us
        if not blocking and t != -1:
            raise ValueError("can't specify a timeout for a non-blocking call")
        if t != t:
            raise ValueError("Invalid value NaN (not a number)")
        if t < 0 and t != -1:
            raise ValueError("timeout value must be positive")
        if not blocking:
            return self._acquire(0)
        if t == -1:
            return self._acquire(-1)
        us = t * 1e6
        if us > PY_TIMEOUT_MAX:
            raise OverflowError("timeout value is too large")
        return self._acquire(<long long>us)

    def release(self):
        """As RLock.release: RuntimeError unless the calling thread holds it."""
        self._release()

    def _is_owned(self):
        return self._count != 0 and self._owner == PyThread_get_thread_ident()

    def __enter__(self):
        return self._acquire(-1)

    def __exit__(self, exc_type, exc, tb):
        self._release()

    def __repr__(self):
        held = f"locked by {self._owner} {self._count} time(s)" if self._count else "unlocked"
        return f"<scardio.ReaderLock {held}>"


cdef object _response_type = None  # scardio.sequences.transmit.Response
cdef bint _response_in_place = False  # its layout is a plain 3-tuple's
cdef object _split_response = None


cdef int _load_response() except -1:
    global _response_type, _response_in_place, _split_response
    from .sequences.transmit import Response, split_response
    # Filled in place only if it adds nothing to a tuple's layout (a
    # NamedTuple has empty __slots__), and before 3.14, whose tuples cache
    # their hash in a field only tuple's own constructor sets; otherwise
    # through tuple.__new__.
    import sys
    _response_in_place = (sys.version_info < (3, 14) and
                          Response.__basicsize__ == tuple.__basicsize__ and
                          Response.__itemsize__ == tuple.__itemsize__ and
                          Response.__dictoffset__ == 0 and
                          Response.__weakrefoffset__ == 0)
    _split_response = split_response
    _response_type = Response
    return 0


cdef object _new_response(const char *out, size_t n):
    """Response(data, sw1, sw2) from TRANSMIT's output of n >= 10 bytes."""
    cdef object data = PyBytes_FromStringAndSize(out + IO_HEADER, n - IO_HEADER - 2)
    cdef object sw1 = <uint8_t>out[n - 2]
    cdef object sw2 = <uint8_t>out[n - 1]
    cdef PyObject *r
    if not _response_in_place:
        return tuple.__new__(_response_type, (data, sw1, sw2))
    r = PyType_GenericAlloc(<PyTypeObject *>_response_type, 3)
    Py_INCREF(data)
    PyTuple_SET_ITEM(r, 0, <PyObject *>data)
    Py_INCREF(sw1)
    PyTuple_SET_ITEM(r, 1, <PyObject *>sw1)
    Py_INCREF(sw2)
    PyTuple_SET_ITEM(r, 2, <PyObject *>sw2)
    result = <object>r
    Py_DECREF(result)  # <object> took a reference of its own
    return result


cdef class SessionBase  # below: the session's bookkeeping that connect calls


cdef class CardBase:
    """The base of :class:`scardio.card.Card`: the attributes its transmit
    fast path reads, and that path (see Card.transmit)."""

    cdef public object reader
    cdef public object protocol
    cdef public object _gone  # None while connected, else why not
    cdef public object _header  # the I/O header (SCARD_IO_REQUEST) as bytes
    # The rest of what Card.__init__ sets: fields, so that a card needs no
    # instance dict (connect makes one per call).
    cdef public object atr_bytes
    cdef public object atr
    cdef public object atr_error
    cdef public object connect_actions
    cdef public object auto_get_response
    cdef public object auto_resend
    cdef public object _share  # known from the connect, else asked once (None)

    def _init(self, reader, atr, protocol, actions, auto_get_response, auto_resend):
        """Card.__init__ (which documents it)."""
        self._setup(reader, atr, protocol, actions, auto_get_response, auto_resend)

    cpdef _mark_gone(self, why):
        """The card is dead (disconnected, removed, reset, reader closed):
        the first reason given is kept."""
        if self._gone is None:
            self._gone = why

    def _release(self, disposition):
        """Card.disconnect() with its disposition checked (a Disposition)."""
        cdef object lock = self.reader._lock
        if type(lock) is ReaderLock:
            (<ReaderLock>lock)._acquire(-1)
        else:
            lock.acquire()
        try:
            if self._gone is None:
                self._disconnected(disposition)
        finally:
            if type(lock) is ReaderLock:
                (<ReaderLock>lock)._release()
            else:
                lock.release()

    cdef int _disconnected(self, disposition) except -1:
        """The disconnect, with the reader lock held: what the session says
        (scardio.session), then the power-down timer it asks for."""
        cdef SessionBase session
        reader = self.reader
        session = reader.session
        if session.disconnect_needs_io(disposition):
            if _Card is None:
                _load_connect()
            delay = _run_sync(reader.device, session.disconnect_steps(self, disposition))
        else:
            delay = session.release_card(self, disposition)
        if delay is not None:
            session.arm_timer(reader._power_down_timer.arm, delay)
        return 0

    cdef int _setup(self, reader, atr, protocol, actions, auto_get_response,
                    auto_resend) except -1:
        global _last_atr_bytes, _last_atr
        if _Card is None:
            _load_connect()
        self.reader = reader
        atr = atr if type(atr) is bytes else bytes(atr)
        self.atr_bytes = atr
        protocol = protocol if type(protocol) is _Protocol else _Protocol(protocol)
        self.protocol = protocol
        self.connect_actions = list(actions) if actions else []
        self.auto_get_response = auto_get_response
        self.auto_resend = auto_resend
        self.atr_error = None
        if atr == _last_atr_bytes:  # (no Python code runs in between: no race)
            self.atr = _last_atr
        else:
            try:
                # the same card connects again and again: parse its ATR once
                self.atr = _parse_atr_cached(atr)
            except _ATRError as exc:  # a malformed ATR does not stop the card working
                self.atr = None
                self.atr_error = exc
            else:
                _last_atr_bytes, _last_atr = atr, self.atr
        self._gone = None
        header = _io_headers.get(protocol)
        self._header = header if header is not None else _io_header(protocol)
        return 0

    def transmit(self, apdu, *, auto_get_response=None, auto_resend=None, timeout=None):
        """Send a command APDU: bytes, hex text, scardio.apdu.APDU or a list
        of ints 0..255 (as pyscard takes it).  Returns a
        :class:`~scardio.sequences.transmit.Response`, which unpacks as
        ``data, sw1, sw2``; on 61xx / 6Cxx the GET RESPONSE / re-send
        follow-ups run unless turned off.  `timeout` (seconds) bounds the
        whole exchange."""
        cdef Py_ssize_t n
        cdef const char *raw
        cdef object header, reader, device, lock
        if self.reader is None:  # made with __new__, never connected
            raise _errors.InvalidStateError(
                "not a connected card: cards come from Reader.connect()")
        if (type(apdu) is not bytes or timeout is not None or auto_get_response is not None
                or auto_resend is not None):
            return self._transmit_py(apdu, auto_get_response, auto_resend, timeout)
        n = len(<bytes>apdu)
        raw = PyBytes_AS_STRING(apdu)
        header = self._header
        reader = self.reader
        device = reader.device
        # What the length checks pass at once, as a short APDU (anything
        # after a 00 fifth byte is an extended length: the large buffer).
        if (not (4 <= n <= 5 or (5 < n <= FAST_INPUT - IO_HEADER and raw[4] != 0))
                or type(device) is not Device or type(header) is not bytes
                or len(<bytes>header) != IO_HEADER
                or (n > MAX_T0_APDU and self.protocol == SCIO_PROTOCOL_T0)):
            return self._transmit_py(apdu, None, None, None)
        if _response_type is None:
            _load_response()
        lock = reader._lock
        if type(lock) is not ReaderLock:
            return self._transmit_py(apdu, None, None, None)
        (<ReaderLock>lock)._acquire(-1)
        try:
            if self._gone is not None:
                self._check()  # raises
            try:
                return self._transmit_short(<Device>device, <bytes>header, <bytes>apdu)
            except (_errors.NoCardError, _errors.InvalidStateError) as exc:
                reader.session.transmit_failed(self, exc)
                raise
        finally:
            (<ReaderLock>lock)._release()

    cdef object _transmit_short(self, Device device, bytes header, bytes apdu):
        """TRANSMIT (the reader lock held), then the follow-ups."""
        cdef char inp[FAST_INPUT]
        cdef char out[SHORT_OUT]
        cdef size_t n = len(apdu)
        cdef size_t out_len = 0
        cdef scio_status st
        cdef object resp
        cdef uint8_t sw1 = 0  # set on every path that reaches its test
        device._check_open()
        memcpy(inp, PyBytes_AS_STRING(header), IO_HEADER)
        memcpy(inp + IO_HEADER, PyBytes_AS_STRING(apdu), n)
        with nogil:
            st = scio_ioctl(device._dev, SCIO_IOCTL_TRANSMIT, inp, IO_HEADER + n,
                            out, SHORT_OUT, &out_len)
        if st != SCIO_SUCCESS:
            exc = _error(st, scio_device_driver_code(device._dev), SCIO_IOCTL_TRANSMIT)
            if not isinstance(exc, _errors.BufferTooSmallError):
                raise exc
            resp = device.ioctl(SCIO_IOCTL_TRANSMIT, header + apdu, MAX_OUT)
            if len(<bytes>resp) < IO_HEADER + 2:
                _split_response(resp)  # raises: no status word
            sw1 = <uint8_t>PyBytes_AS_STRING(resp)[len(<bytes>resp) - 2]
            resp = _new_response(PyBytes_AS_STRING(resp), len(<bytes>resp))
        elif out_len < IO_HEADER + 2:
            _split_response(PyBytes_FromStringAndSize(out, out_len))  # raises
        else:
            sw1 = <uint8_t>out[out_len - 2]
            resp = _new_response(out, out_len)
        if sw1 == 0x61 or sw1 == 0x6C:
            return self._follow_up(apdu, resp)
        return resp


# ---- the reader API's connect (scardio.reader, scardio.card) -----------------
# Reader.connect() and the cards it makes run here: a connect / disconnect
# cycle on a fast driver costs a few microseconds, and the interpreter's
# share of it was most of them.  The session's rules stay in
# scardio.session (called from here); the loops' in scardio.sequences.

cdef object _Card = None  # scardio.card.Card, and the rest _load_connect() fills
cdef object _Protocol, _ATRError, _parse_atr_cached, _io_headers, _io_header
cdef object _share_value, _deadline_after, _connect_loop, _connect_steps
cdef object _run_sync, _sequences, _share_name, _connect_trails
# The last ATR parsed and the connect loop last asked for: a reader's
# connects repeat both (parse_atr_cached and connect_loop remember more).
cdef object _last_atr_bytes = None
cdef object _last_atr = None
cdef object _last_protocols = None
cdef object _last_max_steps = None
cdef object _last_loop = None
cdef double _INF = float("inf")


cdef int _load_connect() except -1:
    global _Card, _Protocol, _ATRError, _parse_atr_cached, _io_headers, _io_header
    global _share_value, _deadline_after, _connect_loop, _connect_steps, _run_sync, _sequences
    global _share_name, _connect_trails
    from .atr import ATRError, parse_atr_cached
    from .card import Card, _IO_HEADERS, _io_header as io_header
    from .constants import Protocol
    from .runner import run_sync
    from . import sequences
    from .sequences.connect import _TRAILS, connect_loop, connect_steps
    from .sequences.sharing import share_name, share_value
    from .session import deadline_after
    _Protocol, _ATRError, _parse_atr_cached = Protocol, ATRError, parse_atr_cached
    _io_headers, _io_header = _IO_HEADERS, io_header
    _share_value, _share_name, _deadline_after = share_value, share_name, deadline_after
    _connect_loop, _connect_steps, _connect_trails = connect_loop, connect_steps, _TRAILS
    _run_sync, _sequences = run_sync, sequences
    _Card = Card
    return 0


def run_loop_on(device, loop, deadline=None):
    """scardio.runner.run_loop (which documents it)."""
    if _Card is None:
        _load_connect()
    return _run_loop_on(device, loop, deadline)


cdef object _run_loop_on(object device, object loop, object deadline,
                         bint as_run=False):
    """run_loop_on(); with `as_run`, a loop the core completed answers
    (atr, trail) as the core gave them instead of loop.result's answer
    (every other answer is the same)."""
    cdef scio_loop c
    cdef double left
    kind, protocols, max_steps, steps, result = loop
    if type(device) is Device:
        run = None
    else:
        run = getattr(device, "run_loop", None)
        if run is None:  # a device without it: the loop's own steps
            return _run_sync(device, steps(deadline), deadline=deadline)
    if deadline is None:
        timeout = None
    else:
        left = deadline - _monotonic()
        if left <= 0:
            raise _errors.TimeoutError("timed out before the loop started",
                                       status=SCIO_PENDING)
        timeout = left
    if run is None:
        _loop_input(&c, kind, protocols, max_steps)
        done, got, trail = (<Device>device)._run_loop(&c, timeout)
    elif timeout is None:
        done, got, trail = run(kind, protocols, max_steps)
    else:
        done, got, trail = run(kind, protocols, max_steps, timeout)
    if done:
        return (got, trail) if as_run else result(got, trail)
    # (looked up here: the uncommon path, and tests watch it)
    return _run_sync(device, _sequences.replayed(steps(deadline), got), deadline=deadline)


def reader_connect(reader, protocols, timeout, max_steps, auto_get_response, auto_resend,
                   share):
    """Reader.connect() (which documents it), with its arguments."""
    global _last_protocols, _last_max_steps, _last_loop
    cdef CardBase card
    cdef SessionBase session
    if _Card is None:
        _load_connect()
    if share is not None:
        _share_value(share)  # ValueError before the lock and any IOCTL
    if (type(timeout) is float or type(timeout) is int) and 0 <= timeout < _INF:
        deadline = _monotonic() + timeout
    else:
        deadline = _deadline_after(timeout)
    lock = reader._lock
    if type(lock) is ReaderLock:
        if not (<ReaderLock>lock)._acquire(0):
            reader._acquire_until(deadline)
    elif not lock.acquire(False):
        reader._acquire_until(deadline)
    try:
        session = reader.session
        started, share_code = session.begin_connect(share)
        # Only the IOCTLs run bounded (on the device's lane when there is a
        # deadline); the session changes here, under the lock.
        if share_code is not None:
            loop = None
        elif protocols is _last_protocols and max_steps is _last_max_steps:
            loop = _last_loop  # the same arguments (objects): the same Loop
        else:
            loop = _connect_loop(protocols, max_steps)
            if loop is not None and type(max_steps) is int:
                _last_protocols, _last_max_steps, _last_loop = protocols, max_steps, loop
        if loop is not None:  # the loop alone: no sequence around it
            conn = _run_loop_on(reader.device, loop, deadline, True)
        else:
            conn = _run_sync(reader.device, _connect_steps(
                protocols, max_steps=max_steps, deadline=deadline, share=share_code),
                deadline=deadline)
        if type(conn) is tuple:  # the core ran the loop to its end: (atr, trail)
            atr, trail = conn
            # what the trail says, as connected() read it before (the
            # sequence's own memo; it reads a trail it has not seen)
            known = _connect_trails.get(trail)
            if known is None:
                conn = loop.result(atr, trail)
            else:
                conn = None  # a Connected of no share asked: the card says it all
                actions, protocol = known
        if conn is not None:
            atr, protocol, actions = conn.atr, conn.protocol, conn.actions
        card = CardBase.__new__(_Card)
        card._setup(reader, atr, protocol, actions, auto_get_response, auto_resend)
        return session.finish_connect(conn, card, started)
    finally:
        if type(lock) is ReaderLock:
            (<ReaderLock>lock)._release()
        else:
            lock.release()


# ---- the session's connect and disconnect bookkeeping -----------------------
# Dispositions and share modes (scardio.constants): their values are the
# contract's.
cdef enum:
    _LEAVE = 0
    _UNPOWER = 2
    _SHARE_DEFAULT = 0
    _SHARE_UNKNOWN = -1  # a SET_SHARE_MODE whose answer was not seen


cdef class SessionBase:
    """The base of :class:`scardio.session.ReaderSession`: the state every
    connect and disconnect reads and the methods that change it, so that the
    reader API's connect (reader_connect, CardBase._release) calls them
    without the interpreter.  ReaderSession documents them; nothing else
    should use this class."""

    cdef public bint closed
    cdef public object card  # the card connected through this reader (or the last one)
    cdef public object timer  # the runtime's handle of the armed power-down timer
    cdef public unsigned long long _timer_token
    cdef public list _listeners
    # The SET_SHARE_MODE value last put in force and the mode it answered
    # (see ReaderSession.__init__).
    cdef public object _share_set
    cdef public int _share_in_force
    cdef public object transaction  # the card whose transaction is open
    cdef public object _power_down_timeout

    cpdef tuple begin_connect(self, share=None):
        """Before the connect loop: refuse on a closed reader or a connected
        card; cancel the timer (a reconnect reuses the powered card).
        Returns the start time, for ``finish_connect``, and what
        ``share_for_connect`` answers for `share`."""
        if self.closed:
            self.check_open()  # raises
        card = self.card
        if card is not None and (
                (<CardBase>card)._gone is None if isinstance(card, CardBase) else card.connected):
            raise _errors.InvalidStateError(
                f"a card is already connected through {self.name!r}; "
                "disconnect it first")
        if self.timer is None:
            self._timer_token += 1  # as cancel_timer: a late timer gives up
        else:
            self.cancel_timer("reconnect")
        if share is None and self._share_set is None:
            return _monotonic(), None  # the device's own mode, never asked for another
        return _monotonic(), self.share_for_connect(share)

    cpdef object finish_connect(self, conn, card, double started):
        """After the connect loop: `card`, made of `conn` (a Connected;
        None: one that asked no share mode), goes into the slot (and a
        "connect" event out, of the card's ATR, protocol and actions)."""
        if _Card is None:
            _load_connect()
        if conn is not None and conn.share is not None:
            self._share_set, self._share_in_force = conn.share_asked, conn.share
        if self._share_set is not None and self._share_set != _SHARE_UNKNOWN:
            card._share = _share_name(self._share_in_force)
        self.card = card
        if self._listeners:
            self.emit("connect", protocol=card.protocol.name, atr=card.atr_bytes.hex().upper(),
                      actions=list(card.connect_actions),
                      ms=(_monotonic() - started) * 1000.0)
        return card

    cpdef object release_card(self, card, disposition):
        """The bookkeeping of a disconnect: `card` is gone, the slot empty,
        listeners told.  Returns the seconds of power-down timer to arm
        afterwards (None: none; see arm_timer), which is all there is to a
        disconnect when ``disconnect_needs_io`` is false."""
        card._mark_gone("disconnected")
        if self.card is card:
            self.card = None
        if self._listeners:
            self.emit("disconnect", disposition=disposition.name)
        t = self._power_down_timeout
        if t is None or t == 0 or disposition == _UNPOWER or self.closed:
            return None  # None: never (the caller keeps the card powered)
        return t

    cpdef bint disconnect_needs_io(self, disposition) except -1:
        """Whether a disconnect with `disposition` runs IOCTLs
        (``disconnect_steps``): UNPOWER, RESET, and LEAVE with a power-down
        timeout of 0; ending an open transaction or a share mode asked for
        the connection; nothing on a closed reader."""
        if self.closed:
            return False
        share = self._share_set
        return (disposition != _LEAVE or self._power_down_timeout == 0
                or self.transaction is not None
                or (share is not None and share != _SHARE_DEFAULT))

    cpdef arm_timer(self, schedule, delay):
        """Arm the power-down timer: `schedule(delay, token)` starts the
        runtime's timer, which runs ``timer_fired_steps`` with that token
        after `delay` seconds, and returns its handle."""
        self._timer_token += 1
        self.timer = schedule(delay, self._timer_token)

    cpdef cancel_timer(self, why):
        """Disarm the power-down timer (a timer already running its
        callback gives up: the token moves on); a "power_down_cancelled"
        event says `why` when one was armed."""
        timer = self.timer
        self.timer = None
        self._timer_token += 1
        if timer is not None:
            timer.cancel()
            if self._listeners:
                self.emit("power_down_cancelled", reason=why)
