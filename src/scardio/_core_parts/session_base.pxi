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
    cdef public object present  # as a monitor last reported it (None: not tracked)
    cdef public list _presence_waiters
    cdef public object _presence_lock  # the waiters' list's (they come and go on any thread)

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

    cpdef note_presence(self, bint present):
        """A monitor saw an arrival (True) or a departure (False): the
        presence recorded, a departed card dropped (in the binding: a
        monitor's herald calls it between the driver's answer and the
        user's callbacks).  The presence waiters are told apart
        (:meth:`tell_presence_waiters`), once the monitor's next request
        holds the reader's tracking slot again."""
        self.present = present
        if not present and self.card is not None:
            self.drop_card("the card was removed")

    cpdef tell_presence_waiters(self, bint present):
        """Call the waiters following a monitor with what it saw."""
        if not self._presence_waiters:
            return  # the common case
        with self._presence_lock:
            waiters = list(self._presence_waiters)
        for w in waiters:
            w(present)
