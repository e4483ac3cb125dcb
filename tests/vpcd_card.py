"""A virtual smart card for Debian's vpcd IFD-handler driver (test peer).

Standard library only.  The card model (`CardModel`) behaves like the C
simulated card of ``native/sim/card.h`` so that the same contract tests can
run against the simulated reader and against vpcd driven by this module.

The vpcd wire protocol, as verified against ``libifdvpcd.so`` 0.8 (Debian 12):

* The driver listens on TCP ``PORT + slot`` (PORT from the device name
  ``/dev/null:0xPORT``, slot = ``lun & 0xffff``, 2 slots) on all interfaces;
  the card is the TCP client.  The driver accepts the connection lazily, in
  ``IFDHICCPresence`` (a zero-timeout ``select`` then ``accept``), so a card
  that connected is seen at the next presence poll.
* Every message, both ways, is a 2-byte big-endian length then the payload.
  The driver writes the length and the payload with two ``send`` calls and
  does not set TCP_NODELAY; its receives are blocking ``MSG_WAITALL`` with no
  timeout, so a card that stops answering blocks the driver forever.
* Driver -> card, one byte: ``0`` power off, ``1`` power on, ``2`` reset (no
  answer expected for these three), ``4`` ATR request (answer: the ATR).
  ``IFDHPowerICC`` sends ``1`` (power up) or ``2`` (reset) followed by ``4``,
  and only ``0`` for power down.  ``IFDHICCPresence`` sends ``4`` on every
  poll: the card is present when it answers with its ATR.
* Driver -> card, longer payloads: a command APDU; the answer is the response
  APDU.  A closed connection or a socket error makes the driver close its
  end ("card removed", IFD_COMMUNICATION_ERROR for a transmit) and wait for
  a new connection.  An empty answer (length 0) does not end the call: the
  driver's zero-length MSG_WAITALL receive blocks until the card sends one
  more byte or closes, then the driver ejects the card.  So this card never
  sends an empty answer.
* Seen from pcscd 1.9.9 (no polling thread, so it polls presence every
  400 ms): a card that connects is seen and powered up at the next poll
  (``4 4 1 4``) and powered down one poll later when unused (``0``);
  SCardConnect sends ``4 1 4``; SCardDisconnect leaves it powered until the
  second poll after; SCARD_RESET_CARD sends ``2 4``.

Message latency: because the driver's payload write sits behind Nagle's
algorithm until its length write is acknowledged, the card must acknowledge
at once.  The card therefore re-arms TCP_QUICKACK (it is reset by the kernel)
right after reading each length header; without it every driver -> card
message waits for the delayed ACK (about 40 ms on Linux).

Card model: the same behaviour as the C simulated card (native/sim/card.c),
so that one set of contract tests runs against both.  Checks run in this
order: fewer than 4 bytes -> 6700; the class byte (FF, 20-3F, A0-FE -> 6E00;
00-1F / 80-9F / 40-7F with a logical channel -> 6881, secure messaging ->
6882, chaining -> 6884); Lc/Le not a valid short or extended ISO 7816-4
layout, or an extended APDU under T=0 -> 6700; INS unknown for the class ->
6D00; then the command's own checks.  Ne is Le (0 means 256, or 65536
extended) and is capped at 65535 bytes of response data.

========================= ==================================================
``00 A4`` SELECT          P2 other than 00/04/08/0C -> 6A86.  P1 00 by file
                          id: no data = MF, else exactly 2 bytes (6700):
                          3F00 MF (leaves the application), 2F01 when the
                          MF is the current DF, 0101 when the application
                          is; anything else 6A82.  P1 04 by AID: 1-16 bytes
                          (6700), must be F0 73 63 61 72 64 69 6F (6A82);
                          no EF is selected afterwards.  Other P1 -> 6A86.
                          Success is 9000 without data.
``00 B0`` READ BINARY     needs Le and no data (6700); no current EF 6986;
                          P1 bit 8 (short EF id) 6A86; offset (P1 & 7F, P2)
                          >= 4096 -> 6B00; fewer than Ne bytes left: T=1
                          returns the rest with 6282, T=0 answers 6Cxx.
``00 D6`` UPDATE BINARY   needs data (6700); 6986 / 6A86 / 6B00 as READ
                          BINARY; data past the end 6A84; else 9000.
``00 84`` GET CHALLENGE   needs Le and no data (6700); P1 P2 00 00 (6A86);
                          Ne bytes of xorshift32 (top byte of each step,
                          start 0x05CA2D10 unless seeded) + 9000.
``00 C0`` GET RESPONSE    needs Le and no data (6700); P1 P2 00 00 (6A86);
                          nothing pending 6985; Ne larger than what is
                          pending: T=0 answers 6Cxx and keeps it, T=1 gives
                          all of it.  More left afterwards -> 61xx.
``80 EE`` ECHO            Ne bytes: the command data repeated, or bytes
                          i & 0xFF without data; no Le -> just 9000.  Under
                          T=0 with data and Le: 61xx, data kept (at most 258
                          bytes) for GET RESPONSE.
========================= ==================================================

Every command but GET RESPONSE drops pending GET RESPONSE data.  Power-up
and reset make the MF the current DF with no EF selected and drop pending
data; file contents (UPDATE BINARY) and the generator persist while the
``CardModel`` lives.  vpcd never tells the card which protocol was chosen,
so the card uses T=1 whenever its ATR offers it (the C card starts with the
first offered protocol and is told the chosen one by its reader).

Command line (manual use)::

    python -m tests.vpcd_card --port 35963 [--atr HEX] [--no-quickack] [-v]
"""

from __future__ import annotations

import argparse
import collections
import signal
import socket
import struct
import sys
import threading
import time
from typing import Callable, Deque, Dict, List, Optional, Tuple

__all__ = [
    "ATR_T0",
    "ATR_T1",
    "AID",
    "DEFAULT_PORT",
    "CardModel",
    "VirtualCard",
    "parse_apdu",
    "atr_protocols",
]

DEFAULT_PORT = 0x8C7B  # Debian's /etc/reader.conf.d/vpcd
DEFAULT_HOST = "127.0.0.1"

# vpcd control bytes (driver -> card, one-byte payloads).
VPCD_OFF = 0
VPCD_ON = 1
VPCD_RESET = 2
VPCD_ATR = 4

# Same values as native/sim/sim_protocol.h.
ATR_T1 = bytes.fromhex("3BF81300008131FE457363617264696F31B0")
ATR_T0 = bytes.fromhex("3B6800007363617264696F30")
AID = bytes.fromhex("F07363617264696F")
EF_SIZE = 4096
MAX_ATR = 33
CLA_INTERINDUSTRY = 0x00
CLA_PROPRIETARY = 0x80
INS_SELECT = 0xA4
INS_READ_BINARY = 0xB0
INS_GET_CHALLENGE = 0x84
INS_UPDATE_BINARY = 0xD6
INS_GET_RESPONSE = 0xC0
INS_ECHO = 0xEE

# Selected EF.
SEL_NONE = 0
SEL_EF_MF = 1
SEL_EF_APP = 2

DEFAULT_SEED = 0x05CA2D10   # GET CHALLENGE generator (xorshift32) start state
MAX_RESPONSE_DATA = 65535   # Ne 65536 is capped so data + SW fit 65537 bytes
PENDING_MAX = 258           # T=0 GET RESPONSE buffer

FID_MF = 0x3F00
FID_EF_MF = 0x2F01
FID_EF_APP = 0x0101

SW_OK = 0x9000
SW_EOF = 0x6282
SW_WRONG_LENGTH = 0x6700
SW_NOT_ALLOWED_NO_EF = 0x6986
SW_CHANNEL_NOT_SUPPORTED = 0x6881
SW_SM_NOT_SUPPORTED = 0x6882
SW_CHAINING_NOT_SUPPORTED = 0x6884
SW_CONDITIONS = 0x6985
SW_FILE_NOT_FOUND = 0x6A82
SW_NOT_ENOUGH_SPACE = 0x6A84
SW_WRONG_P1P2 = 0x6A86
SW_WRONG_OFFSET = 0x6B00
SW_INS_NOT_SUPPORTED = 0x6D00
SW_CLA_NOT_SUPPORTED = 0x6E00

# Largest payload one vpcd frame carries (16-bit length).
MAX_FRAME = 0xFFFF

# Linux TCP_QUICKACK (socket option 12 at IPPROTO_TCP).
_TCP_QUICKACK = getattr(socket, "TCP_QUICKACK", 12 if sys.platform.startswith("linux") else None)


def _sw(sw: int) -> bytes:
    return bytes((sw >> 8, sw & 0xFF))


class ApduError(ValueError):
    """A command APDU whose Lc/Le layout is not ISO 7816-4."""


def parse_apdu(apdu: bytes) -> Tuple[int, int, int, int, bytes, Optional[int], bool]:
    """Split a command APDU (short or extended).

    Returns ``(cla, ins, p1, p2, data, ne, extended)``; ``ne`` is None when
    there is no Le field.  Raises ApduError when the length fields do not
    describe the APDU exactly.
    """
    n = len(apdu)
    if n < 4:
        raise ApduError("shorter than a header")
    cla, ins, p1, p2 = apdu[0], apdu[1], apdu[2], apdu[3]
    body = apdu[4:]
    b = len(body)
    if b == 0:  # case 1
        return cla, ins, p1, p2, b"", None, False
    if b == 1:  # case 2 short
        return cla, ins, p1, p2, b"", body[0] or 256, False
    if body[0] != 0:  # short case 3 or 4
        lc = body[0]
        if b == 1 + lc:
            return cla, ins, p1, p2, bytes(body[1:]), None, False
        if b == 2 + lc:
            return cla, ins, p1, p2, bytes(body[1:-1]), body[-1] or 256, False
        raise ApduError("Lc does not match the body")
    # body[0] == 0 and at least 2 bytes: extended
    if b == 3:  # case 2 extended
        le = (body[1] << 8) | body[2]
        return cla, ins, p1, p2, b"", le or 65536, True
    if b < 3:
        raise ApduError("truncated extended length")
    lc = (body[1] << 8) | body[2]
    if lc == 0:
        raise ApduError("extended Lc of zero")
    if b == 3 + lc:
        return cla, ins, p1, p2, bytes(body[3:]), None, True
    if b == 5 + lc:
        le = (body[-2] << 8) | body[-1]
        return cla, ins, p1, p2, bytes(body[3:-2]), le or 65536, True
    raise ApduError("extended Lc does not match the body")


def atr_protocols(atr: bytes) -> List[int]:
    """Protocols offered by an ATR (T=0 implied when TD1 is absent)."""
    protos: List[int] = []
    if len(atr) < 2:
        return [0]
    y = atr[1] >> 4
    i = 2
    first = True
    while True:
        for bit in (0x1, 0x2, 0x4):  # TA, TB, TC
            if y & bit:
                i += 1
        if not y & 0x8:
            break
        if i >= len(atr):
            break
        td = atr[i]
        i += 1
        t = td & 0x0F
        if t not in protos:
            protos.append(t)
        y = td >> 4
        first = False
    if first or not protos:
        return [0]
    return protos


class CardModel:
    """The card behind the contacts: an ATR and a tiny ISO 7816-4 file system.

    Behaves like ``native/sim/card.c`` (see the module docstring).  Not
    thread-safe: the caller serialises access (VirtualCard does).
    """

    def __init__(self, atr: Optional[bytes] = None, protocol: Optional[int] = None,
                 seed: Optional[int] = None) -> None:
        atr = ATR_T1 if atr is None else bytes(atr)
        if not atr:
            raise ValueError("an ATR needs at least one byte")
        self.atr = atr[:MAX_ATR]
        if protocol is None:
            # vpcd never tells the card the negotiated protocol; readers
            # prefer T=1, so the card speaks T=1 whenever its ATR offers it.
            protocol = 1 if 1 in atr_protocols(self.atr) else 0
        if protocol not in (0, 1):
            raise ValueError("protocol must be 0 (T=0) or 1 (T=1)")
        self.protocol = protocol
        self.ef_mf = bytearray(i & 0xFF for i in range(EF_SIZE))
        self.ef_app = bytearray(i & 0xFF for i in range(EF_SIZE))
        seed = DEFAULT_SEED if seed is None else seed & 0xFFFFFFFF
        self._rng = seed or DEFAULT_SEED
        self.selected = SEL_NONE       # SEL_NONE, SEL_EF_MF or SEL_EF_APP
        self.app_selected = False      # False: the MF is the current DF
        self.pending = b""             # T=0 data waiting for GET RESPONSE
        self.reset()

    def reset(self) -> None:
        """Power-up or reset: the MF is current, no EF, nothing pending.

        File contents and the GET CHALLENGE generator survive a reset.
        """
        self.selected = SEL_NONE
        self.app_selected = False
        self.pending = b""

    # -- helpers -------------------------------------------------------------
    def _random(self, n: int) -> bytes:
        out = bytearray(n)
        x = self._rng
        for i in range(n):  # xorshift32, top byte of each step
            x ^= (x << 13) & 0xFFFFFFFF
            x ^= x >> 17
            x ^= (x << 5) & 0xFFFFFFFF
            out[i] = x >> 24
        self._rng = x
        return bytes(out)

    def _current_ef(self) -> Optional[bytearray]:
        if self.selected == SEL_EF_MF:
            return self.ef_mf
        if self.selected == SEL_EF_APP:
            return self.ef_app
        return None

    @staticmethod
    def _check_cla(cla: int) -> Tuple[int, bool]:
        """(status word or 0, proprietary) for a class byte."""
        if cla == 0xFF:
            return SW_CLA_NOT_SUPPORTED, False
        if cla & 0xE0 in (0x00, 0x80):
            # first interindustry layout, also used by the 0x80 family:
            # b5 chaining, b4-b3 secure messaging, b2-b1 logical channel
            proprietary = bool(cla & 0x80)
            chaining, sm, channel = cla & 0x10, (cla >> 2) & 3, cla & 3
        elif cla & 0xC0 == 0x40:
            # further interindustry: logical channels 4-19
            proprietary = False
            chaining, sm, channel = cla & 0x10, (cla >> 5) & 1, 4
        else:
            return SW_CLA_NOT_SUPPORTED, False
        if channel:
            return SW_CHANNEL_NOT_SUPPORTED, proprietary
        if sm:
            return SW_SM_NOT_SUPPORTED, proprietary
        if chaining:
            return SW_CHAINING_NOT_SUPPORTED, proprietary
        return 0, proprietary

    @staticmethod
    def _offset(p1: int, p2: int) -> Optional[int]:
        if p1 & 0x80:  # short EF identifier: not supported
            return None
        return ((p1 & 0x7F) << 8) | p2

    # -- commands ------------------------------------------------------------
    def process(self, apdu: bytes) -> bytes:
        """Process one command APDU and return the response APDU."""
        apdu = bytes(apdu)
        if len(apdu) < 4:
            self.pending = b""
            return _sw(SW_WRONG_LENGTH)
        sw, proprietary = self._check_cla(apdu[0])
        # every command but GET RESPONSE drops the pending T=0 data
        if sw or proprietary or apdu[1] != INS_GET_RESPONSE:
            self.pending = b""
        if sw:
            return _sw(sw)
        try:
            _, ins, p1, p2, data, ne, extended = parse_apdu(apdu)
        except ApduError:
            return _sw(SW_WRONG_LENGTH)
        if extended and self.protocol == 0:  # extended APDUs need T=1
            return _sw(SW_WRONG_LENGTH)
        if proprietary:
            handler = {INS_ECHO: self._echo}.get(ins)
        else:
            handler = {
                INS_SELECT: self._select,
                INS_READ_BINARY: self._read_binary,
                INS_UPDATE_BINARY: self._update_binary,
                INS_GET_CHALLENGE: self._get_challenge,
                INS_GET_RESPONSE: self._get_response,
            }.get(ins)
        if handler is None:
            return _sw(SW_INS_NOT_SUPPORTED)
        return handler(p1, p2, data, ne)

    def _select(self, p1: int, p2: int, data: bytes, ne: Optional[int]) -> bytes:
        if p2 & ~0x0C:
            return _sw(SW_WRONG_P1P2)
        if p1 == 0x00:
            if not data:
                fid = FID_MF
            elif len(data) == 2:
                fid = (data[0] << 8) | data[1]
            else:
                return _sw(SW_WRONG_LENGTH)
            if fid == FID_MF:
                self.app_selected = False
                self.selected = SEL_NONE
            elif fid == FID_EF_MF and not self.app_selected:
                self.selected = SEL_EF_MF
            elif fid == FID_EF_APP and self.app_selected:
                self.selected = SEL_EF_APP
            else:
                return _sw(SW_FILE_NOT_FOUND)
            return _sw(SW_OK)
        if p1 == 0x04:
            if not data or len(data) > 16:
                return _sw(SW_WRONG_LENGTH)
            if data != AID:
                return _sw(SW_FILE_NOT_FOUND)
            self.app_selected = True
            self.selected = SEL_NONE
            return _sw(SW_OK)
        return _sw(SW_WRONG_P1P2)

    def _locate_binary(self, p1: int, p2: int) -> Tuple[Optional[bytearray], int, bytes]:
        """(EF, offset, b"") for READ / UPDATE BINARY, or (None, 0, the
        status word that refuses the command)."""
        ef = self._current_ef()
        if ef is None:
            return None, 0, _sw(SW_NOT_ALLOWED_NO_EF)
        offset = self._offset(p1, p2)
        if offset is None:
            return None, 0, _sw(SW_WRONG_P1P2)
        if offset >= EF_SIZE:
            return None, 0, _sw(SW_WRONG_OFFSET)
        return ef, offset, b""

    def _read_binary(self, p1: int, p2: int, data: bytes, ne: Optional[int]) -> bytes:
        if ne is None or data:
            return _sw(SW_WRONG_LENGTH)
        ef, offset, refused = self._locate_binary(p1, p2)
        if ef is None:
            return refused
        n = min(ne, MAX_RESPONSE_DATA)
        left = EF_SIZE - offset
        if n > left:
            if self.protocol == 0:
                return bytes((0x6C, left & 0xFF))  # T=0: the exact length
            return bytes(ef[offset:]) + _sw(SW_EOF)
        return bytes(ef[offset:offset + n]) + _sw(SW_OK)

    def _update_binary(self, p1: int, p2: int, data: bytes, ne: Optional[int]) -> bytes:
        if not data:
            return _sw(SW_WRONG_LENGTH)
        ef, offset, refused = self._locate_binary(p1, p2)
        if ef is None:
            return refused
        if len(data) > EF_SIZE - offset:
            return _sw(SW_NOT_ENOUGH_SPACE)
        ef[offset:offset + len(data)] = data
        return _sw(SW_OK)

    def _get_challenge(self, p1: int, p2: int, data: bytes, ne: Optional[int]) -> bytes:
        if ne is None or data:
            return _sw(SW_WRONG_LENGTH)
        if p1 or p2:
            return _sw(SW_WRONG_P1P2)
        return self._random(min(ne, MAX_RESPONSE_DATA)) + _sw(SW_OK)

    def _get_response(self, p1: int, p2: int, data: bytes, ne: Optional[int]) -> bytes:
        if ne is None or data:
            return _sw(SW_WRONG_LENGTH)
        if p1 or p2:
            return _sw(SW_WRONG_P1P2)
        if not self.pending:
            return _sw(SW_CONDITIONS)
        n = ne
        if n > len(self.pending):
            if self.protocol == 0:  # T=0: the exact length, data kept
                return bytes((0x6C, len(self.pending) & 0xFF))
            n = len(self.pending)
        out, self.pending = self.pending[:n], self.pending[n:]
        if self.pending:
            return out + bytes((0x61, min(len(self.pending), 256) & 0xFF))
        return out + _sw(SW_OK)

    def _echo(self, p1: int, p2: int, data: bytes, ne: Optional[int]) -> bytes:
        n = min(ne or 0, MAX_RESPONSE_DATA)
        if data:
            reps, rest = divmod(n, len(data))
            out = data * reps + data[:rest]
        else:
            out = bytes(i & 0xFF for i in range(n))
        if self.protocol == 0 and data and n:
            # T=0 case 4: the data waits for GET RESPONSE
            self.pending = out[:PENDING_MAX]
            return bytes((0x61, min(len(self.pending), 256) & 0xFF))
        return out + _sw(SW_OK)


_COUNTERS = (
    "insertions",       # successful insert() calls (TCP connections made)
    "removals",         # remove() calls that closed a connection
    "peer_closes",      # the driver closed the connection (it ejected us)
    "power_ons",        # control byte 1
    "power_offs",       # control byte 0
    "resets",           # control byte 2
    "atr_requests",     # control byte 4 (power-up, reset, and every presence poll)
    "apdus",            # command APDUs answered
    "unanswered",       # messages received while not answering
    "unknown_controls", # other one-byte or empty payloads
)


class VirtualCard:
    """A virtual card that plugs into a vpcd slot over TCP.

    ``insert()`` connects to the driver (retrying until it listens) and starts
    a thread that answers it; ``remove()`` closes the connection and joins
    the thread.  Both can be repeated.  ``stop_answering()`` keeps the
    connection open but stops replying, so the driver blocks in its next
    receive.  Use as a context manager to be sure nothing leaks::

        with VirtualCard(port) as card:   # inserted
            ...
        # removed, thread joined, socket closed
    """

    def __init__(self, port: int = DEFAULT_PORT, host: str = DEFAULT_HOST,
                 atr: Optional[bytes] = None, *, protocol: Optional[int] = None,
                 quickack: bool = True, connect_timeout: float = 10.0,
                 seed: Optional[int] = None, log: Optional[Callable[[str], None]] = None,
                 history: int = 1000) -> None:
        self.port = port
        self.host = host
        self.quickack = bool(quickack) and _TCP_QUICKACK is not None
        self.connect_timeout = connect_timeout
        self.model = CardModel(atr, protocol, seed)
        self._log = log
        self._cond = threading.Condition()
        self._sock: Optional[socket.socket] = None
        self._removing: Optional[socket.socket] = None
        self._thread: Optional[threading.Thread] = None
        self._answering = True
        self._powered = False
        self._counters: Dict[str, int] = dict.fromkeys(_COUNTERS, 0)
        self._messages: Deque[Tuple[float, str, bytes]] = collections.deque(maxlen=history)
        self._apdu_log: Deque[Tuple[bytes, bytes]] = collections.deque(maxlen=history)

    # -- state -----------------------------------------------------------------
    @property
    def messages(self) -> List[Tuple[float, str, bytes]]:
        """(time.monotonic(), kind, payload) of the last messages received;
        kind is "on", "off", "reset", "atr", "apdu" or "control?"."""
        with self._cond:
            return list(self._messages)

    @property
    def apdu_log(self) -> List[Tuple[bytes, bytes]]:
        """(command, response) of the last APDUs answered."""
        with self._cond:
            return list(self._apdu_log)

    @property
    def atr(self) -> bytes:
        return self.model.atr

    @property
    def inserted(self) -> bool:
        """True from insert() until remove() or the driver closing the link."""
        with self._cond:
            return self._thread is not None and self._thread.is_alive()

    @property
    def powered(self) -> bool:
        with self._cond:
            return self._powered

    @property
    def answering(self) -> bool:
        with self._cond:
            return self._answering

    def counters(self) -> Dict[str, int]:
        """A snapshot of the counters (see _COUNTERS), plus ``powered``."""
        with self._cond:
            snap = dict(self._counters)
            snap["powered"] = int(self._powered)
            return snap

    def __getattr__(self, name: str) -> int:
        if name in _COUNTERS:
            return self.counters()[name]
        raise AttributeError(name)

    def reset_counters(self) -> None:
        with self._cond:
            for k in self._counters:
                self._counters[k] = 0
            self._messages.clear()
            self._apdu_log.clear()

    def wait_for(self, predicate: Callable[[Dict[str, int]], bool],
                 timeout: float) -> bool:
        """Wait until predicate(counters()) is true; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                snap = dict(self._counters)
                snap["powered"] = int(self._powered)
                if predicate(snap):
                    return True
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)

    # -- insertion / removal -----------------------------------------------------
    def insert(self, timeout: Optional[float] = None) -> None:
        """Connect to the driver's slot, retrying until it listens.

        Raises TimeoutError when nothing listens within ``timeout`` (default:
        ``connect_timeout``) and RuntimeError when already inserted.
        """
        if self.inserted:
            raise RuntimeError("card already inserted")
        self._reap()
        timeout = self.connect_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        last: Optional[OSError] = None
        while True:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                sock.settimeout(max(0.05, min(1.0, deadline - time.monotonic())))
                sock.connect((self.host, self.port))
                sock.settimeout(None)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                break
            except OSError as exc:
                sock.close()
                last = exc
                if time.monotonic() >= deadline:
                    raise TimeoutError(
                        f"nothing listens on {self.host}:{self.port}: {last}") from None
                time.sleep(0.02)
        with self._cond:
            self._sock = sock
            self._answering = True
            self._powered = False
            self._counters["insertions"] += 1
            self.model.reset()
            thread = threading.Thread(target=self._serve, args=(sock,),
                                      name=f"vpcd-card-{self.port}", daemon=True)
            self._thread = thread
            self._cond.notify_all()
        self._trace(f"inserted into {self.host}:{self.port}")
        thread.start()

    def remove(self) -> None:
        """Pull the card: close the connection and join the thread."""
        with self._cond:
            sock, thread = self._sock, self._thread
            was_open = sock is not None and thread is not None and thread.is_alive()
            self._removing = sock  # so the thread does not count a peer close
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)  # wakes the thread's recv
            except OSError:
                pass
        if thread is not None:
            thread.join()
        if sock is not None:
            sock.close()
        with self._cond:
            if self._sock is sock:
                self._sock = None
                self._thread = None
                self._powered = False
            self._removing = None
            if was_open:
                self._counters["removals"] += 1
            self._cond.notify_all()
        if was_open:
            self._trace("removed")

    def stop_answering(self) -> None:
        """Keep the connection open but ignore every further message."""
        with self._cond:
            self._answering = False

    def close(self) -> None:
        self.remove()

    def __enter__(self) -> "VirtualCard":
        self.insert()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.remove()

    def _reap(self) -> None:
        """Forget a connection the driver already closed."""
        with self._cond:
            thread = self._thread
        if thread is not None and not thread.is_alive():
            thread.join()
            with self._cond:
                if self._thread is thread:
                    if self._sock is not None:
                        self._sock.close()
                    self._sock = None
                    self._thread = None

    # -- the answering thread --------------------------------------------------------
    def _trace(self, text: str) -> None:
        if self._log is not None:
            self._log(text)

    def _recv_exact(self, sock: socket.socket, n: int) -> Optional[bytes]:
        buf = bytearray()
        while len(buf) < n:
            try:
                chunk = sock.recv(n - len(buf))
            except OSError:
                return None
            if not chunk:
                return None
            buf += chunk
        return bytes(buf)

    def _arm_quickack(self, sock: socket.socket) -> None:
        if self.quickack:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, _TCP_QUICKACK, 1)
            except OSError:
                pass

    def _serve(self, sock: socket.socket) -> None:
        self._arm_quickack(sock)
        try:
            while True:
                header = self._recv_exact(sock, 2)
                if header is None:
                    break
                self._arm_quickack(sock)  # ack the header now: the payload waits for it
                (length,) = struct.unpack(">H", header)
                payload = self._recv_exact(sock, length) if length else b""
                if payload is None:
                    break
                self._arm_quickack(sock)
                reply = self._handle(payload)
                if reply is None:
                    continue
                if len(reply) > MAX_FRAME:
                    reply = _sw(SW_WRONG_LENGTH)  # cannot be framed
                try:
                    sock.sendall(struct.pack(">H", len(reply)) + reply)
                except OSError:
                    break
        finally:
            with self._cond:
                closing_by_us = self._sock is not sock or self._removing is sock
                if not closing_by_us:
                    self._counters["peer_closes"] += 1
                self._powered = False
                self._cond.notify_all()
            if not closing_by_us:
                self._trace("driver closed the connection")

    def _handle(self, payload: bytes) -> Optional[bytes]:
        now = time.monotonic()
        with self._cond:
            answering = self._answering
            if len(payload) == 1:
                kind = {VPCD_OFF: "off", VPCD_ON: "on", VPCD_RESET: "reset",
                        VPCD_ATR: "atr"}.get(payload[0], "control?")
            elif not payload:
                kind = "control?"
            else:
                kind = "apdu"
            self._messages.append((now, kind, payload))
            if not answering:
                self._counters["unanswered"] += 1
                self._cond.notify_all()
                return None
            reply: Optional[bytes] = None
            if kind == "off":
                self._counters["power_offs"] += 1
                self._powered = False
            elif kind == "on":
                self._counters["power_ons"] += 1
                self._powered = True
                self.model.reset()
            elif kind == "reset":
                self._counters["resets"] += 1
                self._powered = True
                self.model.reset()
            elif kind == "atr":
                self._counters["atr_requests"] += 1
                reply = self.model.atr
            elif kind == "apdu":
                reply = self.model.process(payload)
                self._counters["apdus"] += 1
                self._apdu_log.append((payload, reply))
            else:
                self._counters["unknown_controls"] += 1
            self._cond.notify_all()
        if self._log is not None:
            answer = "" if reply is None else f" -> {reply.hex()}"
            self._trace(f"<- {kind} {payload.hex()}{answer}")
        return reply


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.vpcd_card",
        description="Run a virtual card against a vpcd slot (Ctrl-C to remove it).")
    parser.add_argument("--host", default=DEFAULT_HOST)
    parser.add_argument("--port", type=lambda s: int(s, 0), default=DEFAULT_PORT,
                        help="TCP port: vpcd's base port + slot (default %(default)s)")
    parser.add_argument("--atr", type=bytes.fromhex, default=None,
                        help="ATR in hex (default: the scardio T=1 ATR)")
    parser.add_argument("--t0", action="store_true", help="use the scardio T=0 ATR")
    parser.add_argument("--no-quickack", action="store_true",
                        help="do not set TCP_QUICKACK (shows the ~40 ms stall)")
    parser.add_argument("--timeout", type=float, default=60.0,
                        help="seconds to wait for the driver to listen")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every message")
    args = parser.parse_args(argv)
    atr = args.atr if args.atr is not None else (ATR_T0 if args.t0 else None)

    def log(text: str) -> None:
        print(f"{time.strftime('%H:%M:%S')} {text}", flush=True)

    card = VirtualCard(args.port, args.host, atr, quickack=not args.no_quickack,
                       connect_timeout=args.timeout, log=log if args.verbose else None)

    def on_sigterm(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        card.insert()
        log(f"card inserted into {args.host}:{args.port}, ATR {card.atr.hex().upper()}")
        while True:
            if not card.inserted:
                log("driver closed the connection; re-inserting")
                card.insert()
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    except TimeoutError as exc:
        print(exc, file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous)
        card.remove()
        log(f"removed; counters {card.counters()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
