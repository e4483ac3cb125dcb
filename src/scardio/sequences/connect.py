"""The connect loop of the spec (GET_STATE until the card is negotiable,
swallowing, resetting as the state asks), then SET_PROTOCOL."""

from __future__ import annotations

import time
from functools import partial
from typing import Optional, Sequence

from .. import errors
from .._core import LOOP_CONNECT, LOOP_TRAIL
from ..constants import IOCTL, Attr, PowerAction, Protocol, State
from . import (ATR_OUT, NO_ATTRIBUTE, STATE_NAMES, U32, Loop, LoopSteps, Request, Steps,
               state_value, u32)
from .sharing import share_steps

__all__ = ["Connected", "connect_steps", "connect_loop", "connect_loop_steps", "connected",
           "set_protocol_request", "CONNECT_MAX_STEPS", "SET_PROTOCOL_REQUESTS"]

#: The longest legal path is PRESENT -> SWALLOWED -> NEGOTIABLE (three
#: GET_STATEs) plus one warm reset on a protocol mismatch; 8 leaves slack
#: while still catching a driver that never settles.
CONNECT_MAX_STEPS = 8
_MAX_DWORD = 0xFFFFFFFF


class Connected:
    """What the connect sequence found."""

    __slots__ = ("atr", "protocol", "actions", "share_asked", "share")

    def __init__(self, atr: bytes, protocol: Protocol, actions: Sequence[str] = (),
                 share_asked: Optional[int] = None, share: Optional[int] = None) -> None:
        self.atr = atr
        self.protocol = protocol
        #: The steps taken ("SPECIFIC", "ATR+PROTOCOL(0x2)", "SET_PROTOCOL(T=1)"...).
        self.actions = actions
        #: The share mode asked of SET_SHARE_MODE and the mode it answered
        #: (both None when the connect did not ask).
        self.share_asked = share_asked
        self.share = share

    def __repr__(self) -> str:
        return (f"Connected(atr={self.atr!r}, protocol={self.protocol!r}, "
                f"actions={list(self.actions)!r})")


# The requests never change: built once, not per connect.
_GET_STATE = Request(IOCTL.GET_STATE, b"", 4)
_SWALLOW = Request(IOCTL.SWALLOW)
_COLD_RESET = Request(IOCTL.POWER, U32.pack(PowerAction.COLD_RESET), ATR_OUT)
_WARM_RESET = Request(IOCTL.POWER, U32.pack(PowerAction.WARM_RESET), ATR_OUT)
_GET_ATR = Request(IOCTL.GET_ATTRIBUTE, U32.pack(Attr.ATR_STRING), ATR_OUT)
_GET_PROTOCOL = Request(IOCTL.GET_ATTRIBUTE, U32.pack(Attr.CURRENT_PROTOCOL_TYPE), 4)
#: SET_PROTOCOL by protocol mask, filled as masks are asked for.
SET_PROTOCOL_REQUESTS: dict[int, Request] = {}

_PRESENT, _SWALLOWED, _POWERED = int(State.PRESENT), int(State.SWALLOWED), int(State.POWERED)
_NEGOTIABLE, _SPECIFIC = int(State.NEGOTIABLE), int(State.SPECIFIC)
_NO_CARD = (int(State.UNKNOWN), int(State.ABSENT))
_USABLE = int(Protocol.T0 | Protocol.T1 | Protocol.RAW)


def _read_atr(fallback: Optional[bytes]) -> "Steps[bytes]":
    try:
        atr = yield _GET_ATR
    except NO_ATTRIBUTE:
        atr = fallback or b""
    if not atr:
        raise errors.UnrecognizedCardError("the reader reports a powered card but no ATR")
    return atr


def set_protocol_request(protocols: int) -> Request:
    """SET_PROTOCOL(protocols) (TypeError, struct.error out of range)."""
    req = SET_PROTOCOL_REQUESTS.get(protocols)
    if req is None:
        req = Request(IOCTL.SET_PROTOCOL, U32.pack(protocols), 4)
        if len(SET_PROTOCOL_REQUESTS) < 64:  # masks are a handful of values; bound it anyway
            SET_PROTOCOL_REQUESTS[protocols] = req
    return req


def connect_steps(protocols: int, *, max_steps: int = CONNECT_MAX_STEPS,
                  deadline: Optional[float] = None,
                  share: Optional[int] = None) -> "LoopSteps[Connected]":
    """The connect loop of the spec, then SET_PROTOCOL; first SET_SHARE_MODE
    when `share` (a :class:`scardio.constants.Share` value) is given.  The
    loop is yielded as a :class:`~scardio.sequences.Loop` (the core runs
    it where it can) when the core can take `max_steps`."""
    protocols = int(protocols)
    set_protocol_request(protocols)  # TypeError / range before any IOCTL
    share_in_force = None if share is None else (yield from share_steps(share))
    loop = connect_loop(protocols, max_steps)
    if loop is not None:
        conn = yield loop
    else:
        conn = yield from connect_loop_steps(protocols, max_steps, deadline)
    if share is not None:
        conn.share_asked, conn.share = share, share_in_force
    return conn  # type: ignore[no-any-return]


#: Loops by (protocols, max_steps): a handful of each.
_LOOPS: dict[tuple[int, int], Loop] = {}


def connect_loop(protocols: int, max_steps: int) -> Optional[Loop]:
    """The connect loop as a :class:`~scardio.sequences.Loop`, or None if
    the core cannot take `max_steps` (not a DWORD: the steps alone then).
    `protocols` is checked as :func:`connect_steps` checks it."""
    loop = _LOOPS.get((protocols, max_steps))
    if loop is None:
        protocols = int(protocols)
        set_protocol_request(protocols)  # TypeError / range
        if type(max_steps) is not int or not 0 <= max_steps <= _MAX_DWORD:
            return None
        loop = Loop(LOOP_CONNECT, protocols, max_steps,
                    partial(connect_loop_steps, protocols, max_steps), connected)
        if len(_LOOPS) < 64:
            _LOOPS[protocols, max_steps] = loop
    return loop


def connect_loop_steps(protocols: int, max_steps: int,
                       deadline: Optional[float] = None) -> "Steps[Connected]":
    """The connect loop IOCTL by IOCTL, then SET_PROTOCOL (`protocols`
    checked by :func:`connect_steps`)."""
    set_protocol = set_protocol_request(protocols)
    actions: list[str] = []
    reset_atr: Optional[bytes] = None
    atr = b""
    mismatch_reset = False
    for _ in range(max_steps):
        if deadline is not None and time.monotonic() > deadline:
            raise errors.TimeoutError(f"connect timed out after: {', '.join(actions)}")
        state = state_value((yield _GET_STATE))
        actions.append(STATE_NAMES[state])
        if state in _NO_CARD:
            raise errors.NoCardError(f"no card in the reader (state {STATE_NAMES[state]})")
        if state == _SPECIFIC:  # the ATR and the protocol already in force
            atr = yield from _read_atr(reset_atr)
            try:
                current = u32((yield _GET_PROTOCOL), "CURRENT_PROTOCOL_TYPE")
            except NO_ATTRIBUTE:
                current = 0
            actions.append(_ATR_PROTOCOL_TEXT.get(current) or f"ATR+PROTOCOL({current:#x})")
            wanted = protocols & _USABLE
            if current and wanted and not current & wanted and not mismatch_reset:
                # Left in a protocol we cannot use (by an earlier session):
                # a warm reset makes it negotiable again, once.
                mismatch_reset = True
                reset_atr = yield _WARM_RESET
                actions.append("WARM_RESET")
                continue
            break
        if state == _NEGOTIABLE:
            atr = yield from _read_atr(reset_atr)
            actions.append("ATR")
            break
        if state == _PRESENT:
            yield _SWALLOW
            actions.append("SWALLOW")
        elif state == _SWALLOWED:
            reset_atr = yield _COLD_RESET
            actions.append("COLD_RESET")
        else:  # POWERED
            reset_atr = yield _WARM_RESET
            actions.append("WARM_RESET")
    else:
        raise errors.TimeoutError(f"connect did not settle in {max_steps} steps: "
                                  f"{', '.join(actions)}")
    try:
        raw = yield set_protocol
    except errors.NotSupportedError as exc:
        raise errors.NotSupportedError(
            f"the card does not support the requested protocol(s) "
            f"{_protocol_text(protocols)} (ATR {atr.hex().upper()})",
            status=exc.status, driver_code=exc.driver_code, ioctl=exc.ioctl) from exc
    proto = u32(raw, "SET_PROTOCOL")
    actions.append(_SET_PROTOCOL_TEXT.get(proto) or f"SET_PROTOCOL({_protocol_text(proto)})")
    return Connected(atr, _protocol(proto), actions)


def _protocol_text(p: int) -> str:
    names = [n for bit, n in ((Protocol.T0, "T=0"), (Protocol.T1, "T=1"),
                              (Protocol.RAW, "RAW"), (Protocol.DEFAULT, "DEFAULT")) if p & bit]
    return "|".join(names) or "OPTIMAL"


# The answers SET_PROTOCOL gives (exactly one protocol), precomputed.
_ONE_PROTOCOL = {int(p): p for p in (Protocol.T0, Protocol.T1, Protocol.RAW)}
_SET_PROTOCOL_TEXT = {v: f"SET_PROTOCOL({_protocol_text(v)})" for v in _ONE_PROTOCOL}
_ATR_PROTOCOL_TEXT = {v: f"ATR+PROTOCOL({v:#x})" for v in (0, *_ONE_PROTOCOL)}


def _protocol(value: int) -> Protocol:
    p = _ONE_PROTOCOL.get(value)
    return p if p is not None else Protocol(value)


# -- the loop as the core ran it (Device.run_loop) ---------------------------

_TRAIL = LOOP_TRAIL
_SIMPLE_TRAIL = {_TRAIL["ATR"]: "ATR", _TRAIL["SWALLOW"]: "SWALLOW",
                 _TRAIL["COLD_RESET"]: "COLD_RESET", _TRAIL["WARM_RESET"]: "WARM_RESET"}
_TRAIL_ATR_PROTOCOL, _TRAIL_SET_PROTOCOL = _TRAIL["ATR_PROTOCOL"], _TRAIL["SET_PROTOCOL"]
_N_STATE_NAMES = len(STATE_NAMES)
#: Trails seen, read once each: a reader's connects all follow one or two.
_TRAILS: dict[bytes, tuple[tuple[str, ...], Protocol]] = {}


def connected(atr: bytes, trail: bytes) -> Connected:
    """What :func:`connect_loop_steps` returns for the same answers, from
    the ATR and the trail of a loop the core ran to the end along ordinary
    answers (``Device.run_loop(LOOP_CONNECT, ...)`` answering True)."""
    known = _TRAILS.get(trail)
    if known is None:
        known = _read_trail(trail)
        if len(_TRAILS) < 64:  # a handful per reader; bound it anyway
            _TRAILS[trail] = known
    return Connected(atr, known[1], known[0])


def _read_trail(trail: bytes) -> tuple[tuple[str, ...], Protocol]:
    actions: list[str] = []
    proto: Optional[int] = None
    i, n = 0, len(trail)
    while i < n:
        b = trail[i]
        i += 1
        if b < _N_STATE_NAMES:
            actions.append(STATE_NAMES[b])
        elif b in _SIMPLE_TRAIL:
            actions.append(_SIMPLE_TRAIL[b])
        elif b in (_TRAIL_ATR_PROTOCOL, _TRAIL_SET_PROTOCOL) and i + 4 <= n:
            value = U32.unpack_from(trail, i)[0]
            i += 4
            if b == _TRAIL_SET_PROTOCOL:
                proto = value
                actions.append(_SET_PROTOCOL_TEXT.get(value)
                               or f"SET_PROTOCOL({_protocol_text(value)})")
            else:
                actions.append(_ATR_PROTOCOL_TEXT.get(value) or f"ATR+PROTOCOL({value:#x})")
        else:
            raise RuntimeError(f"unreadable connect trail {trail.hex()}")
    if proto is None:
        raise RuntimeError(f"connect trail without SET_PROTOCOL: {trail.hex()}")
    return tuple(actions), _protocol(proto)
