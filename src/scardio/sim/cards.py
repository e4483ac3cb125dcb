"""Virtual cards to start from: a file-system card, an applet router, and a
card that misbehaves on purpose.

:class:`FileSystemCard` answers exactly as the simulated reader's built-in
C card (native/sim/README.md, "Card model"), so the same APDU script run
against both gives the same bytes: the reader's T=0 framing turns its
APDU-level answers into the built-in card's ``61xx`` / ``6Cxx`` ones.
"""

from __future__ import annotations

import time
from typing import Iterable, Optional

from . import AID, ATR_T0, ATR_T1, EF_SIZE, INS_ECHO
from .virtual_card import CardMute, VirtualCard

__all__ = ["FileSystemCard", "Applet", "AppletRouter", "FaultyCard"]

# Status words.
_OK = b"\x90\x00"
_EOF_WARNING = b"\x62\x82"
_WRONG_LENGTH = b"\x67\x00"
_CHANNEL_UNSUPPORTED = b"\x68\x81"
_SM_UNSUPPORTED = b"\x68\x82"
_CHAINING_UNSUPPORTED = b"\x68\x84"
_CONDITIONS = b"\x69\x85"
_NO_EF_SELECTED = b"\x69\x86"
_FILE_NOT_FOUND = b"\x6a\x82"
_NOT_ENOUGH_SPACE = b"\x6a\x84"
_WRONG_P1P2 = b"\x6a\x86"
_WRONG_OFFSET = b"\x6b\x00"
_INS_UNSUPPORTED = b"\x6d\x00"
_CLA_UNSUPPORTED = b"\x6e\x00"

# Data bytes of one response at most: extended Ne 65536 is capped so that
# data + SW1 SW2 stays within 65537 bytes, as the built-in card does.
_MAX_DATA = 65535


def _lengths(apdu: bytes) -> Optional[tuple[bytes, int, bool, bool]]:
    """(data, Ne, has Le, extended) of a command APDU of 4+ bytes, or None
    when its lengths are inconsistent (ISO 7816-3 12.1.3)."""
    body = len(apdu) - 4
    if body == 0:
        return b"", 0, False, False
    if body == 1:
        return b"", apdu[4] or 256, True, False
    if apdu[4] != 0:
        nc = apdu[4]
        if body == 1 + nc:
            return apdu[5:5 + nc], 0, False, False
        if body == 2 + nc:
            return apdu[5:5 + nc], apdu[5 + nc] or 256, True, False
        return None
    if body == 3:
        return b"", int.from_bytes(apdu[5:7], "big") or 65536, True, True
    if body < 3:
        return None
    nc = int.from_bytes(apdu[5:7], "big")
    if nc == 0:
        return None
    if body == 3 + nc:
        return apdu[7:7 + nc], 0, False, True
    if body == 5 + nc:
        return apdu[7:7 + nc], int.from_bytes(apdu[7 + nc:9 + nc], "big") or 65536, True, True
    return None


def _check_class(cla: int) -> tuple[Optional[bytes], bool]:
    """(status word refusing the class or None, proprietary)."""
    if cla == 0xFF:
        return _CLA_UNSUPPORTED, False
    if cla & 0xE0 in (0x00, 0x80):
        chaining, sm, channel = cla & 0x10, (cla >> 2) & 0x03, cla & 0x03
        proprietary = bool(cla & 0x80)
    elif cla & 0xC0 == 0x40:
        chaining, sm, channel = cla & 0x10, (cla >> 5) & 0x01, 4
        proprietary = False
    else:
        return _CLA_UNSUPPORTED, False
    if channel:
        return _CHANNEL_UNSUPPORTED, proprietary
    if sm:
        return _SM_UNSUPPORTED, proprietary
    if chaining:
        return _CHAINING_UNSUPPORTED, proprietary
    return None, proprietary


class FileSystemCard(VirtualCard):
    """An ISO 7816-4 file-system card, the Python twin of the simulated
    reader's built-in card: MF 3F00 with EF 2F01, the application
    ``scardio.sim.AID`` with EF 0101 (both ``scardio.sim.EF_SIZE``
    bytes, initially ``i & 0xFF``); SELECT, READ BINARY, UPDATE BINARY,
    GET CHALLENGE (the same deterministic bytes), GET RESPONSE and the
    proprietary ECHO (``80 EE``).  `t0` gives it the built-in T=0 card's
    ATR (``scardio.sim.ATR_T0``) instead of the T=1 one."""

    def __init__(self, *, t0: bool = False) -> None:
        self.atr = ATR_T0 if t0 else ATR_T1
        self.ef_mf = bytearray(i & 0xFF for i in range(EF_SIZE))
        self.ef_app = bytearray(self.ef_mf)
        self._rng = 0x5CA2D10  # the built-in card's seed: the same challenges
        self._selected: Optional[bytearray] = None
        self._in_app = False

    def power_up(self) -> None:
        self._forget_selection()

    def reset(self, warm: bool) -> None:
        self._forget_selection()

    def _forget_selection(self) -> None:
        self._selected = None   # after reset the MF is current, no EF selected
        self._in_app = False

    def apdu(self, command: bytes) -> bytes:
        n = len(command)
        if n < 4:
            return _WRONG_LENGTH
        cla = command[0]
        if cla == 0x00 or cla == 0x80:     # the common classes, decided at once
            proprietary = cla == 0x80
        else:
            refused, proprietary = _check_class(cla)
            if refused is not None:
                return refused
        if n == 5:                         # case 2S, the common read
            data, ne, has_le = b"", command[4] or 256, True
        else:
            lengths = _lengths(command)
            if lengths is None:
                return _WRONG_LENGTH
            data, ne, has_le, _ = lengths
        ins, p1, p2 = command[1], command[2], command[3]
        if proprietary:
            return self._echo(data, ne) if ins == INS_ECHO else _INS_UNSUPPORTED
        if ins == 0xA4:
            return self._select(p1, p2, data)
        if ins == 0xB0:
            return self._read_binary(p1, p2, data, ne, has_le)
        if ins == 0xD6:
            return self._update_binary(p1, p2, data)
        if ins == 0x84:
            return self._get_challenge(p1, p2, data, ne, has_le)
        if ins == 0xC0:
            # Pending data exists only under T=0, where the reader serves it.
            if not has_le or data:
                return _WRONG_LENGTH
            return _WRONG_P1P2 if p1 or p2 else _CONDITIONS
        return _INS_UNSUPPORTED

    def _select(self, p1: int, p2: int, data: bytes) -> bytes:
        if p2 & ~0x0C:
            return _WRONG_P1P2
        if p1 == 0x00:
            if not data:
                fid = 0x3F00
            elif len(data) == 2:
                fid = int.from_bytes(data, "big")
            else:
                return _WRONG_LENGTH
            if fid == 0x3F00:
                self._forget_selection()
            elif fid == 0x2F01 and not self._in_app:
                self._selected = self.ef_mf
            elif fid == 0x0101 and self._in_app:
                self._selected = self.ef_app
            else:
                return _FILE_NOT_FOUND
            return _OK
        if p1 == 0x04:
            if not 1 <= len(data) <= 16:
                return _WRONG_LENGTH
            if data != AID:
                return _FILE_NOT_FOUND
            self._in_app = True
            self._selected = None
            return _OK
        return _WRONG_P1P2

    def _locate(self, p1: int, p2: int) -> tuple[Optional[bytes], int]:
        """(refusing status word or None, offset) for READ / UPDATE BINARY."""
        if self._selected is None:
            return _NO_EF_SELECTED, 0
        if p1 & 0x80:          # a short EF identifier: not supported
            return _WRONG_P1P2, 0
        offset = (p1 & 0x7F) << 8 | p2
        if offset >= EF_SIZE:
            return _WRONG_OFFSET, 0
        return None, offset

    def _read_binary(self, p1: int, p2: int, data: bytes, ne: int, has_le: bool) -> bytes:
        # The checks of _locate, inlined: READ BINARY is the common command.
        if not has_le or data:
            return _WRONG_LENGTH
        ef = self._selected
        if ef is None:
            return _NO_EF_SELECTED
        if p1 & 0x80:
            return _WRONG_P1P2
        offset = (p1 & 0x7F) << 8 | p2
        if offset >= EF_SIZE:
            return _WRONG_OFFSET
        end = offset + (ne if ne <= _MAX_DATA else _MAX_DATA)
        if end > EF_SIZE:          # the rest, with the end-of-file warning
            return bytes(ef[offset:]) + _EOF_WARNING
        return bytes(ef[offset:end]) + _OK

    def _update_binary(self, p1: int, p2: int, data: bytes) -> bytes:
        if not data:
            return _WRONG_LENGTH
        refused, offset = self._locate(p1, p2)
        if refused is not None:
            return refused
        if len(data) > EF_SIZE - offset:
            return _NOT_ENOUGH_SPACE
        ef = self._selected
        assert ef is not None
        ef[offset:offset + len(data)] = data
        return _OK

    def _get_challenge(self, p1: int, p2: int, data: bytes, ne: int, has_le: bool) -> bytes:
        if not has_le or data:
            return _WRONG_LENGTH
        if p1 or p2:
            return _WRONG_P1P2
        out = bytearray(min(ne, _MAX_DATA))
        x = self._rng
        for i in range(len(out)):   # xorshift32, the top byte of each state
            x ^= (x << 13) & 0xFFFFFFFF
            x ^= x >> 17
            x ^= (x << 5) & 0xFFFFFFFF
            out[i] = x >> 24
        self._rng = x
        return bytes(out) + _OK

    @staticmethod
    def _echo(data: bytes, ne: int) -> bytes:
        n = min(ne, _MAX_DATA)
        if not data:
            return bytes(i & 0xFF for i in range(n)) + _OK
        return (data * (n // len(data) + 1))[:n] + _OK


class Applet:
    """One application of an :class:`AppletRouter`, selected by its AID.

    Subclasses set :attr:`aid` and override :meth:`apdu`; :meth:`select`
    answers the SELECT that chose the applet (``90 00`` by default: give
    FCI data before the status word if the applet has some)."""

    #: The application identifier (5..16 bytes).
    aid: bytes = b""

    def select(self, command: bytes) -> bytes:
        """The SELECT by AID that made this applet current."""
        return _OK

    def deselect(self) -> None:
        """Another applet was selected, or the card was reset."""

    def apdu(self, command: bytes) -> bytes:
        """Any command other than SELECT by AID while this applet is current."""
        return _INS_UNSUPPORTED


class AppletRouter(VirtualCard):
    """A card holding several :class:`Applet` objects: SELECT by AID
    (``00 A4 04 ..``) makes the first applet whose AID starts with the given
    bytes current (ISO 7816-4 partial selection; ``6A 82`` when none matches,
    and the current applet stays), every other command goes to the current
    applet (``69 85`` while none is).  A reset deselects."""

    def __init__(self, applets: Iterable[Applet], *, atr: bytes = ATR_T1) -> None:
        self.applets = list(applets)
        for applet in self.applets:
            if not 1 <= len(applet.aid) <= 16:
                raise ValueError(f"{type(applet).__name__}.aid must have 1..16 bytes, "
                                 f"not {len(applet.aid)}")
        self.atr = atr
        self.current: Optional[Applet] = None

    def _deselect(self) -> None:
        if self.current is not None:
            self.current.deselect()
            self.current = None

    def power_up(self) -> None:
        self._deselect()

    def reset(self, warm: bool) -> None:
        self._deselect()

    def apdu(self, command: bytes) -> bytes:
        if len(command) >= 4 and command[0] & 0xFC == 0 and command[1:3] == b"\xa4\x04":
            aid = command[5:5 + command[4]] if len(command) > 5 else b""
            if not aid or len(aid) != command[4]:
                return _WRONG_LENGTH
            for applet in self.applets:
                if applet.aid.startswith(aid):
                    if applet is not self.current:
                        self._deselect()
                        self.current = applet
                    return applet.select(command)
            return _FILE_NOT_FOUND
        if self.current is None:
            return _CONDITIONS
        return self.current.apdu(command)


class FaultyCard(VirtualCard):
    """A card that misbehaves on purpose, around another card (by default a
    :class:`FileSystemCard`).  Each misbehaviour is an attribute, changeable
    at any time:

    - ``delay``: seconds slept before each answer (a slow card);
    - ``length_delta``: bytes added (zeros, before the status word) to or,
      when negative, removed from the end of each answer's data; removing
      more than the data also eats the status word, which makes the answer
      malformed (the host gets a driver-data error);
    - ``mute_after``: after this many APDUs the card answers nothing (each
      later APDU times out), until ``mute_after`` changes or the card is
      reset;
    - ``raise_after``: after this many APDUs, :meth:`apdu` raises (the
      reader answers ``6F 00``).

    ``apdus`` counts the APDUs seen since the last power-up or reset."""

    def __init__(self, inner: Optional[VirtualCard] = None, *, delay: float = 0.0,
                 length_delta: int = 0, mute_after: Optional[int] = None,
                 raise_after: Optional[int] = None) -> None:
        self.inner = inner if inner is not None else FileSystemCard()
        self.atr = self.inner.atr
        self.delay = delay
        self.length_delta = length_delta
        self.mute_after = mute_after
        self.raise_after = raise_after
        self.apdus = 0

    def power_up(self) -> None:
        self.apdus = 0
        self.inner.power_up()

    def power_down(self) -> None:
        self.inner.power_down()

    def reset(self, warm: bool) -> None:
        self.apdus = 0
        self.inner.reset(warm)

    def apdu(self, command: bytes) -> bytes:
        self.apdus += 1
        if self.mute_after is not None and self.apdus > self.mute_after:
            raise CardMute(f"mute after {self.mute_after} APDU(s)")
        if self.raise_after is not None and self.apdus > self.raise_after:
            raise RuntimeError(f"FaultyCard: raise_after={self.raise_after}")
        if self.delay > 0:
            time.sleep(self.delay)
        answer = self.inner.apdu(command)
        delta = self.length_delta
        if delta > 0:
            return answer[:-2] + bytes(delta) + answer[-2:]
        if delta < 0:
            data, sw = answer[:-2], answer[-2:]
            if -delta <= len(data):
                return data[:delta] + sw
            return (data + sw)[:max(len(data) + 2 + delta, 0)]
        return answer
