"""The connect loop of the spec (GET_STATE until the card is negotiable,
swallowing, resetting as the state asks), then SET_PROTOCOL."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Optional

from .. import errors
from ..constants import IOCTL, Attr, PowerAction, Protocol, State
from . import ATR_OUT, NO_ATTRIBUTE, U32, Request, Steps, get_state_steps, u32

__all__ = ["Connected", "connect_steps", "CONNECT_MAX_STEPS"]

#: The longest legal path is PRESENT -> SWALLOWED -> NEGOTIABLE (three
#: GET_STATEs) plus one warm reset on a protocol mismatch; 8 leaves slack
#: while still catching a driver that never settles.
CONNECT_MAX_STEPS = 8


@dataclass
class Connected:
    """What the connect sequence found."""
    atr: bytes
    protocol: Protocol
    actions: list[str] = field(default_factory=list)


def _read_atr(fallback: Optional[bytes]) -> "Steps[bytes]":
    try:
        atr = yield Request(IOCTL.GET_ATTRIBUTE, U32.pack(Attr.ATR_STRING), ATR_OUT)
    except NO_ATTRIBUTE:
        atr = fallback or b""
    if not atr:
        raise errors.UnrecognizedCardError("the reader reports a powered card but no ATR")
    return atr


def connect_steps(protocols: int, *, max_steps: int = CONNECT_MAX_STEPS,
                  deadline: Optional[float] = None) -> "Steps[Connected]":
    """The connect loop of the spec, then SET_PROTOCOL."""
    actions: list[str] = []
    reset_atr: Optional[bytes] = None
    atr = b""
    mismatch_reset = False
    for _ in range(max_steps):
        if deadline is not None and time.monotonic() > deadline:
            raise errors.TimeoutError(f"connect timed out after: {', '.join(actions)}")
        state = yield from get_state_steps()
        actions.append(state.name)
        if state in (State.UNKNOWN, State.ABSENT):
            raise errors.NoCardError(f"no card in the reader (state {state.name})")
        if state == State.PRESENT:
            yield Request(IOCTL.SWALLOW)
            actions.append("SWALLOW")
        elif state == State.SWALLOWED:
            reset_atr = yield Request(IOCTL.POWER, U32.pack(PowerAction.COLD_RESET), ATR_OUT)
            actions.append("COLD_RESET")
        elif state == State.POWERED:
            reset_atr = yield Request(IOCTL.POWER, U32.pack(PowerAction.WARM_RESET), ATR_OUT)
            actions.append("WARM_RESET")
        elif state == State.NEGOTIABLE:
            atr = yield from _read_atr(reset_atr)
            actions.append("ATR")
            break
        else:  # SPECIFIC: the ATR and the protocol already in force
            atr = yield from _read_atr(reset_atr)
            try:
                raw = yield Request(IOCTL.GET_ATTRIBUTE,
                                    U32.pack(Attr.CURRENT_PROTOCOL_TYPE), 4)
                current = u32(raw, "CURRENT_PROTOCOL_TYPE")
            except NO_ATTRIBUTE:
                current = 0
            actions.append(f"ATR+PROTOCOL({current:#x})")
            wanted = protocols & (Protocol.T0 | Protocol.T1 | Protocol.RAW)
            if current and wanted and not current & wanted and not mismatch_reset:
                # Left in a protocol we cannot use (by an earlier session):
                # a warm reset makes it negotiable again, once.
                mismatch_reset = True
                reset_atr = yield Request(IOCTL.POWER, U32.pack(PowerAction.WARM_RESET),
                                          ATR_OUT)
                actions.append("WARM_RESET")
                continue
            break
    else:
        raise errors.TimeoutError(f"connect did not settle in {max_steps} steps: "
                                  f"{', '.join(actions)}")
    try:
        raw = yield Request(IOCTL.SET_PROTOCOL, U32.pack(int(protocols)), 4)
    except errors.NotSupportedError as exc:
        raise errors.NotSupportedError(
            f"the card does not support the requested protocol(s) "
            f"{_protocol_text(protocols)} (ATR {atr.hex().upper()})",
            status=exc.status, driver_code=exc.driver_code, ioctl=exc.ioctl) from exc
    proto = u32(raw, "SET_PROTOCOL")
    actions.append(f"SET_PROTOCOL({_protocol_text(proto)})")
    return Connected(atr, Protocol(proto), actions)


def _protocol_text(p: int) -> str:
    names = [n for bit, n in ((Protocol.T0, "T=0"), (Protocol.T1, "T=1"),
                              (Protocol.RAW, "RAW"), (Protocol.DEFAULT, "DEFAULT")) if p & bit]
    return "|".join(names) or "OPTIMAL"
