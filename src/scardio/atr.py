"""ISO/IEC 7816-3 Answer-To-Reset (ATR) parser.

:func:`parse_atr` turns the bytes a reader returns after a cold or warm reset
(``IOCTL_SMARTCARD_POWER``, ``SCARD_ATTR_ATR_STRING``) into an immutable
:class:`ATR`.  Structure (ISO/IEC 7816-3:2006, section 8)::

    TS  T0  [TA1 TB1 TC1 TD1]  [TA2 TB2 TC2 TD2]  ...  T1..TK  [TCK]

* ``TS`` is the initial character: ``0x3B`` for the *direct* convention,
  ``0x3F`` for the *inverse* convention.  Readers and their drivers (PC/SC,
  IFD handlers, Windows smart-card drivers) decode inverse-convention
  characters before handing the ATR over, so every byte after TS is already
  a plain value; TS = ``0x3F`` only records which convention the card uses.
  An undecoded inverse TS would read ``0x03``: it is rejected with a hint.
* ``T0`` holds Y1 (high nibble: which of TA1, TB1, TC1, TD1 follow) and K
  (low nibble: the number of historical bytes).
* Each ``TDi`` holds Y(i+1) (high nibble) and a protocol type T (low nibble).
* ``TCK`` (check byte) is present if and only if some TDi indicates a
  protocol other than T=0 (T=15 included); then the XOR of every byte from
  T0 to TCK inclusive is zero.
* The whole ATR is at most 33 bytes (TS plus 32).

Parsing is strict: anything that breaks these rules raises a subclass of
:class:`ATRError` (itself a :class:`ValueError`) whose message names the
byte, its offset, and what was expected versus found.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Optional, Union

__all__ = [
    "ATR",
    "ATRChecksumError",
    "ATRError",
    "ATRInvalidError",
    "ATRTooLongError",
    "ATRTruncatedError",
    "InterfaceGroup",
    "SpecificMode",
    "MAX_ATR_LENGTH",
    "TS_DIRECT",
    "TS_INVERSE",
    "parse_atr",
    "parse_atr_cached",
]

#: Longest legal ATR: TS plus at most 32 further characters.
MAX_ATR_LENGTH = 33

TS_DIRECT = 0x3B
TS_INVERSE = 0x3F
#: What TS = 0x3F looks like when inverse-convention bits are read as direct.
_TS_INVERSE_UNDECODED = 0x03

# FI -> (Fi, f_max in MHz); None marks RFU codes.  ISO/IEC 7816-3 table 7.
_FI_TABLE: dict[int, Optional[tuple[int, float]]] = {
    0x0: (372, 4.0), 0x1: (372, 5.0), 0x2: (558, 6.0), 0x3: (744, 8.0),
    0x4: (1116, 12.0), 0x5: (1488, 16.0), 0x6: (1860, 20.0), 0x7: None,
    0x8: None, 0x9: (512, 5.0), 0xA: (768, 7.5), 0xB: (1024, 10.0),
    0xC: (1536, 15.0), 0xD: (2048, 20.0), 0xE: None, 0xF: None,
}
# DI -> Di; None marks RFU codes.  ISO/IEC 7816-3 table 8.
_DI_TABLE: dict[int, Optional[int]] = {
    0x0: None, 0x1: 1, 0x2: 2, 0x3: 4, 0x4: 8, 0x5: 16, 0x6: 32, 0x7: 64,
    0x8: 12, 0x9: 20, 0xA: None, 0xB: None, 0xC: None, 0xD: None,
    0xE: None, 0xF: None,
}
_DEFAULT_FI_CODE = 0x1  # Fi = 372, f_max = 5 MHz
_DEFAULT_DI_CODE = 0x1  # Di = 1

# Defaults of the protocol-specific parameters.
_DEFAULT_WI = 10  # T=0 waiting time integer (TC2)
_DEFAULT_IFSC = 32  # T=1 information field size for the card
_DEFAULT_BWI = 4  # T=1 block waiting time integer
_DEFAULT_CWI = 13  # T=1 character waiting time integer

# Clock-stop indicator XI (T=15 TA, bits 8-7).
_CLOCK_STOP = {0: "not supported", 1: "state L", 2: "state H", 3: "no preference"}
# Class indicator UI (T=15 TA, bits 6-1): operating-condition classes.
_CLASSES = ((0x01, "A (5 V)"), (0x02, "B (3 V)"), (0x04, "C (1.8 V)"))

# Windows SCARD_PROTOCOL_* mask bits (IOCTL_SMARTCARD_SET_PROTOCOL).
_PROTOCOL_MASK = {0: 0x1, 1: 0x2}

_HEX_SEPARATORS = re.compile(r"[\s:]+")
_HEX_DIGITS = re.compile(r"[0-9A-Fa-f]*")


# --------------------------------------------------------------------------
# Errors


class ATRError(ValueError):
    """An ATR that cannot be parsed.  ``offset`` is the index of the byte at
    fault (None when the error is not about one byte)."""

    def __init__(self, message: str, *, offset: Optional[int] = None) -> None:
        super().__init__(message)
        self.offset = offset


class ATRInvalidError(ATRError):
    """Empty input, not hexadecimal, or a TS that is neither 0x3B nor 0x3F."""


class ATRTruncatedError(ATRError):
    """Interface bytes, historical bytes or TCK announced but missing."""


class ATRTooLongError(ATRError):
    """More than 33 bytes, a byte announced beyond offset 32, or bytes left
    over after the last announced one.  Any input longer than 33 bytes that
    starts with a valid TS raises this error."""


class ATRChecksumError(ATRError):
    """TCK present but the XOR of T0..TCK is not zero."""

    def __init__(self, message: str, *, offset: Optional[int] = None,
                 expected: int = 0, got: int = 0) -> None:
        super().__init__(message, offset=offset)
        self.expected = expected
        self.got = got


# --------------------------------------------------------------------------
# Result types


@dataclass(frozen=True)
class InterfaceGroup:
    """The interface bytes of group *index* (TAi, TBi, TCi, TDi; i >= 1).

    Each byte is None when absent.  ``protocol`` is the T announced by TDi,
    i.e. the protocol that the bytes of group i+1 refer to.
    """

    index: int
    ta: Optional[int] = None
    tb: Optional[int] = None
    tc: Optional[int] = None
    td: Optional[int] = None

    @property
    def protocol(self) -> Optional[int]:
        """T nibble of TDi, or None when TDi is absent."""
        return None if self.td is None else self.td & 0x0F

    def as_dict(self) -> dict[str, Optional[int]]:
        """``{"TAi": ..., "TBi": ..., "TCi": ..., "TDi": ...}`` with i filled in."""
        i = self.index
        return {f"TA{i}": self.ta, f"TB{i}": self.tb,
                f"TC{i}": self.tc, f"TD{i}": self.td}


@dataclass(frozen=True)
class SpecificMode:
    """Decoded TA2: the card is in specific mode (no PPS exchange)."""

    #: Protocol T the card runs in specific mode.
    protocol: int
    #: True when bit 5 is set: the transmission parameters are implicit
    #: (defined by the card, not by the interface bytes).
    implicit: bool
    #: True when bit 8 is clear: the card can switch to negotiable mode
    #: (after a warm reset).
    can_change: bool


def _fmt(value: Optional[int]) -> str:
    return "absent" if value is None else f"0x{value:02X}"


@dataclass(frozen=True)
class ATR:
    """A parsed ATR.  Build it with :func:`parse_atr`.

    The stored fields are exactly the characters of the ATR; every derived
    value (protocols, Fi/Di, T=1 parameters, ...) is a property computed
    from them, with the ISO default when the defining byte is absent.
    """

    #: The ATR bytes exactly as given.
    raw: bytes
    #: "direct" (TS = 0x3B) or "inverse" (TS = 0x3F).  See the module notes.
    convention: str
    ts: int
    t0: int
    #: Interface-byte groups 1..n, in order (empty when Y1 = 0).
    interface: tuple[InterfaceGroup, ...]
    historical: bytes
    #: Check byte, or None when only T=0 is indicated.
    tck: Optional[int]

    # ---- generic accessors -------------------------------------------------

    def __bytes__(self) -> bytes:
        return self.raw

    def __str__(self) -> str:
        return self.hex()

    def hex(self, sep: str = " ") -> str:
        """Upper-case hex, bytes separated by *sep*."""
        return sep.join(f"{b:02X}" for b in self.raw)

    def group(self, index: int) -> Optional[InterfaceGroup]:
        """Interface group *index* (1-based), or None when absent."""
        if 1 <= index <= len(self.interface):
            return self.interface[index - 1]
        return None

    def _byte(self, name: str, index: int) -> Optional[int]:
        g = self.group(index)
        return None if g is None else getattr(g, name)

    @property
    def ta1(self) -> Optional[int]:
        return self._byte("ta", 1)

    @property
    def tb1(self) -> Optional[int]:
        return self._byte("tb", 1)

    @property
    def tc1(self) -> Optional[int]:
        return self._byte("tc", 1)

    @property
    def td1(self) -> Optional[int]:
        return self._byte("td", 1)

    @property
    def ta2(self) -> Optional[int]:
        return self._byte("ta", 2)

    @property
    def tb2(self) -> Optional[int]:
        return self._byte("tb", 2)

    @property
    def tc2(self) -> Optional[int]:
        return self._byte("tc", 2)

    # ---- protocols ---------------------------------------------------------

    @property
    def protocols(self) -> tuple[int, ...]:
        """Protocols offered, ascending (T=15 is global, not a protocol).

        T=0 is implied when TD1 is absent."""
        found = {g.protocol for g in self.interface
                 if g.protocol is not None and g.protocol != 15}
        if self.td1 is None:
            found.add(0)
        return tuple(sorted(found))

    @property
    def default_protocol(self) -> int:
        """The first offered protocol: T of TD1 (T=0 when TD1 is absent).

        In specific mode this is the protocol named by TA2."""
        mode = self.specific_mode
        if mode is not None:
            return mode.protocol
        td1 = self.td1
        return 0 if td1 is None else td1 & 0x0F

    def protocols_mask(self) -> int:
        """Offered protocols as a Windows ``SCARD_PROTOCOL_*`` mask
        (T0 = 1, T1 = 2; other protocols have no bit and are left out)."""
        mask = 0
        for t in self.protocols:
            mask |= _PROTOCOL_MASK.get(t, 0)
        return mask

    @property
    def specific_mode(self) -> Optional[SpecificMode]:
        """Decoded TA2, or None when the card is in negotiable mode."""
        ta2 = self.ta2
        if ta2 is None:
            return None
        return SpecificMode(protocol=ta2 & 0x0F, implicit=bool(ta2 & 0x10),
                            can_change=not ta2 & 0x80)

    # ---- global parameters (TA1, TC1, T=15) ------------------------------

    @property
    def fi_code(self) -> int:
        """FI, the high nibble of TA1 (1 when TA1 is absent)."""
        ta1 = self.ta1
        return _DEFAULT_FI_CODE if ta1 is None else ta1 >> 4

    @property
    def di_code(self) -> int:
        """DI, the low nibble of TA1 (1 when TA1 is absent)."""
        ta1 = self.ta1
        return _DEFAULT_DI_CODE if ta1 is None else ta1 & 0x0F

    @property
    def fi(self) -> Optional[int]:
        """Clock rate conversion integer Fi (372 by default); None if RFU."""
        entry = _FI_TABLE[self.fi_code]
        return None if entry is None else entry[0]

    @property
    def di(self) -> Optional[int]:
        """Baud rate adjustment integer Di (1 by default); None if RFU."""
        return _DI_TABLE[self.di_code]

    @property
    def f_max(self) -> Optional[float]:
        """Maximum clock frequency in MHz (5 by default); None if FI is RFU."""
        entry = _FI_TABLE[self.fi_code]
        return None if entry is None else entry[1]

    @property
    def fi_rfu(self) -> bool:
        """TA1 holds a reserved FI code."""
        return _FI_TABLE[self.fi_code] is None

    @property
    def di_rfu(self) -> bool:
        """TA1 holds a reserved DI code."""
        return _DI_TABLE[self.di_code] is None

    @property
    def extra_guard_time(self) -> int:
        """N from TC1 (0 when absent).  255 means the minimum guard time."""
        tc1 = self.tc1
        return 0 if tc1 is None else tc1

    def guard_time_etu(self, protocol: Optional[int] = None) -> int:
        """Character guard time in etu: 12 + N, or for N = 255 the minimum:
        12 etu under T=0 and 11 etu under T=1 (*protocol* defaults to
        :attr:`default_protocol`)."""
        n = self.extra_guard_time
        if n == 255:
            t = self.default_protocol if protocol is None else protocol
            return 11 if t == 1 else 12
        return 12 + n

    @property
    def wi(self) -> int:
        """T=0 waiting time integer WI from TC2 (10 by default)."""
        tc2 = self.tc2
        return _DEFAULT_WI if tc2 is None else tc2

    def _first_after(self, protocol: int, name: str) -> Optional[int]:
        """First interface byte *name* in a group i > 2 whose TD(i-1)
        indicates *protocol* (ISO 7816-3 protocol-specific bytes)."""
        for prev, grp in zip(self.interface, self.interface[1:]):
            if grp.index > 2 and prev.protocol == protocol:
                value: Optional[int] = getattr(grp, name)
                if value is not None:
                    return value
        return None

    @property
    def clock_stop(self) -> Optional[str]:
        """Clock stop indicator XI from the first TA for T=15, or None."""
        ta = self._first_after(15, "ta")
        return None if ta is None else _CLOCK_STOP[ta >> 6]

    @property
    def classes(self) -> Optional[tuple[str, ...]]:
        """Supported operating classes from the class indicator UI (first TA
        for T=15), or None when absent.  Only class A is implied then."""
        ta = self._first_after(15, "ta")
        if ta is None:
            return None
        return tuple(name for bit, name in _CLASSES if ta & bit)

    # ---- T=1 parameters ----------------------------------------------------

    @property
    def ifsc(self) -> int:
        """T=1 IFSC: first TA after a TD indicating T=1 (i > 2); 32 by default."""
        ta = self._first_after(1, "ta")
        return _DEFAULT_IFSC if ta is None else ta

    @property
    def ifsc_invalid(self) -> bool:
        """IFSC given as 0x00 or 0xFF, which ISO 7816-3 reserves."""
        ta = self._first_after(1, "ta")
        return ta in (0x00, 0xFF)

    @property
    def bwi(self) -> int:
        """T=1 block waiting time integer (high nibble of the first T=1 TB); 4 by default."""
        tb = self._first_after(1, "tb")
        return _DEFAULT_BWI if tb is None else tb >> 4

    @property
    def cwi(self) -> int:
        """T=1 character waiting time integer (low nibble of the first T=1 TB); 13 by default."""
        tb = self._first_after(1, "tb")
        return _DEFAULT_CWI if tb is None else tb & 0x0F

    @property
    def error_detection(self) -> str:
        """T=1 error detection code from the first T=1 TC, bit 1: "LRC" (default) or "CRC"."""
        tc = self._first_after(1, "tc")
        return "CRC" if tc is not None and tc & 0x01 else "LRC"

    # ---- human-readable --------------------------------------------------

    def describe(self) -> list[str]:
        """Human-readable lines, one per character or derived parameter."""
        lines = [f"ATR: {self.hex()} ({len(self.raw)} bytes)"]
        conv = ("direct convention" if self.convention == "direct" else
                "inverse convention (bytes already decoded by the reader)")
        lines.append(f"TS  = 0x{self.ts:02X}: {conv}")
        lines.append(f"T0  = 0x{self.t0:02X}: Y1 = 0x{self.t0 >> 4:X}, "
                     f"K = {self.t0 & 0x0F} historical bytes")
        for g in self.interface:
            i = g.index
            if g.ta is not None:
                lines.append(f"TA{i} = 0x{g.ta:02X}")
            if g.tb is not None:
                lines.append(f"TB{i} = 0x{g.tb:02X}")
            if g.tc is not None:
                lines.append(f"TC{i} = 0x{g.tc:02X}")
            if g.td is not None:
                lines.append(f"TD{i} = 0x{g.td:02X}: Y{i + 1} = 0x{g.td >> 4:X}, "
                             f"T = {g.td & 0x0F}")
        offered = ", ".join(f"T={t}" for t in self.protocols) or "none"
        implied = " (T=0 implied: TD1 absent)" if self.td1 is None else ""
        lines.append(f"Protocols: {offered}{implied}; default T={self.default_protocol}"
                     f"; Windows mask 0x{self.protocols_mask():X}")
        mode = self.specific_mode
        if mode is None:
            lines.append("Mode: negotiable (TA2 absent)")
        else:
            lines.append(
                f"Mode: specific, T={mode.protocol}, parameters "
                f"{'implicit' if mode.implicit else 'from the interface bytes'}, "
                f"{'can' if mode.can_change else 'cannot'} change to negotiable mode")
        src = "TA1" if self.ta1 is not None else "default, TA1 absent"
        fi = "RFU" if self.fi is None else str(self.fi)
        di = "RFU" if self.di is None else str(self.di)
        fmax = "RFU" if self.f_max is None else f"{self.f_max:g} MHz"
        lines.append(f"Fi = {fi} (FI = 0x{self.fi_code:X}), Di = {di} "
                     f"(DI = 0x{self.di_code:X}), f_max = {fmax} ({src})")
        if self.fi_rfu or self.di_rfu:
            lines.append("Warning: TA1 uses a reserved (RFU) FI or DI code")
        n = self.extra_guard_time
        lines.append(f"Extra guard time N = {n}"
                     + (" (minimum guard time)" if n == 255 else "")
                     + f": {self.guard_time_etu()} etu")
        if self.tc2 is not None:
            lines.append(f"T=0 WI = {self.wi}")
        if self.clock_stop is not None:
            lines.append(f"Clock stop: {self.clock_stop}; classes: "
                         f"{', '.join(self.classes or ()) or 'none'}")
        if 1 in self.protocols:
            lines.append(f"T=1: IFSC = {self.ifsc}"
                         + (" (invalid)" if self.ifsc_invalid else "")
                         + f", BWI = {self.bwi}, CWI = {self.cwi}, "
                         f"error detection {self.error_detection}")
        hist = " ".join(f"{b:02X}" for b in self.historical)
        text = "".join(chr(b) if 0x20 <= b < 0x7F else "." for b in self.historical)
        lines.append(f"Historical bytes ({len(self.historical)}): {hist}"
                     + (f' "{text}"' if self.historical else ""))
        if self.tck is None:
            lines.append("TCK absent (only T=0 indicated)")
        else:
            lines.append(f"TCK = 0x{self.tck:02X} (correct)")
        return lines


# --------------------------------------------------------------------------
# Parser


def _to_bytes(data: Union[bytes, bytearray, memoryview, str]) -> bytes:
    if isinstance(data, str):
        # "3B 8F", "3b:8f", "3B8F", "0x3B 0x8F": drop separators and 0x prefixes
        digits = "".join(token[2:] if token[:2] in ("0x", "0X") else token
                         for token in _HEX_SEPARATORS.split(data))
        if not _HEX_DIGITS.fullmatch(digits):
            bad = next(c for c in digits if c not in "0123456789abcdefABCDEF")
            raise ATRInvalidError(f"ATR string is not hexadecimal: unexpected {bad!r}")
        if len(digits) % 2:
            raise ATRInvalidError(
                f"ATR string has an odd number of hex digits ({len(digits)})")
        return bytes.fromhex(digits)
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data)
    raise TypeError(f"parse_atr() needs bytes or a hex str, not {type(data).__name__}")


def parse_atr(data: Union[bytes, bytearray, memoryview, str]) -> ATR:
    """Parse an ATR given as bytes or as a hex string ("3B 8F 80 ...",
    "3b:8f:80", "3B8F80", "0x3B 0x8F 0x80"; whitespace and colons ignored).

    Raises :class:`ATRInvalidError`, :class:`ATRTruncatedError`,
    :class:`ATRTooLongError` or :class:`ATRChecksumError` (all
    :class:`ATRError`, a :class:`ValueError`).
    """
    raw = _to_bytes(data)
    n = len(raw)
    if n == 0:
        raise ATRInvalidError("ATR is empty")
    ts = raw[0]
    if ts == TS_DIRECT:
        convention = "direct"
    elif ts == TS_INVERSE:
        convention = "inverse"
    else:
        hint = ""
        if ts == _TS_INVERSE_UNDECODED:
            hint = (" (0x03 is an inverse-convention TS read as direct: the "
                    "bytes were not decoded; expected 0x3F)")
        raise ATRInvalidError(
            f"TS at offset 0 is 0x{ts:02X}, expected 0x3B (direct) or "
            f"0x3F (inverse){hint}", offset=0)
    if n < 2:
        raise ATRTruncatedError("ATR ends after TS: T0 missing at offset 1", offset=1)

    t0 = raw[1]
    pos = 2
    groups: list[InterfaceGroup] = []
    y = t0 >> 4
    announcer = f"T0=0x{t0:02X}"
    tck_needed = False
    index = 1
    while y:
        values: dict[str, Optional[int]] = {}
        for bit, name in ((0x1, "ta"), (0x2, "tb"), (0x4, "tc"), (0x8, "td")):
            if y & bit:
                if pos >= MAX_ATR_LENGTH:
                    raise ATRTooLongError(
                        f"{announcer} announces {name.upper()}{index} at offset {pos}, "
                        f"beyond the maximum ATR length of {MAX_ATR_LENGTH} bytes",
                        offset=pos)
                if pos >= n:
                    raise ATRTruncatedError(
                        f"{announcer} announces {name.upper()}{index} at offset {pos}, "
                        f"but the ATR ends after {n} bytes", offset=pos)
                values[name] = raw[pos]
                pos += 1
        group = InterfaceGroup(index, **values)
        groups.append(group)
        td = group.td
        if td is None:
            break
        if td & 0x0F:
            tck_needed = True
        announcer = f"TD{index}=0x{td:02X}"
        y = td >> 4
        index += 1

    k = t0 & 0x0F
    if pos + k > MAX_ATR_LENGTH:
        raise ATRTooLongError(
            f"T0=0x{t0:02X} announces {k} historical bytes from offset {pos}, "
            f"beyond the maximum ATR length of {MAX_ATR_LENGTH} bytes",
            offset=MAX_ATR_LENGTH)
    if pos + k > n:
        have = n - pos
        raise ATRTruncatedError(
            f"T0=0x{t0:02X} announces {k} historical bytes from offset {pos}, "
            f"but only {have} {'is' if have == 1 else 'are'} present", offset=n)
    historical = raw[pos:pos + k]
    pos += k

    tck: Optional[int] = None
    if tck_needed:
        if pos >= MAX_ATR_LENGTH:
            raise ATRTooLongError(
                f"TCK would be at offset {pos}, beyond the maximum ATR length of "
                f"{MAX_ATR_LENGTH} bytes", offset=pos)
        if pos >= n:
            protos = sorted({g.protocol for g in groups if g.protocol})
            raise ATRTruncatedError(
                f"TCK missing at offset {pos}: required because TD indicates "
                f"T={', T='.join(map(str, protos))}", offset=pos)
        tck = raw[pos]
        pos += 1

    if n > pos:
        extra = raw[pos:]
        what = "TCK" if tck is not None else (
            "the last historical byte" if k else "the last interface byte")
        hint = "" if tck_needed else " (no TCK expected: only T=0 is indicated)"
        raise ATRTooLongError(
            f"{len(extra)} unexpected byte(s) after {what}, from offset {pos}: "
            f"{extra.hex(' ').upper()}{hint}", offset=pos)

    if tck is not None:
        check = 0
        for b in raw[1:-1]:
            check ^= b
        if check != tck:
            raise ATRChecksumError(
                f"TCK at offset {n - 1} is 0x{tck:02X}, expected 0x{check:02X} "
                f"(XOR of T0..last historical byte)",
                offset=n - 1, expected=check, got=tck)

    return ATR(raw=raw, convention=convention, ts=ts, t0=t0,
               interface=tuple(groups), historical=bytes(historical), tck=tck)


#: ATRs remembered by :func:`parse_atr_cached` (a reader sees a handful).
ATR_CACHE_SIZE = 64


@functools.lru_cache(maxsize=ATR_CACHE_SIZE)
def _parse_cached(raw: bytes) -> ATR:
    return parse_atr(raw)


def parse_atr_cached(raw: bytes) -> ATR:
    """:func:`parse_atr` of ATR bytes, remembered per bytes value (the last
    ``ATR_CACHE_SIZE`` distinct ATRs): every connect of the same card
    returns the same immutable :class:`ATR` without parsing it again.
    Malformed ATRs are not remembered; they raise as parse_atr does."""
    if type(raw) is not bytes:
        raw = bytes(raw)
    return _parse_cached(raw)
