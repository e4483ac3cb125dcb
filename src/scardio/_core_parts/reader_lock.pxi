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

