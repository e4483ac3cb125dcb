"""A connected card: transmit APDUs, disconnect.

``Card.transmit`` follows ISO 7816-4 / 7816-3 conventions on request (both on
by default, as pcscd clients usually implement them by hand):

* ``61 xx`` (more data available): GET RESPONSE ``00 C0 00 00 xx`` until the
  card stops answering 61xx; the data of every part is concatenated.
* ``6C xx`` (wrong Le; exact length xx): the same command is sent once more
  with Le = xx.
"""

from __future__ import annotations

import struct
import time
from types import TracebackType
from typing import TYPE_CHECKING, Any, NamedTuple, Optional

from . import errors
from .apdu import APDUError, ApduLike, check_length, parse_apdu, to_apdu_bytes
from .atr import ATR, ATRError, parse_atr
from .constants import IOCTL, Protocol
from .reader import Disposition, Request, Steps, run_sync
from .status_words import StatusWord, lookup_status_word

if TYPE_CHECKING:
    from .reader import Reader

__all__ = ["Card", "Response", "StatusWordError", "CardDisconnectedError",
           "transmit_steps", "MAX_GET_RESPONSE"]

#: GET RESPONSE rounds before giving up (65536 bytes in 256-byte parts).
MAX_GET_RESPONSE = 256
_IO_HEADER = 8
_SHORT_OUT = _IO_HEADER + 256 + 2
_MAX_OUT = _IO_HEADER + 65536 + 2


class StatusWordError(errors.ScardioError):
    """Raised by Response.raise_for_status() for SW other than 9000/61xx."""

    def __init__(self, message: str, response: "Response") -> None:
        super().__init__(message)
        self.response = response


class CardDisconnectedError(errors.InvalidStateError):
    """The card handle is no longer usable (disconnected, removed, reader
    closed): connect again."""


class Response(NamedTuple):
    """A response APDU: the data (``bytes``) and the status word.

    It unpacks like pyscard's ``transmit`` result, ``data, sw1, sw2 =
    card.transmit(...)``, and indexes the same way (``rsp[1]`` is SW1), with
    one difference: pyscard's data is a list of ints, ours stays ``bytes``
    (``list(rsp.data)`` gives pyscard's form).  ``describe()`` says what the
    status word means (ISO 7816-4, :mod:`scardio.status_words`)."""
    data: bytes
    sw1: int
    sw2: int

    @property
    def sw(self) -> int:
        return (self.sw1 << 8) | self.sw2

    @property
    def ok(self) -> bool:
        return self.sw == 0x9000

    @property
    def status_word(self) -> StatusWord:
        """The status word's meaning and category."""
        return lookup_status_word(self.sw1, self.sw2)

    def describe(self) -> str:
        """The status word in words, e.g. "6A 82: file or application not found"."""
        return str(self.status_word)

    def __bytes__(self) -> bytes:
        return self.data + bytes((self.sw1, self.sw2))

    def hex(self, sep: str = " ") -> str:
        return self.data.hex(sep).upper() if sep else self.data.hex().upper()

    def raise_for_status(self) -> "Response":
        if not (self.ok or self.sw1 == 0x61):
            raise StatusWordError(f"card answered SW {self.sw:04X} "
                                  f"({self.status_word.meaning})", self)
        return self

    def as_dict(self) -> dict[str, Any]:
        status = self.status_word
        return {"data": self.data.hex().upper(), "sw": f"{self.sw:04X}",
                "sw1": self.sw1, "sw2": self.sw2, "meaning": status.meaning,
                "category": status.category}

    def __str__(self) -> str:
        d = self.hex()
        return f"{d + ' ' if d else ''}SW={self.sw:04X}"


def _split(out: bytes) -> Response:
    if len(out) < _IO_HEADER + 2:
        raise errors.DriverDataError(
            f"TRANSMIT: response of {max(len(out) - _IO_HEADER, 0)} byte(s) has no "
            "status word")
    return Response(out[_IO_HEADER:-2], out[-2], out[-1])


def _output_size(apdu: bytes) -> int:
    """Room for the answer: a short APDU gets at most 256 bytes + SW (and
    fits the binding's stack buffer), anything else the maximum.  ISO 7816-4:
    a 00 after the header of a longer command starts an extended length."""
    return _MAX_OUT if len(apdu) > 5 and apdu[4] == 0 else _SHORT_OUT


def transmit_steps(apdu: bytes, protocol: int, *, auto_get_response: bool = True,
                   auto_resend: bool = True) -> "Steps[Response]":
    """TRANSMIT `apdu`, then GET RESPONSE / re-send as enabled."""
    check_length(apdu, protocol)
    header = struct.pack("<II", int(protocol), _IO_HEADER)
    size = _output_size(apdu)
    try:
        out = yield Request(IOCTL.TRANSMIT, header + apdu, size)
    except errors.BufferTooSmallError:
        out = yield Request(IOCTL.TRANSMIT, header + apdu, _MAX_OUT)
    return (yield from follow_up_steps(apdu, header, _split(out), auto_get_response,
                                       auto_resend))


def follow_up_steps(apdu: bytes, header: bytes, resp: Response, auto_get_response: bool,
                    auto_resend: bool) -> "Steps[Response]":
    """What follows a first response of 6Cxx (re-send) or 61xx (GET RESPONSE)."""
    if auto_resend and resp.sw1 == 0x6C and len(apdu) >= 5:
        try:
            parsed = parse_apdu(apdu)
        except APDUError:
            parsed = None
        if parsed is not None and not parsed.is_extended:
            again = bytes(parsed.with_ne(resp.sw2 or 256))
            out = yield Request(IOCTL.TRANSMIT, header + again, _SHORT_OUT)
            resp = _split(out)
    if auto_get_response and resp.sw1 == 0x61:
        # GET RESPONSE keeps the logical channel of an inter-industry CLA.
        cla = apdu[0] & 0x03 if apdu[0] & 0x80 == 0 else 0x00
        parts = [resp.data]
        for _ in range(MAX_GET_RESPONSE):
            if resp.sw1 != 0x61:
                break
            get = bytes((cla, 0xC0, 0x00, 0x00, resp.sw2))
            out = yield Request(IOCTL.TRANSMIT, header + get, _SHORT_OUT)
            resp = _split(out)
            parts.append(resp.data)
        resp = Response(b"".join(parts), resp.sw1, resp.sw2)
    return resp


class Card:
    """A card connected through a :class:`Reader` (see Reader.connect)."""

    def __init__(self, reader: "Reader", atr: bytes, protocol: Protocol,
                 actions: Optional[list[str]] = None, *, auto_get_response: bool = True,
                 auto_resend: bool = True) -> None:
        self.reader = reader
        self.atr_bytes = bytes(atr)
        self.protocol = Protocol(protocol)
        self.connect_actions = list(actions or [])
        self.auto_get_response = auto_get_response
        self.auto_resend = auto_resend
        self.atr_error: Optional[ATRError] = None
        try:
            self.atr: Optional[ATR] = parse_atr(self.atr_bytes)
        except ATRError as exc:  # a malformed ATR does not stop the card working
            self.atr = None
            self.atr_error = exc
        self._gone: Optional[str] = None
        self._header = struct.pack("<II", int(self.protocol), _IO_HEADER)

    @property
    def connected(self) -> bool:
        return self._gone is None

    @property
    def protocol_name(self) -> str:
        return {Protocol.T0: "T=0", Protocol.T1: "T=1", Protocol.RAW: "RAW"}.get(
            self.protocol, str(int(self.protocol)))

    def _mark_gone(self, why: str, disconnected: bool = False) -> None:
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
        with self.reader._lock:
            self._check()
            try:
                if timeout is None:
                    return self._transmit_fast(raw, get_response, resend)
                steps = transmit_steps(raw, self.protocol, auto_get_response=get_response,
                                       auto_resend=resend)
                return run_sync(self.reader.device, steps,
                                deadline=time.monotonic() + timeout)
            except (errors.NoCardError, errors.InvalidStateError) as exc:
                # The card left or was reset behind our back: this handle is dead.
                self._mark_gone("the card was removed" if isinstance(exc, errors.NoCardError)
                                else f"the card was reset or replaced ({exc})")
                if self.reader._card is self:
                    self.reader._card = None
                raise

    def _transmit_fast(self, raw: bytes, get_response: bool, resend: bool) -> Response:
        """One IOCTL when the card answers at once (the usual case); the
        generator path only for 61xx / 6Cxx follow-ups or a retry."""
        check_length(raw, self.protocol)
        device = self.reader.device
        try:
            out = device.ioctl(IOCTL.TRANSMIT, self._header + raw, _output_size(raw))
        except errors.BufferTooSmallError:
            out = device.ioctl(IOCTL.TRANSMIT, self._header + raw, _MAX_OUT)
        resp = _split(out)
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
            self._gone = "disconnected"
            self.reader._disconnected(self, Disposition(disposition))

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
