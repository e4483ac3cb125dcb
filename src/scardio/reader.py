"""Readers: the resource manager's sequences (start-up, the connect loop and
its state table, power-down) over a :class:`scardio.Device`, the same code
for every backend.

The sequences (start-up, connect, power-down, transmit) are written once as
generators that *yield* IOCTL requests and receive their outputs (or have the
typed error thrown into them).  :func:`run_sync` drives them with blocking
calls; :mod:`scardio.aio` drives the very same generators with overlapped
IOCTLs on an asyncio loop.  So the state table is implemented in exactly one
place, whatever the driver and whatever the calling style.

Power-down timer: ``Card.disconnect()`` leaves the card powered and starts a
timer (:data:`DEFAULT_POWER_DOWN_TIMEOUT`, 5 s); a reconnect before it fires
cancels it and reuses the powered card without a reset; when it fires, the
GET_STATE loop powers the card down.  A timeout of 0 powers the card down
during the disconnect itself (the same ``power_down`` event, reason
"timer"); None never does.
"""

from __future__ import annotations

import collections
import enum
import logging
import numbers
import struct
import threading
import time
import weakref
from dataclasses import dataclass, field
from types import TracebackType
from typing import (TYPE_CHECKING, Any, Callable, Generator, Iterable, NamedTuple,
                    Optional, TypeVar, Union)

from . import errors, powerdown
from .constants import (IOCTL, Attr, PowerAction, Protocol, State, attr_name, ioctl_name,
                        power_action_name, protocol_mask_name, state_name)

if TYPE_CHECKING:
    from .card import Card
    from .discovery import ReaderDescriptor

__all__ = ["Reader", "ReaderAttributes", "ReaderEvent", "Disposition",
           "TracingDevice", "TraceRecord", "open_reader", "run_sync",
           "DEFAULT_POWER_DOWN_TIMEOUT", "DEFAULT_CONNECT_TIMEOUT",
           "CONNECT_MAX_STEPS", "Characteristics", "check_power_down_timeout"]

#: Seconds a disconnected card stays powered.  pcscd's grace period
#: (PCSCLITE_POWER_OFF_GRACE_PERIOD) is 5 s: an application that disconnects
#: and reconnects within that window (the common "open a session per
#: operation" pattern) gets its card back with no new reset, exactly as it
#: would under pcscd; longer keeps cards powered for no benefit, shorter
#: makes reconnects pay a cold reset (tens to hundreds of ms on real cards).
DEFAULT_POWER_DOWN_TIMEOUT: float = 5.0
#: Upper bound on the whole connect sequence.  Real cold resets take up to
#: about a second (slow ATRs, PPS); the bound only guards against drivers
#: that hang.
DEFAULT_CONNECT_TIMEOUT: float = 10.0
#: The longest legal path is PRESENT -> SWALLOWED -> NEGOTIABLE (three
#: GET_STATEs) plus one warm reset on a protocol mismatch; 8 leaves slack
#: while still catching a driver that never settles.
CONNECT_MAX_STEPS = 8
POWER_DOWN_MAX_STEPS = 4
#: How long close() waits for a call in progress on another thread before
#: it gives up on its own power-down sequence (normal APDUs take far less).
CLOSE_LOCK_WAIT = 0.5


def check_power_down_timeout(value: Optional[float]) -> Optional[float]:
    """`value` if it is a power-down timeout (None, or finite seconds >= 0);
    else ValueError (TypeError for a non-number)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"power_down_timeout must be seconds (a number) or None, "
                        f"not {type(value).__name__}")
    if not 0 <= value < float("inf"):  # also refuses NaN
        raise ValueError(f"power_down_timeout must be finite seconds >= 0 or None, "
                         f"got {value!r}")
    return value


log = logging.getLogger(__name__)

_U32 = struct.Struct("<I")
_ATR_OUT = 33  # MAX_ATR: POWER and ATR_STRING outputs


def _u32(raw: bytes, what: str) -> int:
    if len(raw) < 4:
        raise errors.DriverDataError(f"{what}: driver returned {len(raw)} byte(s), "
                                     "expected a 4-byte DWORD")
    return int(_U32.unpack_from(raw)[0])


class Request(NamedTuple):
    """One IOCTL a sequence wants to run."""
    code: int
    input: bytes = b""
    output_size: int = 0


T = TypeVar("T")
Steps = Generator[Request, bytes, T]


# ---------------------------------------------------------------------------
# Running sequences synchronously


def run_sync(device: Any, steps: "Steps[T]", *, deadline: Optional[float] = None) -> T:
    """Drive `steps` with blocking IOCTLs on `device`.  With a `deadline`
    (time.monotonic()) each IOCTL is overlapped and waited for at most the
    time left, then cancelled: a hung driver cannot hold the caller."""
    try:
        req = next(steps)
        while True:
            try:
                if deadline is None:
                    out = device.ioctl(req.code, req.input, req.output_size)
                else:
                    out = _ioctl_until(device, req, deadline)
            except errors.ScardioError as exc:
                req = steps.throw(exc)
            else:
                req = steps.send(out)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]
    finally:
        steps.close()


def _ioctl_until(device: Any, req: Request, deadline: float) -> bytes:
    left = deadline - time.monotonic()
    if left <= 0:
        raise errors.TimeoutError(f"{ioctl_name(req.code)}: timed out before it started",
                                  ioctl=req.code)
    op = device.submit(req.code, req.input, req.output_size)
    try:
        return op.wait(left)  # type: ignore[no-any-return]
    except errors.TimeoutError:
        op.cancel()
        try:
            op.wait(1.0)  # let the driver let go before the caller goes on
        except errors.ScardioError:
            pass
        raise errors.TimeoutError(f"{ioctl_name(req.code)}: no answer from the driver "
                                  "within the timeout (cancelled)", ioctl=req.code) from None


# ---------------------------------------------------------------------------
# Sequences (generators): start-up, connect, power-down


class Characteristics(enum.IntFlag):
    """SCARD_ATTR_CHARACTERISTICS bits (0: no special mechanism)."""
    SWALLOWS = 0x1
    EJECTS = 0x2
    CONFISCATES = 0x4
    CONTACTLESS = 0x8


@dataclass(frozen=True)
class ReaderAttributes:
    """Decoded start-up attributes; None where the driver has none."""
    vendor_name: Optional[str] = None
    ifd_type: Optional[str] = None
    device_unit: Optional[int] = None
    ifd_version: Optional[str] = None
    characteristics: Optional[int] = None
    unsupported: tuple[str, ...] = ()

    @property
    def characteristics_flags(self) -> list[str]:
        if self.characteristics is None:
            return []
        return [f.name or "" for f in Characteristics if self.characteristics & f]

    def reader_name(self) -> Optional[str]:
        """VENDOR_NAME IFD_TYPE UNIT, as Windows names readers; None
        without a vendor name."""
        if not self.vendor_name:
            return None
        parts = [self.vendor_name]
        if self.ifd_type:
            parts.append(self.ifd_type)
        parts.append(str(self.device_unit or 0))
        return " ".join(parts)

    def as_dict(self) -> dict[str, Any]:
        return {"vendor_name": self.vendor_name, "ifd_type": self.ifd_type,
                "device_unit": self.device_unit, "ifd_version": self.ifd_version,
                "characteristics": self.characteristics,
                "characteristics_flags": self.characteristics_flags,
                "unsupported": list(self.unsupported)}


# Errors that mean "this driver has no such attribute": fall back quietly.
_NO_ATTRIBUTE = (errors.NotSupportedError, errors.InvalidRequestError,
                 errors.InvalidParameterError, errors.BufferTooSmallError,
                 errors.DriverError)


def _text(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace").strip()


def startup_steps() -> "Steps[ReaderAttributes]":
    """GET_ATTRIBUTE VENDOR_NAME, VENDOR_IFD_TYPE, DEVICE_UNIT (the name),
    VENDOR_IFD_VERSION, then CHARACTERISTICS."""
    got: dict[Attr, Optional[bytes]] = {}
    missing = []
    for attr in (Attr.VENDOR_NAME, Attr.VENDOR_IFD_TYPE, Attr.DEVICE_UNIT,
                 Attr.VENDOR_IFD_VERSION, Attr.CHARACTERISTICS):
        try:
            got[attr] = yield Request(IOCTL.GET_ATTRIBUTE, _U32.pack(attr), 256)
        except _NO_ATTRIBUTE:
            got[attr] = None
            missing.append(attr.name)
    version = None
    if got[Attr.VENDOR_IFD_VERSION] and len(got[Attr.VENDOR_IFD_VERSION] or b"") >= 4:
        v = _u32(got[Attr.VENDOR_IFD_VERSION] or b"", "VENDOR_IFD_VERSION")
        version = f"{v >> 24}.{(v >> 16) & 0xFF}.{v & 0xFFFF}"  # 0xMMmmbbbb
    unit = got[Attr.DEVICE_UNIT]
    chars = got[Attr.CHARACTERISTICS]
    vendor, ifd_type = got[Attr.VENDOR_NAME], got[Attr.VENDOR_IFD_TYPE]
    return ReaderAttributes(
        vendor_name=_text(vendor) if vendor else None,
        ifd_type=_text(ifd_type) if ifd_type else None,
        device_unit=_u32(unit, "DEVICE_UNIT") if unit and len(unit) >= 4 else None,
        ifd_version=version,
        characteristics=_u32(chars, "CHARACTERISTICS") if chars and len(chars) >= 4 else None,
        unsupported=tuple(missing))


_STATES = tuple(State)  # indexed by value: faster than State(value)


def decode_state(raw: bytes) -> State:
    value = _u32(raw, "GET_STATE")
    # an out-of-range state is as good as unknown
    return _STATES[value] if value < len(_STATES) else State.UNKNOWN


def get_state_steps() -> "Steps[State]":
    return decode_state((yield Request(IOCTL.GET_STATE, b"", 4)))


@dataclass
class Connected:
    """What the connect sequence found."""
    atr: bytes
    protocol: Protocol
    actions: list[str] = field(default_factory=list)


def _read_atr(fallback: Optional[bytes]) -> "Steps[bytes]":
    try:
        atr = yield Request(IOCTL.GET_ATTRIBUTE, _U32.pack(Attr.ATR_STRING), _ATR_OUT)
    except _NO_ATTRIBUTE:
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
            reset_atr = yield Request(IOCTL.POWER, _U32.pack(PowerAction.COLD_RESET), _ATR_OUT)
            actions.append("COLD_RESET")
        elif state == State.POWERED:
            reset_atr = yield Request(IOCTL.POWER, _U32.pack(PowerAction.WARM_RESET), _ATR_OUT)
            actions.append("WARM_RESET")
        elif state == State.NEGOTIABLE:
            atr = yield from _read_atr(reset_atr)
            actions.append("ATR")
            break
        else:  # SPECIFIC: the ATR and the protocol already in force
            atr = yield from _read_atr(reset_atr)
            try:
                raw = yield Request(IOCTL.GET_ATTRIBUTE,
                                    _U32.pack(Attr.CURRENT_PROTOCOL_TYPE), 4)
                current = _u32(raw, "CURRENT_PROTOCOL_TYPE")
            except _NO_ATTRIBUTE:
                current = 0
            actions.append(f"ATR+PROTOCOL({current:#x})")
            wanted = protocols & (Protocol.T0 | Protocol.T1 | Protocol.RAW)
            if current and wanted and not current & wanted and not mismatch_reset:
                # Left in a protocol we cannot use (by an earlier session):
                # a warm reset makes it negotiable again, once.
                mismatch_reset = True
                reset_atr = yield Request(IOCTL.POWER, _U32.pack(PowerAction.WARM_RESET),
                                          _ATR_OUT)
                actions.append("WARM_RESET")
                continue
            break
    else:
        raise errors.TimeoutError(f"connect did not settle in {max_steps} steps: "
                                  f"{', '.join(actions)}")
    try:
        raw = yield Request(IOCTL.SET_PROTOCOL, _U32.pack(int(protocols)), 4)
    except errors.NotSupportedError as exc:
        raise errors.NotSupportedError(
            f"the card does not support the requested protocol(s) "
            f"{_protocol_text(protocols)} (ATR {atr.hex().upper()})",
            status=exc.status, driver_code=exc.driver_code, ioctl=exc.ioctl) from exc
    proto = _u32(raw, "SET_PROTOCOL")
    actions.append(f"SET_PROTOCOL({_protocol_text(proto)})")
    return Connected(atr, Protocol(proto), actions)


def power_down_steps(max_steps: int = POWER_DOWN_MAX_STEPS) -> "Steps[list[str]]":
    """The disconnect loop: SPECIFIC, NEGOTIABLE, POWERED -> POWER_DOWN;
    anything else -> nothing."""
    actions: list[str] = []
    for _ in range(max_steps):
        state = yield from get_state_steps()
        actions.append(state.name)
        if state in (State.SPECIFIC, State.NEGOTIABLE, State.POWERED):
            yield Request(IOCTL.POWER, _U32.pack(PowerAction.POWER_DOWN), 0)
            actions.append("POWER_DOWN")
            continue
        return actions
    return actions


def warm_reset_steps() -> "Steps[bytes]":
    atr = yield Request(IOCTL.POWER, _U32.pack(PowerAction.WARM_RESET), _ATR_OUT)
    return atr


def _protocol_text(p: int) -> str:
    names = [n for bit, n in ((Protocol.T0, "T=0"), (Protocol.T1, "T=1"),
                              (Protocol.RAW, "RAW"), (Protocol.DEFAULT, "DEFAULT")) if p & bit]
    return "|".join(names) or "OPTIMAL"


# ---------------------------------------------------------------------------
# Completions: one dispatcher per device


class Completions:
    """Routes a device's completed operations to their callbacks.

    Any number of harvesters (the Monitor thread, an asyncio loop's
    add_reader callback) may pop the device's queue; each completion is
    delivered exactly once to whoever watched it.  Holding the operation
    here also keeps it alive (a dropped Operation is cancelled)."""

    def __init__(self, device: Any) -> None:
        self.device = device
        self._lock = threading.Lock()
        self._handlers: dict[int, tuple[Any, Callable[[Any], None]]] = {}
        self._local = threading.local()

    def watch(self, op: Any, callback: Callable[[Any], None]) -> None:
        with self._lock:
            self._handlers[op.id] = (op, callback)
        if op.done():  # completed (and perhaps harvested) before we looked
            self._fire(op.id)

    def unwatch(self, op: Any) -> None:
        with self._lock:
            self._handlers.pop(op.id, None)

    def _fire(self, op_id: int) -> None:
        with self._lock:
            entry = self._handlers.pop(op_id, None)
        if entry is None:
            return
        # Trampoline: a callback that submits an operation which is already
        # complete (a card flipping faster than we resubmit) must not recurse
        # into the next callback, or a burst of events overflows the stack.
        ready: Optional[collections.deque[tuple[Any, Callable[[Any], None]]]] = \
            getattr(self._local, "ready", None)
        if ready is not None:
            ready.append(entry)
            return
        ready = self._local.ready = collections.deque([entry])
        try:
            while ready:
                op, callback = ready.popleft()
                try:
                    callback(op)
                except Exception:  # one broken callback must not starve the rest
                    log.exception("completion callback failed for %r", op)
        finally:
            self._local.ready = None

    def harvest(self, timeout: float = 0.0) -> int:
        """Pop what completed and run the callbacks; returns how many ran."""
        try:
            ops = self.device.harvest(timeout)
        except errors.ClosedError:
            ops = []
        n = 0
        for op in ops:
            self._fire(op.id)
            n += 1
        # Operations whose record was popped by the binding's weak map miss
        # (or that completed between watch() and now) are caught here.
        with self._lock:
            late = [i for i, (op, _) in self._handlers.items() if op.done()]
        for i in late:
            self._fire(i)
            n += 1
        return n

    def pending(self) -> int:
        with self._lock:
            return len(self._handlers)


# ---------------------------------------------------------------------------
# Tracing proxy


@dataclass(frozen=True)
class TraceRecord:
    """One IOCTL as seen by :class:`TracingDevice`."""
    timestamp: float          # time.monotonic() when it started
    code: int
    input: bytes
    output: Optional[bytes]
    status: str               # "SUCCESS" or the error's status name
    error: Optional[BaseException]
    duration_us: float
    overlapped: bool

    @property
    def name(self) -> str:
        return ioctl_name(self.code)

    @property
    def decoded(self) -> dict[str, str]:
        """The input's and output's DWORDs by their names, where the IOCTL
        has them: ``attribute`` (GET/SET_ATTRIBUTE's tag), ``operation``
        (POWER), ``protocols`` (SET_PROTOCOL's requested mask) and
        ``protocol`` (the one it set), ``state`` (GET_STATE)."""
        d: dict[str, str] = {}
        arg = _U32.unpack_from(self.input)[0] if len(self.input) >= 4 else None
        res = (_U32.unpack_from(self.output)[0]
               if self.output is not None and len(self.output) >= 4 else None)
        if self.code in (IOCTL.GET_ATTRIBUTE, IOCTL.SET_ATTRIBUTE) and arg is not None:
            d["attribute"] = attr_name(arg)
        elif self.code == IOCTL.POWER and arg is not None:
            d["operation"] = power_action_name(arg)
        elif self.code == IOCTL.SET_PROTOCOL:
            if arg is not None:
                d["protocols"] = protocol_mask_name(arg)
            if res is not None:
                d["protocol"] = protocol_mask_name(res)
        elif self.code == IOCTL.GET_STATE and res is not None:
            d["state"] = state_name(res)
        return d

    def input_text(self) -> str:
        """The input as --trace prints it: by name where it has one
        (``VENDOR_NAME``, ``COLD_RESET``, ``T0|T1``), else ``in=HEX``."""
        d = self.decoded
        if "attribute" in d:
            value = self.input[4:]
            return d["attribute"] + (f" value={value.hex().upper()}"
                                     if self.code == IOCTL.SET_ATTRIBUTE else "")
        if "operation" in d:
            return d["operation"]
        if "protocols" in d:
            return d["protocols"]
        return f"in={self.input.hex().upper() or '-'}"

    def output_text(self) -> str:
        """The output as --trace prints it: ``out=SWALLOWED`` (GET_STATE),
        ``out=T1`` (SET_PROTOCOL), else ``out=HEX`` (``-``: failed)."""
        d = self.decoded
        if "state" in d:
            return f"out={d['state']}"
        if "protocol" in d:
            return f"out={d['protocol']}"
        if self.output is None:
            return "out=-"
        return f"out={self.output.hex().upper() or '(empty)'}"

    def as_dict(self) -> dict[str, Any]:
        return {"t": self.timestamp, "ioctl": self.name, "code": f"0x{self.code:08X}",
                "input": self.input.hex(), "output": None if self.output is None
                else self.output.hex(), "decoded": self.decoded, "status": self.status,
                "duration_us": round(self.duration_us, 1), "overlapped": self.overlapped}


class _TracedOperation:
    def __init__(self, owner: "TracingDevice", op: Any, code: int, data: bytes,
                 started: float, t0: int) -> None:
        self._owner, self._op, self._code, self._input = owner, op, code, data
        self._started, self._t0 = started, t0
        self._logged = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._op, name)

    def _finish(self) -> None:
        if self._logged or not self._op.done():
            return
        self._logged = True
        dt = (time.perf_counter_ns() - self._t0) / 1000.0
        try:
            out: Optional[bytes] = self._op.result()
            err: Optional[BaseException] = None
        except errors.ScardioError as exc:
            out, err = None, exc
        self._owner._record(self._started, self._code, self._input, out, err, dt, True)

    def wait(self, timeout: Optional[float] = None) -> bytes:
        try:
            return self._op.wait(timeout)  # type: ignore[no-any-return]
        finally:
            self._finish()

    def result(self) -> bytes:
        try:
            return self._op.result()  # type: ignore[no-any-return]
        finally:
            self._finish()

    def __repr__(self) -> str:
        return f"<traced {self._op!r}>"


class TracingDevice:
    """A Device proxy that reports every IOCTL (input, output, status, µs)
    to `sink`.  Overlapped operations are reported when their completion is
    seen (harvest, wait or result)."""

    def __init__(self, device: Any, sink: Callable[[TraceRecord], None]) -> None:
        self._device = device
        self._sink = sink
        self._ops: "weakref.WeakValueDictionary[int, _TracedOperation]" = \
            weakref.WeakValueDictionary()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._device, name)

    @property
    def wrapped(self) -> Any:
        return self._device

    def _record(self, started: float, code: int, data: bytes, out: Optional[bytes],
                err: Optional[BaseException], dt: float, overlapped: bool) -> None:
        status = "SUCCESS" if err is None else getattr(err, "status_name", type(err).__name__)
        try:
            self._sink(TraceRecord(started, code, bytes(data), out, status, err, dt,
                                   overlapped))
        except Exception:  # a broken sink must not break the reader
            pass

    def ioctl(self, code: int, input: bytes = b"", output_size: int = 0) -> bytes:
        started = time.monotonic()
        t0 = time.perf_counter_ns()
        try:
            out = self._device.ioctl(code, input, output_size)
        except errors.ScardioError as exc:
            self._record(started, code, input, None, exc,
                         (time.perf_counter_ns() - t0) / 1000.0, False)
            raise
        self._record(started, code, input, out, None,
                     (time.perf_counter_ns() - t0) / 1000.0, False)
        return out  # type: ignore[no-any-return]

    def submit(self, code: int, input: bytes = b"", output_size: int = 0) -> _TracedOperation:
        started = time.monotonic()
        t0 = time.perf_counter_ns()
        op = self._device.submit(code, input, output_size)
        proxy = _TracedOperation(self, op, code, bytes(input), started, t0)
        self._ops[op.id] = proxy
        return proxy

    def harvest(self, timeout: float = 0.0) -> list[Any]:
        out = []
        for op in self._device.harvest(timeout):
            proxy = self._ops.pop(op.id, None)
            if proxy is not None:
                proxy._finish()
                out.append(proxy)
            else:
                out.append(op)
        return out


# ---------------------------------------------------------------------------
# Reader


class Disposition(enum.IntEnum):
    """What Card.disconnect() does with the card (PC/SC dwDisposition)."""
    LEAVE = 0    # leave it powered; the power-down timer takes it down later
    RESET = 1    # warm reset now (drops card state), then the timer
    UNPOWER = 2  # power it down now


@dataclass(frozen=True)
class ReaderEvent:
    """Something the reader did: ``kind`` is "connect", "disconnect",
    "power_down", "power_down_cancelled", "power_down_failed", "close";
    ``timestamp`` is time.monotonic()."""
    kind: str
    reader: str
    timestamp: float
    detail: dict[str, Any] = field(default_factory=dict)


class Reader:
    """One reader: start-up on open, the connect sequence, the power-down
    timer, card tracking.  Thread-safe; use as a context manager."""

    def __init__(self, device: Any, descriptor: Optional["ReaderDescriptor"] = None, *,
                 power_down_timeout: Optional[float] = DEFAULT_POWER_DOWN_TIMEOUT,
                 name: Optional[str] = None, startup: bool = True) -> None:
        self.device = device
        self.descriptor = descriptor
        try:
            self._power_down_timeout = check_power_down_timeout(power_down_timeout)
        except (TypeError, ValueError):
            device.close()  # the reader owns the device, as when start-up fails
            raise
        self.completions = Completions(device)
        self.attributes = ReaderAttributes()
        self._given_name = name
        self._lock = threading.RLock()
        self._closed = False
        self._close_guard = threading.Lock()
        self._card: Optional["Card"] = None
        self._timer: Optional[powerdown.Deadline] = None
        self._timer_token = 0
        self._listeners: list[Callable[[ReaderEvent], None]] = []
        self._presence_lock = threading.Lock()
        self._presence_waiters: list[Callable[[bool], None]] = []
        self._close_hooks: list[Callable[["Reader"], None]] = []
        self._tracked_by = 0        # monitors keeping IS_PRESENT/IS_ABSENT pending
        self.present: Optional[bool] = None  # as last reported by a monitor
        if startup:
            try:
                self._set_attributes(run_sync(device, startup_steps()))
            except BaseException:
                device.close()
                raise

    # -- identity ---------------------------------------------------------
    def _set_attributes(self, attributes: ReaderAttributes) -> None:
        self.attributes = attributes

    @property
    def name(self) -> str:
        """From VENDOR_NAME / VENDOR_IFD_TYPE / DEVICE_UNIT; else the
        descriptor's friendly name (e.g. vpcd has none of these)."""
        if self._given_name:
            return self._given_name
        built = self.attributes.reader_name()
        if built:
            return built
        if self.descriptor is not None:
            return self.descriptor.name
        return str(getattr(self.device, "device_name", "") or "reader")

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def power_down_timeout(self) -> Optional[float]:
        """Seconds a disconnected card stays powered: 0 powers it down at
        disconnect, None never (see the module doc)."""
        return self._power_down_timeout

    @power_down_timeout.setter
    def power_down_timeout(self, value: Optional[float]) -> None:
        self._power_down_timeout = check_power_down_timeout(value)

    @property
    def card(self) -> Optional["Card"]:
        """The connected card, if any."""
        c = self._card
        return c if c is not None and c.connected else None

    def info(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name,
                             "library": getattr(self.device, "library", None),
                             "device_name": getattr(self.device, "device_name", None),
                             "lun": getattr(self.device, "lun", None),
                             "power_down_timeout": self.power_down_timeout}
        if self.descriptor is not None:
            d["descriptor_name"] = self.descriptor.name
            d["source"] = self.descriptor.source
        d["attributes"] = self.attributes.as_dict()
        return d

    def __repr__(self) -> str:
        return f"<scardio.Reader {self.name!r}{' closed' if self._closed else ''}>"

    # -- events -----------------------------------------------------------
    def add_listener(self, callback: Callable[[ReaderEvent], None]) -> None:
        """Call `callback(ReaderEvent)` on connect, disconnect, power-down..."""
        self._listeners.append(callback)

    def remove_listener(self, callback: Callable[[ReaderEvent], None]) -> None:
        try:
            self._listeners.remove(callback)
        except ValueError:
            pass

    def _emit(self, kind: str, **detail: Any) -> None:
        ev = ReaderEvent(kind, self.name, time.monotonic(), detail)
        for cb in list(self._listeners):
            try:
                cb(ev)
            except Exception:
                pass  # a listener must not break a sequence

    def _check_open(self) -> None:
        if self._closed:
            raise errors.ClosedError(f"reader {self.name!r} is closed")

    # -- plain IOCTL helpers ----------------------------------------------
    def state(self) -> State:
        """GET_STATE."""
        self._check_open()
        return decode_state(self.device.ioctl(IOCTL.GET_STATE, b"", 4))

    def is_card_present(self) -> bool:
        return self.state() not in (State.UNKNOWN, State.ABSENT)

    def get_attribute(self, attr: int, output_size: int = 256) -> bytes:
        self._check_open()
        return self.device.ioctl(IOCTL.GET_ATTRIBUTE, _U32.pack(int(attr)),  # type: ignore[no-any-return]
                                 output_size)

    # -- connect / disconnect ---------------------------------------------
    def connect(self, protocols: int = Protocol.T0 | Protocol.T1, *,
                timeout: Optional[float] = DEFAULT_CONNECT_TIMEOUT,
                max_steps: int = CONNECT_MAX_STEPS,
                auto_get_response: bool = True, auto_resend: bool = True) -> "Card":
        """Run the connect loop and SET_PROTOCOL; return the :class:`Card`.

        Raises NoCardError (no card), TimeoutError (the sequence did not
        settle within `timeout` seconds or `max_steps` GET_STATEs),
        NotSupportedError (protocol), InvalidStateError (a card is already
        connected through this reader)."""
        from .card import Card
        with self._lock:
            self._check_open()
            if self.card is not None:
                raise errors.InvalidStateError(
                    f"a card is already connected through {self.name!r}; "
                    "disconnect it first")
            self._cancel_timer("reconnect")
            deadline = None if timeout is None else time.monotonic() + timeout
            t0 = time.monotonic()
            conn = run_sync(self.device, connect_steps(protocols, max_steps=max_steps,
                                                       deadline=deadline),
                            deadline=deadline)
            card = Card(self, conn.atr, conn.protocol, conn.actions,
                        auto_get_response=auto_get_response, auto_resend=auto_resend)
            self._card = card
            self._emit("connect", protocol=conn.protocol.name, atr=conn.atr.hex().upper(),
                       actions=conn.actions, ms=(time.monotonic() - t0) * 1000.0)
            return card

    def _disconnected(self, card: "Card", disposition: Disposition) -> None:
        """Called by Card.disconnect() with the reader lock held."""
        if self._card is card:
            self._card = None
        self._emit("disconnect", disposition=disposition.name)
        if self._closed:
            return
        if disposition == Disposition.UNPOWER:
            self._power_down_locked("disconnect")
            return
        if disposition == Disposition.RESET:
            try:
                run_sync(self.device, warm_reset_steps())
            except errors.NoCardError:
                return
        self._start_timer()

    # -- the power-down timer ---------------------------------------------
    def _start_timer(self) -> None:
        t = self.power_down_timeout
        if t is None:
            return  # never: the caller keeps the card powered
        if t == 0:
            # A timer of 0 s fires at once: the same event as a timer firing.
            self._power_down_locked("timer")
            return
        self._timer_token += 1
        token = self._timer_token
        self._timer = powerdown.schedule(t, lambda: self._timer_fired(token))

    @property
    def power_down_pending(self) -> bool:
        return self._timer is not None

    def _cancel_timer(self, why: str) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
            self._timer_token += 1  # a timer already running its callback gives up
            self._emit("power_down_cancelled", reason=why)

    def _timer_fired(self, token: int) -> None:
        with self._lock:
            if token != self._timer_token or self._closed:
                return  # cancelled by a reconnect while we waited for the lock
            self._timer = None
            self._power_down_locked("timer")

    def _power_down_locked(self, reason: str) -> list[str]:
        try:
            actions = run_sync(self.device, power_down_steps())
        except errors.ScardioError as exc:
            self._emit("power_down_failed", reason=reason, error=str(exc))
            return []
        self._emit("power_down", reason=reason, actions=actions,
                   powered_down="POWER_DOWN" in actions)
        return actions

    def power_down(self) -> list[str]:
        """Run the power-down sequence now (cancels the timer); returns the
        GET_STATE loop's trail, e.g. ["SPECIFIC", "POWER_DOWN", "SWALLOWED"]."""
        with self._lock:
            self._check_open()
            if self.card is not None:
                raise errors.InvalidStateError("a card is connected: disconnect it first")
            self._cancel_timer("power_down()")
            return run_sync(self.device, power_down_steps())

    # -- card tracking ----------------------------------------------------
    def _note_presence(self, present: bool) -> None:
        """A monitor saw an arrival (True) or a departure (False)."""
        self.present = present
        if not present:
            card = self._card
            if card is not None:
                card._mark_gone("the card was removed")
        with self._presence_lock:
            waiters = list(self._presence_waiters)
        for w in waiters:
            w(present)

    def _add_presence_waiter(self, w: Callable[[bool], None]) -> None:
        with self._presence_lock:
            self._presence_waiters.append(w)

    def _remove_presence_waiter(self, w: Callable[[bool], None]) -> None:
        with self._presence_lock:
            try:
                self._presence_waiters.remove(w)
            except ValueError:
                pass

    def _wait_tracking(self, present: bool, timeout: Optional[float]) -> None:
        code = IOCTL.IS_PRESENT if present else IOCTL.IS_ABSENT
        what = "a card" if present else "the card's removal"
        if self._tracked_by:
            # A monitor holds the one tracking request: follow its reports
            # (listening first, then looking, so nothing falls in between).
            ev = threading.Event()

            def waiter(p: bool) -> None:
                if p == present:
                    ev.set()
            self._add_presence_waiter(waiter)
            try:
                now = self.present if self.present is not None else self.is_card_present()
                if now == present or ev.wait(timeout):
                    return
            finally:
                self._remove_presence_waiter(waiter)
            raise errors.TimeoutError(f"no sign of {what} within {timeout} s", ioctl=code)
        op = self.device.submit(code)
        try:
            op.wait(timeout)
        except errors.TimeoutError:
            op.cancel()
            try:
                op.wait(1.0)
            except errors.ScardioError:
                pass
            raise errors.TimeoutError(f"no sign of {what} within {timeout} s",
                                      ioctl=code) from None
        except errors.DeviceBusyError as exc:
            raise errors.DeviceBusyError(
                f"{ioctl_name(code)}: another tracking request is pending on "
                f"{self.name!r} (one per reader); use the Monitor's events",
                status=exc.status, ioctl=code) from None
        if not present and self._card is not None:
            self._card._mark_gone("the card was removed")

    def wait_for_card(self, timeout: Optional[float] = None) -> None:
        """Return once a card is in (at once if one is).  Raises
        scardio.errors.TimeoutError after `timeout` seconds."""
        self._check_open()
        self._wait_tracking(True, timeout)

    def wait_for_removal(self, timeout: Optional[float] = None) -> None:
        """Return once the reader is empty (at once if it is)."""
        self._check_open()
        self._wait_tracking(False, timeout)

    # -- closing ----------------------------------------------------------
    def close(self, *, power_down: bool = True) -> None:
        """Disconnect, power the card down (unless `power_down` is false:
        the caller just did), cancel everything, release the driver.
        Idempotent and bounded: if another thread is inside a call (a
        transmit stuck in the driver), close waits at most
        CLOSE_LOCK_WAIT for it, then skips the power-down sequence and lets
        Device.close() cancel or abandon the call within the core's bound
        (the IFD backend powers a powered card down when it releases it)."""
        with self._close_guard:
            if self._closed:
                return
            self._closed = True  # nothing new starts; a pending timer gives up
        timer = self._timer
        if timer is not None:
            timer.cancel()
            self._timer = None
            self._emit("power_down_cancelled", reason="close")
        got = self._lock.acquire(timeout=CLOSE_LOCK_WAIT if power_down else 0.0)
        try:
            self._timer_token += 1
            card = self._card
            if card is not None:
                card._mark_gone("the reader was closed", disconnected=True)
                self._card = None
            if got and power_down and not getattr(self.device, "closed", False):
                self._power_down_locked("close")
        finally:
            if got:
                self._lock.release()
        for hook in list(self._close_hooks):
            try:
                hook(self)
            except Exception:
                pass
        try:
            self.device.close()
        finally:
            self._emit("close")

    def add_close_hook(self, hook: Callable[["Reader"], None]) -> None:
        """Run `hook(reader)` before the device closes (monitors detach)."""
        self._close_hooks.append(hook)

    def remove_close_hook(self, hook: Callable[["Reader"], None]) -> None:
        try:
            self._close_hooks.remove(hook)
        except ValueError:
            pass

    def __enter__(self) -> "Reader":
        return self

    def __exit__(self, exc_type: Optional[type[BaseException]],
                 exc: Optional[BaseException], tb: Optional[TracebackType]) -> None:
        self.close()

    def __del__(self) -> None:
        t = getattr(self, "_timer", None)
        if t is not None:
            t.cancel()


def open_device(descriptor: "ReaderDescriptor") -> Any:
    """Open the Device a descriptor names."""
    from ._core import Device
    if not descriptor.available:
        raise errors.DriverNotFoundError(
            f"reader {descriptor.name!r} is not available: "
            f"{descriptor.extra.get('problem', 'unknown reason')}")
    if descriptor.source == "win32":
        return Device.open_path(descriptor.device_name)
    return Device.open_ifd(descriptor.library, descriptor.device_name, descriptor.lun)


def open_reader(reader: Union["ReaderDescriptor", str, int] = 0, sim: int = 0, *,
                power_down_timeout: Optional[float] = DEFAULT_POWER_DOWN_TIMEOUT,
                readers: Optional[Iterable["ReaderDescriptor"]] = None,
                trace: Optional[Callable[[TraceRecord], None]] = None,
                **list_options: Any) -> Reader:
    """Open a reader by descriptor, name or index (see
    :func:`scardio.discovery.find_reader`) and run the start-up sequence.

    `sim` adds that many simulated readers to the candidates; `readers`
    replaces discovery; `trace` receives a :class:`TraceRecord` per IOCTL;
    other keywords go to :func:`scardio.discovery.list_readers`.
    Raises ReaderNotFoundError (a LookupError) when nothing matches."""
    from .discovery import ReaderDescriptor, find_reader, list_readers
    if isinstance(reader, ReaderDescriptor):
        desc = reader
    else:
        pool = list(readers) if readers is not None else list_readers(sim, **list_options)
        desc = find_reader(reader, pool)
    check_power_down_timeout(power_down_timeout)  # before the driver is loaded
    device = open_device(desc)
    if trace is not None:
        device = TracingDevice(device, trace)
    return Reader(device, desc, power_down_timeout=power_down_timeout)
