"""What a disconnect does to the card: the dispositions, the power-down
loop and the warm reset."""

from __future__ import annotations

import enum

from ..constants import IOCTL, PowerAction, State
from . import ATR_OUT, U32, Request, Steps, get_state_steps

__all__ = ["Disposition", "power_down_steps", "warm_reset_steps", "POWER_DOWN_MAX_STEPS"]

POWER_DOWN_MAX_STEPS = 4


class Disposition(enum.IntEnum):
    """What Card.disconnect() does with the card (PC/SC dwDisposition)."""
    LEAVE = 0    # leave it powered; the power-down timer takes it down later
    RESET = 1    # warm reset now (drops card state), then the timer
    UNPOWER = 2  # power it down now


def power_down_steps(max_steps: int = POWER_DOWN_MAX_STEPS) -> "Steps[list[str]]":
    """The disconnect loop: SPECIFIC, NEGOTIABLE, POWERED -> POWER_DOWN;
    anything else -> nothing."""
    actions: list[str] = []
    for _ in range(max_steps):
        state = yield from get_state_steps()
        actions.append(state.name)
        if state in (State.SPECIFIC, State.NEGOTIABLE, State.POWERED):
            yield Request(IOCTL.POWER, U32.pack(PowerAction.POWER_DOWN), 0)
            actions.append("POWER_DOWN")
            continue
        return actions
    return actions


def warm_reset_steps() -> "Steps[bytes]":
    """POWER WARM_RESET; returns the ATR."""
    atr = yield Request(IOCTL.POWER, U32.pack(PowerAction.WARM_RESET), ATR_OUT)
    return atr
