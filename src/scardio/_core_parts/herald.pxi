# -- a tracking request's event, made before the request goes out ------------

cdef class Herald:
    """What a :class:`TrackingSet` or a :class:`CompletionQueue` tells
    first when a tracking request it holds succeeded, before the request's
    own callback: an event made before the request went out, stamped and
    handed to the callbacks, so that between the driver's answer and a
    user's callback runs little more than that.

    *event*: an object with a ``__dict__``, whose ``timestamp``
    (time.monotonic()) and ``seq`` (the next item of the iterator *seq*)
    are set then; *session*: the reader's :class:`SessionBase`, told
    first (``note_presence(present)``: the state the callbacks should
    see); *callbacks*: a one-item list holding the tuple of callbacks, each
    called with the event, one that raises ignored (its owner replaces the
    tuple, never changes it); *after(event)*: called last, or None.
    :attr:`ran` tells the request's callback that the event went out."""

    cdef readonly object event
    cdef readonly bint ran
    cdef dict _fields
    cdef SessionBase _session
    cdef bint _present
    cdef object _seq, _after
    cdef list _callbacks

    def __init__(self):
        raise TypeError("use Herald.for_event()")

    @classmethod
    def for_event(cls, event, SessionBase session not None, bint present, seq,
                  list callbacks not None, after=None):
        """The herald of `event` (see the class)."""
        cdef Herald self
        if len(callbacks) != 1 or type(callbacks[0]) is not tuple:
            raise TypeError("callbacks must be a one-item list holding a tuple")
        self = Herald.__new__(Herald)
        self.event = event
        self._fields = event.__dict__
        self._session = session
        self._present = present
        self._seq = seq
        self._callbacks = callbacks
        self._after = after
        return self

    cdef int announce(self) except -1:
        cdef object event = self.event
        self._session.note_presence(self._present)
        self._fields["timestamp"] = _monotonic()
        self._fields["seq"] = next(self._seq)
        self.ran = True
        for callback in <tuple>self._callbacks[0]:
            try:
                callback(event)
            except Exception:
                pass  # one bad callback must not keep the event from the others
        if self._after is not None:
            self._after(event)
        return 0


cdef object _completions_log = None


cdef _callback_failed(what, op):
    global _completions_log
    if _completions_log is None:
        import logging
        _completions_log = logging.getLogger("scardio.completions")
    _completions_log.exception("%s failed for %r", what, op)


cdef _completed(tuple entry, scio_status status):
    """Run a completed request's (Operation, callback, Herald or None)
    entry: the herald's announcement when it succeeded, then the callback;
    one that raises is logged (the callback still runs, and the next
    entries)."""
    herald = entry[2]
    if herald is not None and status == SCIO_SUCCESS:
        try:
            (<Herald>herald).announce()
        except Exception:
            _callback_failed("announcing", entry[0])
    try:
        (<object>entry[1])(entry[0])
    except Exception:  # one broken callback must not starve the rest
        _callback_failed("completion callback", entry[0])
