"""Read the ATR of a card without connecting to it.

A resource manager learns a card's ATR when the card arrives: pcscd powers
it up on insertion, keeps the ATR, and powers it down again after a grace
period if nobody connects.  :func:`probe_atr` does the least a reader allows
for the same answer, and leaves the card as it found it:

* already reset (NEGOTIABLE or SPECIFIC): read ``SCARD_ATTR_ATR_STRING``;
  nothing changes on the card.
* POWERED (powered, never reset by this host): the attribute if the driver
  knows it, else a warm reset, whose answer is the ATR; it stays powered.
* PRESENT or SWALLOWED (not powered): SWALLOW if needed, a cold reset (the
  ATR is its answer), then POWER_DOWN, so that it is unpowered again.

No protocol is negotiated (no SET_PROTOCOL, no PPS): unlike
:meth:`scardio.reader.Reader.connect` the card's state machine is not advanced.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Optional

from . import errors
from .constants import IOCTL, Attr, PowerAction, State
from .runner import run_sync
from .sequences import Request, Steps, get_state_steps
from .session import DEFAULT_CONNECT_TIMEOUT, deadline_after

if TYPE_CHECKING:
    from .reader import Reader

__all__ = ["Probe", "probe_atr", "probe_atr_steps"]

_U32 = struct.Struct("<I")
_ATR_OUT = 33  # MAX_ATR
# What drivers answer for an attribute they do not keep.
_NO_ATTRIBUTE = (errors.NotSupportedError, errors.InvalidRequestError,
                 errors.InvalidParameterError, errors.BufferTooSmallError,
                 errors.DriverError)


@dataclass(frozen=True)
class Probe:
    """What :func:`probe_atr` found: the ATR, the state the card was in
    and the IOCTLs it took (e.g. ["SWALLOWED", "COLD_RESET", "POWER_DOWN"])."""
    atr: bytes
    state: State
    actions: list[str] = field(default_factory=list)

    @property
    def powered_up(self) -> bool:
        """True when the card had to be powered up (and was powered down)."""
        return "COLD_RESET" in self.actions


def _atr_attribute(state: State) -> "Steps[Optional[bytes]]":
    # Before a reset the core has no ATR to give: INVALID_DEVICE_STATE.
    missing = _NO_ATTRIBUTE + ((errors.InvalidStateError,) if state == State.POWERED else ())
    try:
        atr = yield Request(IOCTL.GET_ATTRIBUTE, _U32.pack(Attr.ATR_STRING), _ATR_OUT)
    except missing:
        return None
    return atr or None


def probe_atr_steps() -> "Steps[Probe]":
    """The sequence of :func:`probe_atr`, for any driver of sequences."""
    state = yield from get_state_steps()
    actions = [state.name]
    if state in (State.UNKNOWN, State.ABSENT):
        raise errors.NoCardError(f"no card in the reader (state {state.name})")
    if state in (State.NEGOTIABLE, State.SPECIFIC, State.POWERED):
        atr = yield from _atr_attribute(state)
        if atr is not None:
            actions.append("ATR")
            return Probe(atr, state, actions)
        if state != State.POWERED:
            raise errors.UnrecognizedCardError(
                "the reader reports a reset card but no ATR")
        atr = yield Request(IOCTL.POWER, _U32.pack(PowerAction.WARM_RESET), _ATR_OUT)
        actions.append("WARM_RESET")
    else:  # PRESENT or SWALLOWED: not powered
        if state == State.PRESENT:
            yield Request(IOCTL.SWALLOW)
            actions.append("SWALLOW")
        atr = yield Request(IOCTL.POWER, _U32.pack(PowerAction.COLD_RESET), _ATR_OUT)
        actions.append("COLD_RESET")
        try:
            yield Request(IOCTL.POWER, _U32.pack(PowerAction.POWER_DOWN), 0)
        except errors.NoCardError:
            pass  # pulled out in between: unpowered anyway
        else:
            actions.append("POWER_DOWN")
    if not atr:
        raise errors.UnrecognizedCardError("the card gave no ATR on reset")
    return Probe(bytes(atr), state, actions)


def probe_atr(reader: "Reader", timeout: Optional[float] = DEFAULT_CONNECT_TIMEOUT) -> Probe:
    """The ATR of the card in `reader`, read as described in the module.
    A card connected through `reader` is not touched (its ATR is known).
    Raises NoCardError when the reader is empty, TimeoutError when the
    driver does not answer within `timeout` seconds."""
    with reader._lock:
        reader.session.check_open()
        card = reader.card
        if card is not None:
            return Probe(card.atr_bytes, State.SPECIFIC, ["CONNECTED"])
        return run_sync(reader.device, probe_atr_steps(), deadline=deadline_after(timeout))
