"""The reader's state machine, sans-IO: one object, run by two runtimes.

A :class:`ReaderSession` holds everything a reader remembers between calls:
the card slot, the power-down timer's token, the listeners and the events
they get, the close hooks, and what card tracking has seen.  It decides
what each call does next and says so as a sequence (a generator of
:class:`scardio.sequences.Request`, :mod:`scardio.sequences`) that also
updates the state as its IOCTLs succeed or fail.  It does no I/O, starts no
timer and takes no lock of the reader's: a runtime does that.

- :class:`scardio.reader.Reader` runs it with blocking IOCTLs under an
  ``RLock`` and arms timers on :mod:`scardio.powerdown`'s thread;
- :class:`scardio.aio.AsyncReader` runs the same session with overlapped
  IOCTLs under an asyncio lock and arms timers with ``loop.call_later``.

Both front ends of one reader share its session, so a card connected
through either is the card of both, and the timer one arms the other
cancels.  Callers hold their runtime's lock around every ``*_steps``
method and around ``ReaderSession.arm_timer``.
"""

from __future__ import annotations

import numbers
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Optional

from . import _defaults, errors
from ._core import SessionBase
from .constants import IOCTL, Share, ioctl_name
from .sequences import LoopSteps, Steps
from .sequences.connect import CONNECT_MAX_STEPS, Connected, connect_steps
from .sequences.disconnect import (Disposition, power_down_steps, release_card_steps,
                                   warm_reset_steps)
from .sequences.sharing import (TransactionError, begin_transaction_steps,
                                end_transaction_steps, share_name, share_steps, share_value)

if TYPE_CHECKING:
    from .card import Card

__all__ = ["ReaderSession", "ReaderEvent", "check_power_down_timeout",
           "DEFAULT_POWER_DOWN_TIMEOUT", "DEFAULT_CONNECT_TIMEOUT"]

#: Seconds a disconnected card stays powered.  pcscd's grace period
#: (PCSCLITE_POWER_OFF_GRACE_PERIOD) is 5 s: an application that disconnects
#: and reconnects within that window (the common "open a session per
#: operation" pattern) gets its card back with no new reset, exactly as it
#: would under pcscd; longer keeps cards powered for no benefit, shorter
#: makes reconnects pay a cold reset (tens to hundreds of ms on real cards).
DEFAULT_POWER_DOWN_TIMEOUT: float = _defaults.DEFAULT_POWER_DOWN_TIMEOUT
#: Upper bound on the whole connect sequence.  Real cold resets take up to
#: about a second (slow ATRs, PPS); the bound only guards against drivers
#: that hang.
DEFAULT_CONNECT_TIMEOUT: float = _defaults.DEFAULT_CONNECT_TIMEOUT


def check_power_down_timeout(value: Optional[float]) -> Optional[float]:
    """`value` if it is a power-down timeout (None, or finite seconds >= 0);
    else ValueError (TypeError for a non-number)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"power_down_timeout must be seconds (a number) or None, "
                        f"not {type(value).__name__}")
    if not 0 <= value < float("inf"):  # also refuses NaN
        raise ValueError(f"power_down_timeout must be finite seconds >= 0 or None, "
                         f"got {value!r}")
    return value


_INF = float("inf")
_SHARE_UNKNOWN = -1  # ReaderSession._share_set: a SET_SHARE_MODE whose answer was not seen


def check_timeout(value: Optional[float]) -> Optional[float]:
    """A wait's timeout: None for no timeout (None or inf), else the seconds;
    ValueError if negative or NaN (TypeError for a non-number), as the
    binding's waits do."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"timeout must be seconds (a number) or None, "
                        f"not {type(value).__name__}")
    if not value >= 0:  # also refuses NaN
        raise ValueError(f"timeout must be seconds >= 0, inf or None, got {value!r}")
    return None if value == float("inf") else value


#: The longest single wait on a threading primitive made for a caller:
#: Ctrl-C is seen between two (on Windows a lock wait ignores it).
WAIT_SLICE = 0.5


def wait_event(event: threading.Event, timeout: Optional[float]) -> bool:
    """``event.wait(timeout)`` (a checked timeout; None: none) in slices of
    at most :data:`WAIT_SLICE`."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        left = WAIT_SLICE if deadline is None else min(WAIT_SLICE, deadline - time.monotonic())
        if event.wait(max(left, 0.0)):
            return True
        if deadline is not None and time.monotonic() >= deadline:
            return False


def deadline_after(timeout: Optional[float]) -> Optional[float]:
    """The monotonic deadline of a checked timeout (None: none)."""
    if (type(timeout) is int or type(timeout) is float) and 0 <= timeout < _INF:
        return time.monotonic() + timeout  # the usual case, without the ABC check
    seconds = check_timeout(timeout)
    return None if seconds is None else time.monotonic() + seconds


@dataclass(frozen=True)
class ReaderEvent:
    """Something the reader did: ``kind`` is "connect", "disconnect",
    "power_down", "power_down_cancelled", "power_down_failed", "close";
    ``timestamp`` is time.monotonic()."""
    kind: str
    reader: str
    timestamp: float
    detail: dict[str, Any] = field(default_factory=dict)


class ReaderSession(SessionBase):
    """One reader's state (see the module doc).  `name` gives the reader's
    name for events and messages.

    What every connect and disconnect does to it is in the binding's base
    class (``scardio._core.SessionBase``), so that the reader API's connect
    runs it without the interpreter: ``begin_connect(share)`` (refuses on a
    closed reader or a connected card, cancels the timer; returns the start
    time and the SET_SHARE_MODE value to send first),
    ``finish_connect(conn, card, started)`` (the card into the slot, a
    "connect" event), ``disconnect_needs_io(disposition)`` (whether a
    disconnect runs IOCTLs: :meth:`disconnect_steps`),
    ``release_card(card, disposition)`` (the card gone, a "disconnect"
    event; returns the seconds of power-down timer to arm, None: none),
    ``arm_timer(schedule, delay)`` (``schedule(delay, token)`` starts the
    runtime's timer, which runs :meth:`timer_fired_steps` with that token
    after `delay` seconds, and returns its handle) and ``cancel_timer(why)``
    (a timer already running its callback gives up)."""

    def __init__(self, name: Callable[[], str],
                 power_down_timeout: Optional[float] = DEFAULT_POWER_DOWN_TIMEOUT) -> None:
        self._name = name
        self._power_down_timeout = check_power_down_timeout(power_down_timeout)
        self.closed = False
        #: The card connected through this reader (or the last one, gone).
        self.card: Optional["Card"] = None
        #: The runtime's handle of the armed power-down timer (has cancel()).
        self.timer: Any = None
        self._timer_token = 0
        self._listeners: list[Callable[[ReaderEvent], None]] = []
        self._close_hooks: list[Callable[[Any], None]] = []
        #: Monitors keeping IS_PRESENT / IS_ABSENT pending on the reader.
        self.tracked_by = 0
        #: Card presence as a monitor last reported it (None: not tracked).
        self.present: Optional[bool] = None
        # Monitors report from their harvesting threads, waiters come and go
        # on the callers' threads: the list needs its own small lock.
        self._presence_lock = threading.Lock()
        self._presence_waiters = []  # Callable[[bool], None]
        # The SET_SHARE_MODE value last put in force on the device and the
        # mode it answered; None: never asked (the device's own mode is in
        # force), _SHARE_UNKNOWN: asked, answer not seen (ask again).
        self._share_set: Optional[int] = None
        self._share_in_force = int(Share.EXCLUSIVE)
        #: The card whose transaction is open (None: none).
        self.transaction: Optional["Card"] = None

    @property
    def name(self) -> str:
        return self._name()

    @property
    def power_down_timeout(self) -> Optional[float]:
        return self._power_down_timeout

    @power_down_timeout.setter
    def power_down_timeout(self, value: Optional[float]) -> None:
        self._power_down_timeout = check_power_down_timeout(value)

    def check_open(self) -> None:
        if self.closed:
            raise errors.ClosedError(f"reader {self.name!r} is closed")

    # -- events and hooks ---------------------------------------------------
    def add_listener(self, callback: Callable[[ReaderEvent], None]) -> None:
        self._listeners.append(callback)

    def remove_listener(self, callback: Callable[[ReaderEvent], None]) -> None:
        try:
            self._listeners.remove(callback)
        except ValueError:
            pass

    @property
    def listened(self) -> bool:
        """Whether anyone listens: callers skip building an event's details
        otherwise (the connect loop of a fast driver is that cheap)."""
        return bool(self._listeners)

    def emit(self, kind: str, **detail: Any) -> None:
        if not self._listeners:
            return
        ev = ReaderEvent(kind, self.name, time.monotonic(), detail)
        for cb in list(self._listeners):
            try:
                cb(ev)
            except Exception:
                pass  # a listener must not break a sequence

    def add_close_hook(self, hook: Callable[[Any], None]) -> None:
        self._close_hooks.append(hook)

    def remove_close_hook(self, hook: Callable[[Any], None]) -> None:
        try:
            self._close_hooks.remove(hook)
        except ValueError:
            pass

    def run_close_hooks(self, reader: Any) -> None:
        for hook in list(self._close_hooks):
            try:
                hook(reader)
            except Exception:
                pass

    # -- the card slot --------------------------------------------------------
    def connected_card(self) -> Optional["Card"]:
        c = self.card
        return c if c is not None and c.connected else None

    def card_gone(self, card: "Card", why: str) -> None:
        """`card` is dead (removed, reset, reader closed): mark it and empty
        the slot it holds."""
        card._mark_gone(why)
        if self.card is card:
            self.card = None

    def transmit_failed(self, card: "Card", exc: errors.ScardioError) -> None:
        """A transmit on `card` failed with `exc`: a card that left or was
        reset behind our back leaves its handle dead."""
        if isinstance(exc, errors.NoCardError):
            self.card_gone(card, "the card was removed")
        elif isinstance(exc, errors.InvalidStateError):
            self.card_gone(card, f"the card was reset or replaced ({exc})")

    # -- connect / disconnect -------------------------------------------------
    def share_for_connect(self, share: Optional[str]) -> Optional[int]:
        """The SET_SHARE_MODE value a connect with `share` must send first
        (None: the mode in force is already the one asked).  ValueError
        for a `share` that is not "shared", "exclusive" or None."""
        want = share_value(share)
        if want == self._share_set or (share is None and self._share_set is None):
            return None  # (never asked for another: the device's own is in force)
        self._share_set = _SHARE_UNKNOWN  # until SET_SHARE_MODE answers
        return want

    def connect_steps(self, protocols: int, make_card: Callable[[Connected], "Card"], *,
                      max_steps: int = CONNECT_MAX_STEPS,
                      deadline: Optional[float] = None,
                      share: Optional[str] = None) -> "LoopSteps[Card]":
        """``begin_connect``, the connect loop, ``finish_connect``
        as one sequence.  (A runtime may also run the loop alone between
        the two: it touches no state of the session.)"""
        share_value(share)  # ValueError before anything changes
        started, share_code = self.begin_connect(share)
        conn = yield from connect_steps(protocols, max_steps=max_steps, deadline=deadline,
                                        share=share_code)
        return self.finish_connect(conn, make_card(conn), started)

    def disconnect_steps(self, card: "Card",
                         disposition: Disposition) -> "LoopSteps[Optional[float]]":
        """`card` was released with `disposition`: power it down or reset it
        as asked.  Returns the seconds of power-down timer to arm (None:
        none; see arm_timer)."""
        in_transaction = self.transaction is card
        delay = self.release_card(card, disposition)
        if self.closed:
            return None
        if in_transaction:
            yield from self.end_transaction_steps(card, quiet=True)
        yield from self._default_share_steps()
        if disposition == Disposition.UNPOWER:
            yield from self.power_down_steps("disconnect")
            return None
        if disposition == Disposition.RESET:
            try:
                yield from warm_reset_steps()
            except errors.NoCardError:
                return None
        if self._power_down_timeout == 0:
            # A timer of 0 s fires at once: the same event as a timer firing.
            yield from self.timer_end_steps()
            return None
        return delay

    def share_in_force_steps(self) -> "Steps[str]":
        """The name of the share mode in force (asking the device for its
        own when no connect asked for one: SET_SHARE_MODE(DEFAULT) changes
        nothing then)."""
        if self._share_set is None or self._share_set == _SHARE_UNKNOWN:
            self._share_set = _SHARE_UNKNOWN
            self._share_in_force = yield from share_steps(Share.DEFAULT)
            self._share_set = int(Share.DEFAULT)
        return share_name(self._share_in_force)

    def _default_share_steps(self) -> "Steps[None]":
        """Back to the device's own share mode once the connection that
        asked for another ends (an exclusive one lets the others in at
        once, even while the power-down timer keeps the card powered)."""
        if self._share_set in (None, Share.DEFAULT):
            return
        self._share_set = _SHARE_UNKNOWN
        try:
            self._share_in_force = yield from share_steps(Share.DEFAULT)
        except errors.ScardioError:
            return  # asked again at the next connect
        self._share_set = int(Share.DEFAULT)

    # -- transactions -----------------------------------------------------------
    def begin_transaction_steps(self, card: "Card") -> "Steps[None]":
        """BEGIN_TRANSACTION for `card`: refused on a gone card, on a
        closed reader and inside another transaction (they do not nest)."""
        self.check_open()
        card._check()
        if self.transaction is not None:
            raise TransactionError(f"a transaction is already open on {self.name!r} "
                                   "(transactions do not nest)")
        try:
            yield from begin_transaction_steps()
        except (errors.NoCardError, errors.InvalidStateError) as exc:
            self.transmit_failed(card, exc)
            raise
        self.transaction = card

    def end_transaction_steps(self, card: "Card", *, quiet: bool = False) -> "Steps[None]":
        """END_TRANSACTION for `card`'s open transaction, if it is still
        open.  The transaction is over whatever the answer; a card the end
        found removed or reset is gone (its error raised unless `quiet`)."""
        if self.transaction is not card:
            return
        self.transaction = None
        if self.closed:
            return  # closing released the connection, and its transaction
        try:
            yield from end_transaction_steps()
        except errors.ScardioError as exc:
            if isinstance(exc, (errors.NoCardError, errors.InvalidStateError)):
                self.transmit_failed(card, exc)
            if not quiet:
                raise

    # -- the power-down timer -------------------------------------------------
    @property
    def power_down_pending(self) -> bool:
        return self.timer is not None

    def timer_fired_steps(self, token: int) -> "LoopSteps[None]":
        """The timer armed with `token` fired: power the card down, unless
        a reconnect or close cancelled it while the runtime took its lock."""
        if token != self._timer_token or self.closed:
            return
        self.timer = None
        yield from self.timer_end_steps()

    def timer_end_steps(self) -> "LoopSteps[None]":
        """What the power-down delay's end does: where the resource manager
        powers cards (PC/SC), let go of the card (RELEASE_CARD) and leave
        its power to it -- powering it down would reset every other
        client's card too; where scardio owns the card, power it down.
        Reported as a "power_down" event (with ``actions`` ["RELEASED"] and
        ``powered_down`` false when released)."""
        try:
            released = yield from release_card_steps()
        except errors.ScardioError:
            released = False  # a device that does not know it: ours to power down
        if released:
            self.emit("power_down", reason="timer", actions=["RELEASED"], powered_down=False)
            return
        yield from self.power_down_steps("timer")

    def power_down_steps(self, reason: str) -> "LoopSteps[list[str]]":
        """The power-down sequence, reported as a "power_down" event (or
        "power_down_failed": it never raises a device error)."""
        try:
            actions = yield from power_down_steps()
        except errors.ScardioError as exc:
            self.emit("power_down_failed", reason=reason, error=str(exc))
            return []
        self.emit("power_down", reason=reason, actions=actions,
                  powered_down="POWER_DOWN" in actions)
        return actions

    def explicit_power_down_steps(self) -> "LoopSteps[list[str]]":
        """Reader.power_down(): refused while a card is connected; cancels
        the timer; errors reach the caller."""
        self.check_open()
        if self.connected_card() is not None:
            raise errors.InvalidStateError("a card is connected: disconnect it first")
        self.cancel_timer("power_down()")
        return (yield from power_down_steps())

    # -- closing ------------------------------------------------------------
    def begin_close(self) -> bool:
        """Mark the reader closed (nothing new starts) and cancel the timer;
        False if it was closed already."""
        if self.closed:
            return False
        self.closed = True
        self.cancel_timer("close")
        return True

    def drop_card(self, why: str) -> None:
        card = self.card
        if card is not None:
            self.card_gone(card, why)

    # -- card tracking --------------------------------------------------------
    # note_presence(present) and tell_presence_waiters(present): SessionBase's
    # (a monitor saw an arrival or a departure: the presence, a departed card
    # dropped; then, its next request out, the waiters told).

    def add_presence_waiter(self, w: Callable[[bool], None]) -> None:
        with self._presence_lock:
            self._presence_waiters.append(w)

    def remove_presence_waiter(self, w: Callable[[bool], None]) -> None:
        with self._presence_lock:
            try:
                self._presence_waiters.remove(w)
            except ValueError:
                pass

    @staticmethod
    def tracking_code(present: bool) -> int:
        return IOCTL.IS_PRESENT if present else IOCTL.IS_ABSENT

    def tracking_timeout(self, present: bool, timeout: Optional[float]) -> errors.TimeoutError:
        what = "a card" if present else "the card's removal"
        return errors.TimeoutError(f"no sign of {what} within {timeout} s",
                                   ioctl=self.tracking_code(present))

    def tracking_busy(self, exc: errors.DeviceBusyError, present: bool) -> errors.DeviceBusyError:
        code = self.tracking_code(present)
        return errors.DeviceBusyError(
            f"{ioctl_name(code)}: another tracking request is pending on "
            f"{self.name!r} (one per reader); use the Monitor's events",
            status=exc.status, ioctl=code)

    def tracking_done(self, present: bool) -> None:
        """The reader's own IS_PRESENT / IS_ABSENT completed."""
        if not present:
            self.drop_card("the card was removed")
