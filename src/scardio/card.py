"""A connected card: transmit APDUs, disconnect.

``Card.transmit`` runs :func:`scardio.sequences.transmit.transmit_steps`
(TRANSMIT, then GET RESPONSE on 61xx and a re-send on 6Cxx, both on by
default) through the card's :class:`scardio.reader.Reader`; a card that
answers at once costs one IOCTL.  The common call (a short APDU as bytes,
no options, an untraced device) runs in the binding's
``CardBase.transmit``; everything else in ``Card._transmit_py``.

``with card.transaction():`` keeps everyone else off the card for the
block (see :meth:`Card.transaction`).
"""

from __future__ import annotations

import os
import struct
import time
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any, Optional, Sequence, Union

from . import errors
from ._core import CardBase
from .apdu import ApduLike, check_length, to_apdu_bytes
from .atr import ATR, ATRError
from .constants import IOCTL, Protocol
from .runner import run_sync
from .session import check_timeout, deadline_after
from .sequences import Steps
from .sequences.disconnect import Disposition, DispositionLike, disposition_value
from .sequences.sharing import SHARE_MODES
from .sequences.sharing import TransactionError as TransactionError
from .sequences.transmit import (IO_HEADER, MAX_OUT, SHORT_OUT, Response, StatusWordError,
                                 follow_up_steps, split_response, transmit_steps)
# importable from here, where they were defined before
from .sequences.transmit import MAX_GET_RESPONSE as MAX_GET_RESPONSE

if TYPE_CHECKING:
    from typing import Callable

    from .reader import Reader
    from .recording import Recorder

# A plain int: an IntEnum member costs an attribute lookup and a conversion
# in the binding on every call.
_TRANSMIT = int(IOCTL.TRANSMIT)
_new_tuple = tuple.__new__  # Response(...) through its generated __new__ costs twice as much
_SHORTEST_OUT = IO_HEADER + 2  # the I/O header and SW1 SW2

__all__ = ["Card", "Transaction", "Response", "StatusWordError", "CardDisconnectedError",
           "TransactionError", "transmit_steps", "MAX_GET_RESPONSE"]


_IO_HEADERS: dict[int, bytes] = {}


def _io_header(protocol: int) -> bytes:
    """SCARD_IO_REQUEST{protocol, 8}, built once per protocol."""
    h = _IO_HEADERS.get(protocol)
    if h is None:
        h = struct.pack("<II", int(protocol), IO_HEADER)
        if len(_IO_HEADERS) < 16:
            _IO_HEADERS[protocol] = h
    return h


class CardDisconnectedError(errors.InvalidStateError):
    """The card handle is no longer usable (disconnected, removed, reader
    closed): connect again."""


class Card(CardBase):
    """A card connected through a :class:`Reader` (see Reader.connect)."""

    reader: "Reader"
    protocol: Protocol
    atr_bytes: bytes
    #: The parsed ATR (None when it is malformed: see atr_error).
    atr: Optional[ATR]
    atr_error: Optional[ATRError]
    #: The connect sequence's steps ("SPECIFIC", "SET_PROTOCOL(T=1)"...).
    connect_actions: list[str]
    auto_get_response: bool
    auto_resend: bool
    _share: Optional[str]  # known from the connect, else asked once

    def __init__(self, reader: "Reader", atr: bytes, protocol: Protocol,
                 actions: Optional[Sequence[str]] = None, *, auto_get_response: bool = True,
                 auto_resend: bool = True) -> None:
        # The binding sets the fields (and Reader.connect makes its cards
        # there, without this call): the ATR parsed once per ATR bytes
        # (scardio.atr.parse_atr_cached; a malformed one leaves atr None and
        # the error in atr_error), the actions as a list, the I/O header.
        self._init(reader, atr, protocol, actions, auto_get_response, auto_resend)

    @property
    def connected(self) -> bool:
        return self._gone is None

    @property
    def protocol_name(self) -> str:
        return {Protocol.T0: "T=0", Protocol.T1: "T=1", Protocol.RAW: "RAW"}.get(
            self.protocol, str(int(self.protocol)))

    def _check(self) -> None:
        if self._gone is not None:
            raise CardDisconnectedError(f"card is not connected: {self._gone}; "
                                        "connect again")

    # transmit() is CardBase.transmit: the common call (a short APDU as
    # bytes, no options, an untraced device) runs in the binding; it hands
    # everything else to _transmit_py and 61xx / 6Cxx answers to _follow_up.
    transmit = CardBase.transmit

    def _transmit_py(self, apdu: ApduLike, auto_get_response: Optional[bool],
                     auto_resend: Optional[bool], timeout: Optional[float]) -> Response:
        """transmit() for every call the binding's fast path does not take."""
        raw = apdu if type(apdu) is bytes else to_apdu_bytes(apdu)
        deadline = None if timeout is None else deadline_after(timeout)
        if deadline is not None:
            return self._transmit_steps(raw, auto_get_response, auto_resend, deadline)
        # One IOCTL when the card answers at once, with output_size and
        # split_response inlined for the lengths that cannot fail, the
        # generator path only for 61xx / 6Cxx follow-ups.
        reader = self.reader
        lock = reader._lock
        lock.acquire()
        try:
            if self._gone is not None:
                self._check()
            try:
                n = len(raw)
                if n < 4 or n > 5:
                    check_length(raw, self.protocol)
                device = reader.device
                header = self._header
                try:  # output_size(raw)
                    out = device.ioctl(_TRANSMIT, header + raw,
                                       MAX_OUT if n > 5 and raw[4] == 0 else SHORT_OUT)
                except errors.BufferTooSmallError:
                    out = device.ioctl(_TRANSMIT, header + raw, MAX_OUT)
                if len(out) < _SHORTEST_OUT:
                    split_response(out)  # raises: no status word
                sw1 = out[-2]
                resp = _new_tuple(Response, (out[IO_HEADER:-2], sw1, out[-1]))
                if sw1 == 0x61 or sw1 == 0x6C:
                    resp = run_sync(device, follow_up_steps(
                        raw, header, resp, self._get_response(auto_get_response),
                        self._resend(auto_resend)))
                return resp
            except (errors.NoCardError, errors.InvalidStateError) as exc:
                reader.session.transmit_failed(self, exc)
                raise
        finally:
            lock.release()

    def _follow_up(self, raw: bytes, resp: Response) -> Response:
        """The fast path's 61xx / 6Cxx answer `resp` to `raw`, with the card's
        defaults (the reader lock held)."""
        return run_sync(self.reader.device, follow_up_steps(
            raw, self._header, resp, self.auto_get_response, self.auto_resend))

    def _transmit_steps(self, raw: bytes, get_response: Optional[bool],
                        resend: Optional[bool], deadline: Optional[float],
                        observe: "Optional[Callable[[Steps[Response]], Steps[Response]]]"
                        = None) -> Response:
        """transmit() with a deadline: the sequence through run_sync
        (wrapped by `observe` when given: the recorder's)."""
        with self.reader._lock:
            self._check()
            try:
                steps = transmit_steps(raw, self.protocol,
                                       auto_get_response=self._get_response(get_response),
                                       auto_resend=self._resend(resend))
                if observe is not None:
                    steps = observe(steps)
                return run_sync(self.reader.device, steps, deadline=deadline)
            except (errors.NoCardError, errors.InvalidStateError) as exc:
                self.reader.session.transmit_failed(self, exc)
                raise

    def _get_response(self, asked: Optional[bool]) -> bool:
        return self.auto_get_response if asked is None else asked

    def _resend(self, asked: Optional[bool]) -> bool:
        return self.auto_resend if asked is None else asked

    def disconnect(self, disposition: DispositionLike = Disposition.LEAVE) -> None:
        """Release the card.  LEAVE keeps it powered until the reader's
        power-down timer fires (a reconnect before then reuses it as is);
        RESET warm-resets it first; UNPOWER powers it down now.  The
        disposition may be named ("leave", "reset", "unpower"); anything
        else is ValueError, before the card is touched.  Idempotent; a
        no-op on a card that is already gone."""
        # the lock, the session's bookkeeping and the timer: in the binding
        self._release(disposition if type(disposition) is Disposition else
                      disposition_value(disposition))

    @property
    def share(self) -> str:
        """How the connection is shared with other clients: "shared" or
        "exclusive" (always "exclusive" on the direct path: see
        :meth:`scardio.reader.Reader.connect`)."""
        if self._share is None:
            # Nothing asked for another mode: the device's own is in force.
            own = getattr(self.reader.device, "share", None)
            if own in SHARE_MODES:
                self._share = str(own)
                return self._share
            with self.reader._lock:  # a device that does not say: ask it
                self._share = run_sync(self.reader.device,
                                       self.reader.session.share_in_force_steps())
        return self._share

    def transaction(self, timeout: Optional[float] = None) -> "Transaction":
        """``with card.transaction():`` -- nobody else uses the card until
        the block ends (on an exception too).

        Through PC/SC this is ``SCardBeginTransaction`` /
        ``SCardEndTransaction``: other clients' APDUs (other processes,
        other readers opened on it in this one) wait until the block ends;
        entering waits while another client holds a transaction, as PC/SC
        does: for ever, or at most `timeout` seconds (then TimeoutError;
        the resource manager's call cannot be interrupted, so this reader's
        other calls still wait for it, and the transaction it gets late is
        ended at once).  On every path the calling thread also holds
        the reader's lock for the block, so the other threads using this
        reader wait too: on the direct path (where scardio owns the reader
        and no other process can reach it) that process-local lock is all
        there is.  The holder's own calls go through (the lock is its own);
        a transaction does not nest (TransactionError), and asking on a
        disconnected card raises CardDisconnectedError.  A card removed or
        reset inside raises the usual NoCardError / InvalidStateError and
        the transaction ends with it; disconnect() inside ends it too.
        Entering returns the card."""
        return Transaction(self, timeout)
    def record(self, target: "Union[str, os.PathLike[str], IO[str]]") -> "Recorder":
        """Record this card's session from now on as JSON Lines (a path, or
        a text file open for writing): every transmit, its failure, the
        disconnect.  Use as ``with card.record("session.jsonl"): ...`` or
        close the returned :class:`~scardio.recording.Recorder` yourself;
        :mod:`scardio.recording` describes the format and
        :class:`scardio.sim.ReplayCard` plays it back.  A card that is not
        being recorded pays nothing: the recorder stands in for
        ``transmit`` on this one object only while it records."""
        from .recording import Recorder
        return Recorder(self, target)

    def info(self) -> dict[str, Any]:
        d: dict[str, Any] = {"reader": self.reader.name, "atr": self.atr_bytes.hex().upper(),
                             "protocol": self.protocol_name, "share": self.share,
                             "connect_actions": self.connect_actions}
        if self.atr is not None:
            d["atr_protocols"] = [f"T={p}" for p in self.atr.protocols]
            d["atr_description"] = self.atr.describe()
        else:
            d["atr_error"] = str(self.atr_error)
        return d

    def __enter__(self) -> "Card":
        return self

    def __exit__(self, exc_type: Optional[type[BaseException]],
                 exc: Optional[BaseException], tb: Optional[TracebackType]) -> None:
        self.disconnect()

    def __repr__(self) -> str:
        state = "connected" if self.connected else f"gone ({self._gone})"
        return (f"<scardio.Card {self.atr_bytes.hex().upper()} {self.protocol_name} "
                f"on {self.reader.name!r} {state}>")


class Transaction:
    """The context manager :meth:`Card.transaction` returns: BEGIN on
    entry with the reader lock taken, END on exit, the lock released."""

    __slots__ = ("card", "timeout")

    def __init__(self, card: Card, timeout: Optional[float] = None) -> None:
        check_timeout(timeout)
        self.card = card
        self.timeout = timeout

    def __enter__(self) -> Card:
        card = self.card
        reader = card.reader
        lock = reader._lock
        if reader.session.transaction is card and lock._is_owned():
            raise TransactionError(f"a transaction is already open on {reader.name!r} "
                                   "(transactions do not nest)")
        deadline = deadline_after(self.timeout)
        reader._acquire_until(deadline)  # another thread's transaction
        try:
            steps = reader.session.begin_transaction_steps(card)
            if deadline is None:
                run_sync(reader.device, steps)
            else:
                _begin_until(reader.device, steps, deadline)
        except BaseException:
            lock.release()
            raise
        return card

    def __exit__(self, exc_type: Optional[type[BaseException]],
                 exc: Optional[BaseException], tb: Optional[TracebackType]) -> None:
        card = self.card
        reader = card.reader
        try:
            run_sync(reader.device, reader.session.end_transaction_steps(
                card, quiet=exc is not None))  # the block's own error comes first
        finally:
            reader._lock.release()


def _begin_until(device: Any, steps: "Steps[None]", deadline: float) -> None:
    """The begin sequence with its IOCTL overlapped, given up (cancelled)
    at `deadline`: the backend ends a transaction it gets after that."""
    try:
        req = next(steps)
        op = device.submit(req.code, req.input, req.output_size)
        try:
            out = op.wait(max(0.0, deadline - time.monotonic()))
        except errors.TimeoutError:
            op.cancel()
            raise errors.TimeoutError("BEGIN_TRANSACTION: another client's transaction did "
                                      "not end within the timeout",
                                      ioctl=req.code) from None
        except errors.ScardioError as exc:
            steps.throw(exc)
        else:
            steps.send(out)
    except StopIteration:
        return
    finally:
        steps.close()
