"""A connected card: transmit APDUs, disconnect.

``Card.transmit`` runs :func:`scardio.sequences.transmit.transmit_steps`
(TRANSMIT, then GET RESPONSE on 61xx and a re-send on 6Cxx, both on by
default) through the card's :class:`scardio.reader.Reader`; a card that
answers at once costs one IOCTL.
"""

from __future__ import annotations

import struct
from types import TracebackType
from typing import TYPE_CHECKING, Any, Optional

from . import errors
from .apdu import ApduLike, check_length, to_apdu_bytes
from .atr import ATR, ATRError, parse_atr_cached
from .constants import IOCTL, Protocol
from .runner import run_sync
from .session import deadline_after
from .sequences.disconnect import Disposition
from .sequences.transmit import (IO_HEADER, MAX_OUT, Response, StatusWordError,
                                 follow_up_steps, output_size, split_response, transmit_steps)
# importable from here, where they were defined before
from .sequences.transmit import MAX_GET_RESPONSE as MAX_GET_RESPONSE

if TYPE_CHECKING:
    from .reader import Reader

__all__ = ["Card", "Response", "StatusWordError", "CardDisconnectedError",
           "transmit_steps", "MAX_GET_RESPONSE"]


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


class Card:
    """A card connected through a :class:`Reader` (see Reader.connect)."""

    def __init__(self, reader: "Reader", atr: bytes, protocol: Protocol,
                 actions: Optional[list[str]] = None, *, auto_get_response: bool = True,
                 auto_resend: bool = True) -> None:
        self.reader = reader
        self.atr_bytes = atr if type(atr) is bytes else bytes(atr)
        self.protocol = protocol if type(protocol) is Protocol else Protocol(protocol)
        self.connect_actions = list(actions) if actions else []
        self.auto_get_response = auto_get_response
        self.auto_resend = auto_resend
        self.atr_error: Optional[ATRError] = None
        try:
            # the same card connects again and again: parse its ATR once
            self.atr: Optional[ATR] = parse_atr_cached(self.atr_bytes)
        except ATRError as exc:  # a malformed ATR does not stop the card working
            self.atr = None
            self.atr_error = exc
        self._gone: Optional[str] = None
        self._header = _IO_HEADERS.get(self.protocol) or _io_header(self.protocol)

    @property
    def connected(self) -> bool:
        return self._gone is None

    @property
    def protocol_name(self) -> str:
        return {Protocol.T0: "T=0", Protocol.T1: "T=1", Protocol.RAW: "RAW"}.get(
            self.protocol, str(int(self.protocol)))

    def _mark_gone(self, why: str) -> None:
        if self._gone is None:
            self._gone = why

    def _check(self) -> None:
        if self._gone is not None:
            raise CardDisconnectedError(f"card is not connected: {self._gone}; "
                                        "connect again")

    def transmit(self, apdu: ApduLike, *, auto_get_response: Optional[bool] = None,
                 auto_resend: Optional[bool] = None,
                 timeout: Optional[float] = None) -> Response:
        """Send a command APDU: bytes, hex text, scardio.apdu.APDU or a list
        of ints 0..255 (as pyscard takes it).  Returns a :class:`Response`,
        which unpacks as ``data, sw1, sw2``."""
        raw = apdu if type(apdu) is bytes else to_apdu_bytes(apdu)
        get_response = self.auto_get_response if auto_get_response is None \
            else auto_get_response
        resend = self.auto_resend if auto_resend is None else auto_resend
        deadline = deadline_after(timeout)
        with self.reader._lock:
            self._check()
            try:
                if deadline is None:
                    return self._transmit_fast(raw, get_response, resend)
                steps = transmit_steps(raw, self.protocol, auto_get_response=get_response,
                                       auto_resend=resend)
                return run_sync(self.reader.device, steps, deadline=deadline)
            except (errors.NoCardError, errors.InvalidStateError) as exc:
                self.reader.session.transmit_failed(self, exc)
                raise

    def _transmit_fast(self, raw: bytes, get_response: bool, resend: bool) -> Response:
        """One IOCTL when the card answers at once (the usual case); the
        generator path only for 61xx / 6Cxx follow-ups or a retry."""
        check_length(raw, self.protocol)
        device = self.reader.device
        try:
            out = device.ioctl(IOCTL.TRANSMIT, self._header + raw, output_size(raw))
        except errors.BufferTooSmallError:
            out = device.ioctl(IOCTL.TRANSMIT, self._header + raw, MAX_OUT)
        resp = split_response(out)
        if resp.sw1 == 0x61 or resp.sw1 == 0x6C:
            return run_sync(device, follow_up_steps(raw, self._header, resp, get_response,
                                                    resend))
        return resp

    def disconnect(self, disposition: Disposition = Disposition.LEAVE) -> None:
        """Release the card.  LEAVE keeps it powered until the reader's
        power-down timer fires (a reconnect before then reuses it as is).
        Idempotent; a no-op on a card that is already gone."""
        with self.reader._lock:
            if self._gone is not None:
                return
            self.reader._disconnected(self, disposition if type(disposition) is Disposition
                                      else Disposition(disposition))

    def info(self) -> dict[str, Any]:
        d: dict[str, Any] = {"reader": self.reader.name, "atr": self.atr_bytes.hex().upper(),
                             "protocol": self.protocol_name,
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
