"""TRANSMIT, and what ISO 7816-4 / 7816-3 make follow a first answer.

On request (both on by default, as pcscd clients usually implement them by
hand):

* ``61 xx`` (more data available): GET RESPONSE ``00 C0 00 00 xx`` until the
  card stops answering 61xx; the data of every part is concatenated.
* ``6C xx`` (wrong Le; exact length xx): the same command is sent once more
  with Le = xx.
"""

from __future__ import annotations

import struct
from typing import Any, NamedTuple

from .. import errors
from ..apdu import APDUError, check_length, parse_apdu
from ..constants import IOCTL
from ..status_words import StatusWord, lookup_status_word
from . import Request, Steps

__all__ = ["Response", "StatusWordError", "transmit_steps", "follow_up_steps",
           "MAX_GET_RESPONSE"]

#: GET RESPONSE rounds before giving up (65536 bytes in 256-byte parts).
MAX_GET_RESPONSE = 256
IO_HEADER = 8
SHORT_OUT = IO_HEADER + 256 + 2
MAX_OUT = IO_HEADER + 65536 + 2


class StatusWordError(errors.ScardioError):
    """Raised by Response.raise_for_status() for SW other than 9000/61xx."""

    def __init__(self, message: str, response: "Response") -> None:
        super().__init__(message)
        self.response = response


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


# A NamedTuple's generated __new__ is a Python function that packs its
# arguments into a tuple: building the tuple directly halves the cost.
_new_tuple = tuple.__new__


def split_response(out: bytes) -> Response:
    """TRANSMIT's output (I/O header, data, SW1 SW2) as a Response."""
    if len(out) < IO_HEADER + 2:
        raise errors.DriverDataError(
            f"TRANSMIT: response of {max(len(out) - IO_HEADER, 0)} byte(s) has no "
            "status word")
    return _new_tuple(Response, (out[IO_HEADER:-2], out[-2], out[-1]))


def output_size(apdu: bytes) -> int:
    """Room for the answer: a short APDU gets at most 256 bytes + SW (and
    fits the binding's stack buffer), anything else the maximum.  ISO 7816-4:
    a 00 after the header of a longer command starts an extended length."""
    return MAX_OUT if len(apdu) > 5 and apdu[4] == 0 else SHORT_OUT


def transmit_steps(apdu: bytes, protocol: int, *, auto_get_response: bool = True,
                   auto_resend: bool = True) -> "Steps[Response]":
    """TRANSMIT `apdu`, then GET RESPONSE / re-send as enabled."""
    check_length(apdu, protocol)
    header = struct.pack("<II", int(protocol), IO_HEADER)
    size = output_size(apdu)
    try:
        out = yield Request(IOCTL.TRANSMIT, header + apdu, size)
    except errors.BufferTooSmallError:
        out = yield Request(IOCTL.TRANSMIT, header + apdu, MAX_OUT)
    return (yield from follow_up_steps(apdu, header, split_response(out), auto_get_response,
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
            out = yield Request(IOCTL.TRANSMIT, header + again, SHORT_OUT)
            resp = split_response(out)
    if auto_get_response and resp.sw1 == 0x61:
        # GET RESPONSE keeps the logical channel of an inter-industry CLA.
        cla = apdu[0] & 0x03 if apdu[0] & 0x80 == 0 else 0x00
        parts = [resp.data]
        for _ in range(MAX_GET_RESPONSE):
            if resp.sw1 != 0x61:
                break
            get = bytes((cla, 0xC0, 0x00, 0x00, resp.sw2))
            out = yield Request(IOCTL.TRANSMIT, header + get, SHORT_OUT)
            resp = split_response(out)
            parts.append(resp.data)
        resp = Response(b"".join(parts), resp.sw1, resp.sw2)
    return resp
