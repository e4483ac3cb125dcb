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

