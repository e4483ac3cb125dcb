"""The tracing device: a Device proxy that reports every IOCTL."""

from __future__ import annotations

import time
import weakref
from dataclasses import dataclass
from typing import Any, Callable, Optional

from . import errors
from .constants import IOCTL, attr_name, ioctl_name, power_action_name, protocol_mask_name, state_name
from .sequences import U32

__all__ = ["TraceRecord", "TracingDevice"]


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
        arg = U32.unpack_from(self.input)[0] if len(self.input) >= 4 else None
        res = (U32.unpack_from(self.output)[0]
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

    #: Not the core's own loops (connect, power-down): their every IOCTL is traced.
    run_loop = None
    submit_loop = None

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

    def _timed(self, call: Callable[..., bytes], code: int, input: bytes,
               *args: Any) -> bytes:
        """`call(code, input, *args)`, recorded with its outcome and time."""
        started = time.monotonic()
        t0 = time.perf_counter_ns()
        try:
            out = call(code, input, *args)
        except errors.ScardioError as exc:
            self._record(started, code, input, None, exc,
                         (time.perf_counter_ns() - t0) / 1000.0, False)
            raise
        self._record(started, code, input, out, None,
                     (time.perf_counter_ns() - t0) / 1000.0, False)
        return out

    def ioctl(self, code: int, input: bytes = b"", output_size: int = 0) -> bytes:
        return self._timed(self._device.ioctl, code, input, output_size)

    def ioctl_on_lane(self, code: int, input: bytes = b"", output_size: int = 0,
                      timeout: Optional[float] = None) -> bytes:
        return self._timed(self._device.ioctl_on_lane, code, input, output_size, timeout)

    def submit(self, code: int, input: bytes = b"", output_size: int = 0) -> _TracedOperation:
        started = time.monotonic()
        t0 = time.perf_counter_ns()
        op = self._device.submit(code, input, output_size)
        proxy = _TracedOperation(self, op, code, bytes(input), started, t0)
        self._ops[op.id] = proxy
        return proxy

    def wait_tracking(self, code: int, timeout: Optional[float] = None) -> None:
        # Recorded as the overlapped request it is on the lane.
        started = time.monotonic()
        t0 = time.perf_counter_ns()
        try:
            self._device.wait_tracking(code, timeout)
        except errors.ScardioError as exc:
            self._record(started, code, b"", None, exc,
                         (time.perf_counter_ns() - t0) / 1000.0, True)
            raise
        self._record(started, code, b"", b"", None, (time.perf_counter_ns() - t0) / 1000.0,
                     True)

    def harvest(self, timeout: Optional[float] = 0.0) -> list[Any]:
        out = []
        for op in self._device.harvest(timeout):
            proxy = self._ops.pop(op.id, None)
            if proxy is not None:
                proxy._finish()
                out.append(proxy)
            else:
                out.append(op)
        return out
