"""Command APDUs (ISO/IEC 7816-4 section 5.1): build, parse, check.

Cases, with Nc the command data length and Ne the expected response length::

    1    CLA INS P1 P2
    2S   CLA INS P1 P2 Le                      Le 00 means Ne 256
    3S   CLA INS P1 P2 Lc Data                 Lc 01..FF
    4S   CLA INS P1 P2 Lc Data Le
    2E   CLA INS P1 P2 00 Le1 Le2              Le 0000 means Ne 65536
    3E   CLA INS P1 P2 00 Lc1 Lc2 Data         Lc 0001..FFFF
    4E   CLA INS P1 P2 00 Lc1 Lc2 Data Le1 Le2

Every error is an :class:`APDUError` (a ``ValueError``) whose message says
what was wrong, where, and what was expected.
"""

from __future__ import annotations

import operator
import re
from dataclasses import dataclass
from typing import Optional, Union

from .constants import Protocol

__all__ = ["APDU", "APDUError", "APDULengthError", "HexError", "parse_hex",
           "parse_apdu", "to_apdu_bytes", "check_length", "max_apdu_length",
           "MAX_SHORT_NC", "MAX_SHORT_NE", "MAX_EXTENDED_NC", "MAX_EXTENDED_NE",
           "MAX_APDU"]

MAX_SHORT_NC = 255
MAX_SHORT_NE = 256
MAX_EXTENDED_NC = 65535
MAX_EXTENDED_NE = 65536
#: Longest command APDU: header, extended Lc, 65535 data bytes, extended Le.
MAX_APDU = 4 + 3 + MAX_EXTENDED_NC + 2
#: Longest on T=0: short case 4 (the driver drops Le and uses GET RESPONSE).
MAX_T0_APDU = 4 + 1 + MAX_SHORT_NC + 1


class APDUError(ValueError):
    """A malformed APDU or APDU text."""


class HexError(APDUError):
    """Text that is not hexadecimal bytes."""


class APDULengthError(APDUError):
    """An APDU too short or too long for the protocol in use."""


_SEPARATORS = re.compile(r"[\s:,_\-]+")


def parse_hex(text: str) -> bytes:
    """Bytes from hex text.  Spaces, colons, commas, dashes and underscores
    between digits are ignored, as is a leading ``0x``; anything else is an
    error that names the offending character and its position."""
    if not isinstance(text, str):
        raise TypeError(f"parse_hex() needs str, not {type(text).__name__}")
    body = text.strip()
    start = len(text) - len(text.lstrip())
    if body[:2].lower() == "0x":
        body = body[2:]
        start += 2
    digits = []
    for i, ch in enumerate(body):
        if ch in "0123456789abcdefABCDEF":
            digits.append(ch)
        elif not _SEPARATORS.fullmatch(ch):
            raise HexError(f"invalid character {ch!r} at position {start + i} in "
                           f"hex text {text!r} (expected 0-9, a-f; separators: "
                           "space : , - _)")
    if not digits:
        raise HexError(f"no hex digits in {text!r}")
    if len(digits) % 2:
        raise HexError(f"odd number of hex digits ({len(digits)}) in {text!r}: "
                       "every byte needs two digits")
    return bytes.fromhex("".join(digits))


@dataclass(frozen=True)
class APDU:
    """A command APDU.  ``ne`` is the expected response length (None: no
    Le field); ``extended`` forces the extended encoding (None: only when
    Nc or Ne needs it)."""

    cla: int
    ins: int
    p1: int = 0
    p2: int = 0
    data: bytes = b""
    ne: Optional[int] = None
    extended: Optional[bool] = None

    def __post_init__(self) -> None:
        for name in ("cla", "ins", "p1", "p2"):
            v = getattr(self, name)
            if not isinstance(v, int) or not 0 <= v <= 0xFF:
                raise APDUError(f"{name.upper()} must be a byte (0..255), got {v!r}")
        object.__setattr__(self, "data", bytes(self.data))
        if len(self.data) > MAX_EXTENDED_NC:
            raise APDUError(f"command data of {len(self.data)} bytes is longer than "
                            f"{MAX_EXTENDED_NC}, the extended-length maximum")
        if self.ne is not None and not 0 < self.ne <= MAX_EXTENDED_NE:
            raise APDUError(f"Ne must be 1..{MAX_EXTENDED_NE} or None, got {self.ne}")
        if self.extended is False and (len(self.data) > MAX_SHORT_NC or
                                       (self.ne or 0) > MAX_SHORT_NE):
            raise APDUError("Nc > 255 or Ne > 256 needs the extended encoding")

    @property
    def is_extended(self) -> bool:
        if self.extended is not None:
            return self.extended
        return len(self.data) > MAX_SHORT_NC or (self.ne or 0) > MAX_SHORT_NE

    @property
    def case(self) -> str:
        """ISO case: "1", "2S", "3S", "4S", "2E", "3E" or "4E"."""
        n = 1 + (self.ne is not None) + 2 * bool(self.data)
        return str(n) if n == 1 else f"{n}{'E' if self.is_extended else 'S'}"

    def __bytes__(self) -> bytes:
        out = bytearray((self.cla, self.ins, self.p1, self.p2))
        nc = len(self.data)
        if self.is_extended:
            if nc:
                out += b"\x00" + nc.to_bytes(2, "big") + self.data
            if self.ne is not None:
                if not nc:
                    out += b"\x00"  # case 2E: the 00 marker precedes Le
                out += (self.ne % 65536).to_bytes(2, "big")
        else:
            if nc:
                out += bytes((nc,)) + self.data
            if self.ne is not None:
                out.append(self.ne % 256)
        return bytes(out)

    def hex(self, sep: str = " ") -> str:
        return bytes(self).hex(sep).upper() if sep else bytes(self).hex().upper()

    def with_ne(self, ne: int) -> "APDU":
        return APDU(self.cla, self.ins, self.p1, self.p2, self.data, ne, None)


def parse_apdu(data: Union[bytes, bytearray, memoryview, str]) -> APDU:
    """Decode a command APDU (bytes, or hex text) per ISO 7816-4."""
    raw = parse_hex(data) if isinstance(data, str) else bytes(data)
    n = len(raw)
    if n < 4:
        raise APDULengthError(f"APDU of {n} byte(s) is too short: a command needs at "
                              "least the 4 header bytes CLA INS P1 P2")
    cla, ins, p1, p2 = raw[:4]
    body = raw[4:]
    b = len(body)
    if b == 0:
        return APDU(cla, ins, p1, p2)
    if b == 1:
        return APDU(cla, ins, p1, p2, ne=body[0] or 256, extended=False)
    if body[0] != 0:  # short Lc
        lc = body[0]
        if b == 1 + lc:
            return APDU(cla, ins, p1, p2, body[1:], extended=False)
        if b == 2 + lc:
            return APDU(cla, ins, p1, p2, body[1:-1], ne=body[-1] or 256, extended=False)
        raise APDUError(f"Lc is {lc} but {b - 1} byte(s) follow it (expected {lc}, "
                        f"or {lc + 1} with Le)")
    # body[0] == 0 and b >= 2: extended encoding
    if b == 3:
        ne = int.from_bytes(body[1:3], "big") or 65536
        return APDU(cla, ins, p1, p2, ne=ne, extended=True)
    if b < 3:
        raise APDUError("extended length field truncated: 00 must be followed by "
                        "two length bytes")
    lc = int.from_bytes(body[1:3], "big")
    if lc == 0:
        raise APDUError("extended Lc is 0000 (an extended Lc is 0001..FFFF)")
    if b == 3 + lc:
        return APDU(cla, ins, p1, p2, body[3:], extended=True)
    if b == 5 + lc:
        ne = int.from_bytes(body[-2:], "big") or 65536
        return APDU(cla, ins, p1, p2, body[3:-2], ne=ne, extended=True)
    raise APDUError(f"extended Lc is {lc} but {b - 3} byte(s) follow it (expected "
                    f"{lc}, or {lc + 2} with an extended Le)")


ApduLike = Union[bytes, bytearray, memoryview, str, APDU, list[int], tuple[int, ...]]


def to_apdu_bytes(apdu: ApduLike) -> bytes:
    """Bytes of an APDU given as bytes, hex text, :class:`APDU` or a list
    (or tuple) of ints 0..255, as pyscard takes them."""
    if isinstance(apdu, APDU):
        return bytes(apdu)
    if isinstance(apdu, str):
        return parse_hex(apdu)
    if isinstance(apdu, (bytes, bytearray, memoryview)):
        return bytes(apdu)
    if isinstance(apdu, (list, tuple)):
        try:
            return bytes(apdu)
        except (TypeError, ValueError):
            raise _bad_element(apdu) from None
    raise TypeError(f"an APDU is bytes, hex str, a list of ints or scardio.apdu.APDU, "
                    f"not {type(apdu).__name__}")


def _bad_element(apdu: Union[list[int], tuple[int, ...]]) -> APDUError:
    for i, v in enumerate(apdu):
        try:
            n = operator.index(v)
        except TypeError:
            return APDUError(f"APDU element {i} is {v!r} ({type(v).__name__}): every "
                             "element of a list APDU must be an int 0..255")
        if not 0 <= n <= 0xFF:
            return APDUError(f"APDU element {i} is {n}: every element of a list APDU "
                             "must be a byte value 0..255")
    return APDUError("APDU list is not a sequence of byte values 0..255")


def max_apdu_length(protocol: int) -> int:
    return MAX_T0_APDU if protocol == Protocol.T0 else MAX_APDU


_T0 = int(Protocol.T0)
_RAW = int(Protocol.RAW)
_PROTOCOL_NAMES = {_T0: "T=0", int(Protocol.T1): "T=1", _RAW: "RAW"}


def check_length(apdu: bytes, protocol: int) -> None:
    """Raise :class:`APDULengthError` when `apdu` cannot be sent with
    `protocol` (T=0 carries short APDUs only; RAW anything non-empty)."""
    # Every transmit passes here: decide the lengths that fit at once and
    # leave the rest, and every message, to _check_length_in_detail.
    n = len(apdu)
    if 4 <= n <= 5:
        return  # header (+ one length byte) fits every protocol
    if protocol == _T0:
        # n >= 6 here: a non-zero fifth byte is a short Lc
        if 4 <= n <= MAX_T0_APDU and apdu[4] != 0:
            return
    elif protocol == _RAW:
        if 0 < n <= MAX_APDU:
            return
    elif 4 <= n <= MAX_APDU:
        return
    _check_length_in_detail(apdu, protocol)


def _check_length_in_detail(apdu: bytes, protocol: int) -> None:
    """check_length's cases that may fail, each with its own message."""
    n = len(apdu)
    if protocol == Protocol.RAW:
        if n == 0:
            raise APDULengthError("empty command")
        if n > MAX_APDU:
            raise APDULengthError(f"command of {n} bytes is longer than {MAX_APDU}")
        return
    if n < 4:
        raise APDULengthError(f"APDU of {n} byte(s) is too short for "
                              f"{_protocol_name(protocol)}: at least "
                              "the 4 header bytes CLA INS P1 P2 are needed")
    limit = max_apdu_length(protocol)
    if n > limit:
        hint = " (extended APDUs need T=1)" if protocol == Protocol.T0 else ""
        raise APDULengthError(f"APDU of {n} bytes is too long for "
                              f"{_protocol_name(protocol)}: at most {limit}{hint}")
    if protocol == Protocol.T0 and n > 5 and apdu[4] == 0:
        # 00 after the header starts an extended length: not on T=0.
        try:
            parsed = parse_apdu(apdu)
        except APDUError:
            return  # not ISO-formed: let the card answer it
        if parsed.is_extended:
            raise APDULengthError(f"extended APDU (case {parsed.case}) cannot be sent "
                                  "with T=0; extended APDUs need T=1")


def _protocol_name(protocol: int) -> str:
    return _PROTOCOL_NAMES.get(int(protocol), f"protocol {protocol:#x}")
