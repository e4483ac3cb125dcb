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

