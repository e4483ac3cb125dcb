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
    # A tracking request wait_tracking() cancelled at its timeout without
    # waiting for the driver to let it go: the next wait_tracking() waits
    # for that first (within its own timeout), not refused as busy.
    cdef object _tracking_leftover

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

    def wait_tracking(self, code, timeout=None):
        """IS_PRESENT / IS_ABSENT (`code`) to completion: returns once the
        request completed, waiting at most `timeout` seconds (None or inf:
        no limit; GIL released), then raises scardio.errors.TimeoutError
        (status STATUS_PENDING) with the request cancelled.

        Where the backend can bound its tracking wait (backend.h:
        can_bound_tracking) the wait runs in the calling thread, with no
        hand-off to the tracking lane: an event costs what the driver's own
        clients pay.  In the main thread it runs in slices of at most
        WAIT_SLICE_MS, between which a signal handler runs (Ctrl-C raises
        KeyboardInterrupt, nothing left pending); in another, where no
        handler runs, in slices of a minute.  The backend carries the card
        events it saw from slice to slice, so none is lost between two.
        Elsewhere, and once the backend can no longer bound it (its driver
        stopped answering), the request goes to the tracking lane and is
        waited for as Operation.wait().

        Raises DeviceBusyError (another tracking request is pending: one
        per device), CancelledError (cancel_all() or close() from another
        thread ended it), ValueError for another code."""
        cdef uint32_t code_v = _dword(code, "code")
        cdef double seconds = 0.0
        cdef bint forever = _forever(timeout, &seconds)
        cdef double deadline = 0.0
        cdef double left
        cdef int64_t slice_us
        cdef double slice_s
        cdef unsigned wait = 0
        cdef scio_status st
        self._check_open()
        if code_v != SCIO_IOCTL_IS_PRESENT and code_v != SCIO_IOCTL_IS_ABSENT:
            raise ValueError(f"wait_tracking() takes IS_PRESENT or IS_ABSENT, not {code_v:#x}")
        from threading import get_ident, main_thread
        slice_s = (WAIT_SLICE_MS if get_ident() == main_thread().ident
                   else TRACK_SLICE_OFF_MAIN_MS) / 1000.0
        if not forever:
            deadline = _monotonic() + seconds
        leftover, self._tracking_leftover = self._tracking_leftover, None
        if leftover is not None:
            try:
                leftover.wait(None if forever else max(0.0, deadline - _monotonic()))
            except _errors.TimeoutError:
                self._tracking_leftover = leftover  # still in the driver: busy below
            except _errors.ScardioError:
                pass  # the cancel it was given
        while True:
            if forever:
                slice_us = <int64_t>(slice_s * 1e6)
            else:
                left = deadline - _monotonic()
                # at least one look, even past the deadline (timeout 0)
                slice_us = (<int64_t>(min(left, slice_s) * 1e6) + 1 if left > 0.0 else 1)
            with nogil:
                st = scio_track_slice(self._dev, code_v, slice_us, &wait)
            if st == SCIO_SUCCESS:
                return None
            if st == SCIO_NOT_SUPPORTED:
                break
            if st != SCIO_IO_TIMEOUT:
                raise _error(st, scio_device_driver_code(self._dev), code_v)
            if not forever and _monotonic() >= deadline:
                from .constants import ioctl_name
                raise _errors.TimeoutError(
                    f"{ioctl_name(code_v)}: no completion within {timeout} s",
                    status=SCIO_PENDING, ioctl=code_v)
            PyErr_CheckSignals()  # Ctrl-C: between slices, nothing is pending
        # On the tracking lane (the rest of the wait, if it began here).
        op = self.submit(code_v)
        try:
            op.wait(None if forever else max(0.0, deadline - _monotonic()))
        except _errors.TimeoutError:
            op.cancel()
            if wait == 0:
                # as always on the lane: let the cancel free the slot for
                # the next request
                try:
                    op.wait(1.0)
                except _errors.ScardioError:
                    pass
            else:
                # A wait begun in this thread came here because the driver
                # stopped answering: it does not wait on past its timeout,
                # and the next wait waits for the cancel to land first.
                self._tracking_leftover = op
            raise
        return None

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
                st = scio_submit_awaited_for(self._dev, code_v, view.buf, view.len, out_size,
                                             0 if forever else <int64_t>(seconds * 1e6) + 1,
                                             &op)
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
            if st == SCIO_IO_TIMEOUT and not forever and _monotonic() >= deadline:
                # ended at the deadline by a backend that bounds its own
                # calls: the same error as a waiter giving up on the lane
                raise _given_up(code_v)
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
        cdef const scio_loop *lp
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
            lp = <const scio_loop *>p
            # A backend that bounds its own calls ended the IOCTL at the
            # deadline: the same error as a waiter giving up on the lane.
            if (not lp.complete and lp.n > 0 and not forever
                    and lp.step[lp.n - 1].status == SCIO_IO_TIMEOUT
                    and _monotonic() >= deadline):
                raise _given_up(lp.step[lp.n - 1].code)
            return _loop_outcome(lp)
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

