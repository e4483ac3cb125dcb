"""The resource manager's sequences, sans-IO (docs/architecture.md, "The
Python layer").

Each sequence is a generator that *yields* a :class:`Request` (one IOCTL)
and receives its output, or has the typed error thrown into it; its return
value is the sequence's result.  It may also yield a :class:`Loop`: a loop
of the spec that the core can run as one operation, whose result comes
back as if the sequence had run ``yield from loop.steps()``.  Nothing here does I/O, takes a lock or
reads a clock other than a deadline it was given: :func:`scardio.reader.run_sync`
drives the generators with blocking IOCTLs and :mod:`scardio.aio` with
overlapped ones, so each sequence is written once for every calling style.

- :mod:`scardio.sequences.startup`: the start-up GET_ATTRIBUTEs;
- :mod:`scardio.sequences.connect`: the connect loop and SET_PROTOCOL;
- :mod:`scardio.sequences.disconnect`: dispositions, power-down, warm reset;
- :mod:`scardio.sequences.transmit`: TRANSMIT with GET RESPONSE / 6Cxx.
"""

from __future__ import annotations

import struct
from typing import Any, Callable, Generator, Iterable, NamedTuple, Optional, TypeVar, Union

from .. import errors
from ..constants import IOCTL, State

__all__ = ["Request", "Loop", "Steps", "LoopSteps", "decode_state", "state_value", "get_state_steps",
           "STATE_NAMES", "replayed"]

U32 = struct.Struct("<I")
U32_UNPACK = U32.unpack#: MAX_ATR: the output size of POWER and of GET_ATTRIBUTE ATR_STRING.
ATR_OUT = 33

# Errors that mean "this driver has no such attribute": fall back quietly.
NO_ATTRIBUTE = (errors.NotSupportedError, errors.InvalidRequestError,
                errors.InvalidParameterError, errors.BufferTooSmallError,
                errors.DriverError)


def u32(raw: bytes, what: str) -> int:
    """The DWORD a driver returned for `what` (DriverDataError if short)."""
    if len(raw) == 4:
        return U32_UNPACK(raw)[0]  # type: ignore[no-any-return]
    if len(raw) < 4:
        raise errors.DriverDataError(f"{what}: driver returned {len(raw)} byte(s), "
                                     "expected a 4-byte DWORD")
    return int(U32.unpack_from(raw)[0])


class Request(NamedTuple):
    """One IOCTL a sequence wants to run."""
    code: int
    input: bytes = b""
    output_size: int = 0


T = TypeVar("T")
#: A sequence of IOCTLs: yields Requests, is sent their outputs, returns a T.
Steps = Generator[Request, bytes, T]


class Loop(NamedTuple):
    """A loop of the spec that a device of the core runs as one operation
    (``Device.run_loop(kind, protocols, max_steps)``) where its runner can:
    the runner sends back what ``steps(deadline)`` would return.
    ``steps(deadline)`` is the same loop IOCTL by IOCTL: what a runner
    drives (as ``yield from``) for a device without ``run_loop``, and what
    replays the core's record where the core stopped (:func:`replayed`).
    ``result(atr, trail)`` is its return value from a run the core
    completed.  A Loop holds no state of a run: the same one serves every
    run with the same arguments."""
    kind: int
    protocols: int
    max_steps: int
    steps: Callable[[Optional[float]], Steps[Any]]
    result: Callable[[bytes, bytes], Any]


#: A sequence that may also yield Loops (sent what their steps return).
LoopSteps = Generator[Union[Request, Loop], Any, T]

_STATES = tuple(State)  # indexed by value: faster than State(value)
# Every state a driver can report, by its output bytes: one lookup per call.
_STATE_OF_OUTPUT = {U32.pack(int(s)): s for s in State}
#: State names indexed by value (enum .name is a property: slower).
STATE_NAMES = tuple(s.name for s in _STATES)
_N_STATES = len(_STATES)
_GET_STATE = Request(IOCTL.GET_STATE, b"", 4)


def state_value(raw: bytes) -> int:
    """GET_STATE's output as an index into :data:`STATE_NAMES` (an
    out-of-range state is as good as unknown: 0)."""
    value = u32(raw, "GET_STATE")
    return value if value < _N_STATES else 0


def decode_state(raw: bytes) -> State:
    """GET_STATE's output as a :class:`scardio.State`."""
    state = _STATE_OF_OUTPUT.get(raw)
    if state is not None:
        return state
    return _STATES[state_value(raw)]


def get_state_steps() -> "Steps[State]":
    """GET_STATE."""
    return decode_state((yield _GET_STATE))


#: One IOCTL as the core ran it: (code, input, status, driver_code, output).
Record = tuple[int, bytes, int, int, bytes]


def replayed(steps: "Steps[T]", records: Iterable[Record]) -> "Steps[T]":
    """`steps` with its first IOCTLs answered from `records` (as the core
    ran them, e.g. ``Device.connect_loop()``: an error status is thrown in
    as the typed error ``Device.ioctl()`` raises for it), and its later
    ones yielded as usual: how a sequence takes over where the core's run
    of it stopped, deciding what the answer that stopped it means.
    RuntimeError if the sequence asks for another IOCTL than the record
    shows (the two disagree: a bug)."""
    try:
        req = next(steps)
        for code, data, status, driver_code, out in records:  # noqa: B007
            if req.code != code or bytes(req.input) != data:
                from ..constants import ioctl_name
                raise RuntimeError(f"the core ran {ioctl_name(code)}({data.hex()}) where the "
                                   f"sequence asks for {ioctl_name(req.code)}"
                                   f"({bytes(req.input).hex()})")
            if status:
                req = steps.throw(errors.error_for_status(status, driver_code=driver_code,
                                                          ioctl=code))
            else:
                req = steps.send(out)
        while True:
            try:
                out = yield req
            except errors.ScardioError as exc:
                req = steps.throw(exc)
            else:
                req = steps.send(out)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]
    finally:
        steps.close()
