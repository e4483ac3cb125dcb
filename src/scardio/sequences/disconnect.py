"""What a disconnect does to the card: the dispositions, the power-down
loop and the warm reset."""

from __future__ import annotations

import enum
from functools import partial
from typing import Optional, Union

from .._core import LOOP_POWER_DOWN, LOOP_TRAIL
from ..constants import IOCTL, PowerAction, State
from . import ATR_OUT, STATE_NAMES, U32, Loop, LoopSteps, Request, Steps, state_value, u32

__all__ = ["Disposition", "power_down_steps", "power_down_loop_steps", "powered_down",
           "release_card_steps", "warm_reset_steps", "POWER_DOWN_MAX_STEPS"]

POWER_DOWN_MAX_STEPS = 4

_GET_STATE = Request(IOCTL.GET_STATE, b"", 4)
_POWER_DOWN = Request(IOCTL.POWER, U32.pack(PowerAction.POWER_DOWN), 0)
_WARM_RESET = Request(IOCTL.POWER, U32.pack(PowerAction.WARM_RESET), ATR_OUT)
_RELEASE_CARD = Request(IOCTL.RELEASE_CARD, b"", 4)
_POWERED_STATES = (int(State.SPECIFIC), int(State.NEGOTIABLE), int(State.POWERED))


class Disposition(enum.IntEnum):
    """What Card.disconnect() does with the card (PC/SC dwDisposition)."""
    LEAVE = 0    # leave it powered; the power-down timer takes it down later
    RESET = 1    # warm reset now (drops card state), then the timer
    UNPOWER = 2  # power it down now


#: What Card.disconnect() takes: a Disposition, its value, or its name in
#: any case ("leave", "reset", "unpower").
DispositionLike = Union[Disposition, int, str]


def disposition_value(disposition: DispositionLike) -> Disposition:
    """The :class:`Disposition` `disposition` names; ValueError (naming the
    choices) for anything else."""
    if type(disposition) is Disposition:
        return disposition
    try:
        if isinstance(disposition, str):
            return Disposition[disposition.upper()]
        if isinstance(disposition, int) and not isinstance(disposition, bool):
            return Disposition(disposition)
    except (KeyError, ValueError):
        pass
    choices = ", ".join(repr(d.name.lower()) for d in Disposition)
    raise ValueError(f"disposition {disposition!r} is none of {choices} "
                     f"(or Disposition.LEAVE, .RESET, .UNPOWER)")


def power_down_steps(max_steps: int = POWER_DOWN_MAX_STEPS) -> "LoopSteps[list[str]]":
    """The disconnect loop (:func:`power_down_loop_steps`), yielded as a
    :class:`~scardio.sequences.Loop` when the core can take `max_steps`."""
    loop = _LOOPS.get(max_steps)
    if loop is None:
        if type(max_steps) is not int or not 0 <= max_steps <= 0xFFFFFFFF:
            return (yield from power_down_loop_steps(max_steps))
        loop = Loop(LOOP_POWER_DOWN, 0, max_steps, partial(_loop_steps, max_steps), powered_down)
        if len(_LOOPS) < 16:
            _LOOPS[max_steps] = loop
    return (yield loop)  # type: ignore[no-any-return]


_LOOPS: dict[int, Loop] = {}


def _loop_steps(max_steps: int, deadline: Optional[float]) -> "Steps[list[str]]":
    return power_down_loop_steps(max_steps)


def power_down_loop_steps(max_steps: int = POWER_DOWN_MAX_STEPS) -> "Steps[list[str]]":
    """The disconnect loop: SPECIFIC, NEGOTIABLE, POWERED -> POWER_DOWN;
    anything else -> nothing."""
    actions: list[str] = []
    for _ in range(max_steps):
        state = state_value((yield _GET_STATE))
        actions.append(STATE_NAMES[state])
        if state in _POWERED_STATES:
            yield _POWER_DOWN
            actions.append("POWER_DOWN")
            continue
        return actions
    return actions


_TRAIL_POWER_DOWN = LOOP_TRAIL["POWER_DOWN"]
#: Trails seen, read once each (a handful).
_TRAILS: dict[bytes, tuple[str, ...]] = {}


def powered_down(atr: bytes, trail: bytes) -> list[str]:
    """What :func:`power_down_loop_steps` returns for the same answers,
    from the trail of a loop the core ran to the end (`atr`: unused)."""
    known = _TRAILS.get(trail)
    if known is None:
        names = []
        for b in trail:
            if b < len(STATE_NAMES):
                names.append(STATE_NAMES[b])
            elif b == _TRAIL_POWER_DOWN:
                names.append("POWER_DOWN")
            else:
                raise RuntimeError(f"unreadable power-down trail {trail.hex()}")
        known = tuple(names)
        if len(_TRAILS) < 64:
            _TRAILS[trail] = known
    return list(known)


def release_card_steps() -> "Steps[bool]":
    """RELEASE_CARD: whether the backend let go of the card, its power now
    the resource manager's (else the caller powers it down)."""
    return u32((yield _RELEASE_CARD), "RELEASE_CARD") == 1


def warm_reset_steps() -> "Steps[bytes]":
    """POWER WARM_RESET; returns the ATR."""
    atr = yield _WARM_RESET
    return atr
