"""Host a :class:`VirtualCard` in a simulated reader of this process.

The simulated reader answers TRANSMIT and power calls from an "external
card": a C function and a context (native/sim/ext_card.h), which a host
that loaded the reader library gives it through the library's exported
``scardio_sim_insert_external``.  Here the function is the binding's
generic C-to-Python callback (``_core.bytes_callback``) and the context a
:class:`_CardHost`, which turns the reader's calls into the card's methods.
Nothing here is reachable through pcscd: it needs the reader library loaded
in this process.
"""

from __future__ import annotations

import ctypes
import logging
import sys
import threading
from typing import Union

from .. import _core
from ..atr import ATRError, parse_atr
from ..errors import NotSupportedError
from .virtual_card import CardMute, VirtualCard

__all__ = ["insert_card"]

log = logging.getLogger("scardio.sim")

# native/sim/ext_card.h (tests/test_virtual_card_seam.py checks they agree).
OP_POWER_UP = 1
OP_POWER_DOWN = 2
OP_RESET_WARM = 3
OP_RESET_COLD = 4
OP_APDU = 5
E_FAILED = -1
E_MALFORMED = -2
E_TIMEOUT = -3
MAX_SHORT_RESPONSE = 256 + 2
MAX_RESPONSE = 65536 + 2

_IFD_SUCCESS = 0
_IFD_NO_SUCH_DEVICE = 617
_SW_EXCEPTION = b"\x6f\x00"  # "no precise diagnosis": the card's code raised


def _is_extended(command: bytes) -> bool:
    return len(command) > 5 and command[4] == 0


class _CardHost:
    """The context the reader calls for one inserted card: op and data in,
    bytes or a negative ext_card.h code out.  Never raises."""

    __slots__ = ("card", "_apdu", "__weakref__")

    def __init__(self, card: VirtualCard) -> None:
        self.card = card
        self._apdu = card.apdu  # bound once: this is the per-APDU path

    def __call__(self, op: int, data: bytes) -> Union[bytes, int]:
        if op == OP_APDU:
            try:
                answer = self._apdu(data)
            except CardMute:
                return E_TIMEOUT
            except BaseException:  # nothing may cross back into C
                log.exception("%s.apdu(%s) raised: answering 6F00",
                              type(self.card).__name__, data.hex())
                return _SW_EXCEPTION
            if type(answer) is bytes and 2 <= len(answer) <= MAX_SHORT_RESPONSE:
                return answer
            return self._checked(data, answer)
        return self._power(op)

    def _checked(self, command: bytes, answer: object) -> Union[bytes, int]:
        """The answer, if it is one the reader can carry; else E_MALFORMED,
        logged (the host gets an empty response: a driver-data error)."""
        name = type(self.card).__name__
        if isinstance(answer, bytearray):
            answer = bytes(answer)
        if type(answer) is not bytes:
            log.error("%s.apdu(%s) answered %s, not bytes", name, command.hex(),
                      type(answer).__name__)
            return E_MALFORMED
        limit = MAX_RESPONSE if _is_extended(command) else MAX_SHORT_RESPONSE
        if len(answer) < 2:
            log.error("%s.apdu(%s) answered %d byte(s): no status word", name,
                      command.hex(), len(answer))
            return E_MALFORMED
        if len(answer) > limit:
            log.error("%s.apdu(%s) answered %d bytes: more than the %d a%s APDU "
                      "allows", name, command.hex(), len(answer), limit,
                      "n extended" if limit == MAX_RESPONSE else " short")
            return E_MALFORMED
        return answer

    def _power(self, op: int) -> Union[bytes, int]:
        card = self.card
        try:
            if op == OP_POWER_UP:
                card.power_up()
            elif op == OP_POWER_DOWN:
                card.power_down()
            elif op == OP_RESET_WARM:
                card.reset(True)
            elif op == OP_RESET_COLD:
                card.reset(False)
            else:
                log.error("simulated reader: unknown card operation %d", op)
                return E_FAILED
        except BaseException:
            log.exception("%s power hook (operation %d) raised", type(card).__name__, op)
            return E_FAILED
        return b""


_libraries: dict[str, ctypes.CDLL] = {}
_libraries_lock = threading.Lock()


def _insert_function(library: str) -> "ctypes._NamedFuncPointer":
    with _libraries_lock:
        lib = _libraries.get(library)
        if lib is None:
            # The same path gives the instance the core loaded (one per
            # process), so LUNs opened by the core are found in it.
            lib = _libraries[library] = ctypes.CDLL(library)
    try:
        fn = lib.scardio_sim_insert_external
    except AttributeError:
        raise NotSupportedError(f"{library}: this driver cannot host a VirtualCard "
                                "(no scardio_sim_insert_external)") from None
    # IFD_DWORD / RESPONSECODE: 32-bit on macOS and Windows, long elsewhere.
    small = sys.platform in ("darwin", "win32")
    dword = ctypes.c_uint32 if small else ctypes.c_ulong
    fn.restype = ctypes.c_int32 if small else ctypes.c_long
    fn.argtypes = [dword, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p,
                   ctypes.c_char_p, ctypes.c_size_t]
    return fn


def _checked_atr(card: VirtualCard) -> bytes:
    name = type(card).__name__
    atr = card.atr
    if not isinstance(atr, (bytes, bytearray)):
        raise TypeError(f"{name}.atr must be bytes, not {type(atr).__name__}")
    atr = bytes(atr)
    try:
        parse_atr(atr)
    except ATRError as exc:
        err = type(exc)(f"{name}.atr {atr.hex() or '(empty)'} is not a valid ATR: {exc}",
                        offset=exc.offset)
        err.__dict__.update({k: v for k, v in exc.__dict__.items() if k != "offset"})
        raise err from None
    return atr


def insert_card(library: str, lun: int, card: VirtualCard) -> None:
    """Insert `card` into reader `lun` of the simulated reader `library`
    (loaded in this process); over a present card it is a swap."""
    if not isinstance(card, VirtualCard):
        raise TypeError(f"insert(card=...) needs a scardio.sim.VirtualCard, not "
                        f"{type(card).__name__}")
    atr = _checked_atr(card)
    fn = _insert_function(library)
    call, release, ctx = _core.bytes_callback(_CardHost(card))
    # From here the reader owns ctx: it releases it exactly once, even when
    # the call fails.  ctypes drops the GIL for the call (the card it
    # replaces is released inside it).
    rc = fn(lun, call, release, ctx, atr, len(atr))
    if rc == _IFD_NO_SUCH_DEVICE:
        raise NotSupportedError(f"{library}: reader {lun} is not open in this process's "
                                "instance of the library")
    if rc != _IFD_SUCCESS:
        raise NotSupportedError(f"{library}: inserting the card failed (IFD code {rc})")
