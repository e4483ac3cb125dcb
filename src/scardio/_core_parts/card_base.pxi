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

