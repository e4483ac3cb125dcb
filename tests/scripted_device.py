"""A fake Device that answers GET_STATE from a script, for the connect table.

Every row of the spec's connect table (UNKNOWN ... SPECIFIC) is reached by
scripting the states GET_STATE reports, whatever backend could or could not
produce them (an IFD handler never reports PRESENT or POWERED).  It speaks
both halves of the Device surface: ``ioctl`` for the synchronous runner, and
``submit``/``harvest``/``fileno`` (operations that complete at once, a socket
pair readable while completions wait) for the asyncio one.
"""

from __future__ import annotations

import itertools
import socket
import struct
import threading
from typing import Any, Optional

from scardio import errors
from scardio.constants import IOCTL, Attr, PowerAction

ATR = bytes.fromhex("3B00")
_U32 = struct.Struct("<I")


def describe(code: int, data: bytes) -> str:
    """A call as the tests compare it: "POWER(COLD_RESET)", "GET_STATE"."""
    name = IOCTL(code).name
    if code == IOCTL.POWER:
        return f"{name}({PowerAction(_U32.unpack(data)[0]).name})"
    if code == IOCTL.GET_ATTRIBUTE:
        return f"{name}({Attr(_U32.unpack(data)[0]).name})"
    return name


class ScriptedOperation:
    """Completed on creation; the result or the error of the scripted call."""

    _ids = itertools.count(1)

    def __init__(self, device: "ScriptedDevice", code: int, out: Optional[bytes],
                 error: Optional[errors.ScardioError]) -> None:
        self.id = next(self._ids)
        self.device = device
        self.code = code
        self._out = out
        self._error = error

    def done(self) -> bool:
        return True

    def wait(self, timeout: Optional[float] = None) -> bytes:
        return self.result()

    def result(self) -> bytes:
        if self._error is not None:
            raise self._error
        assert self._out is not None
        return self._out

    def cancel(self) -> None:
        pass


class ScriptedDevice:
    """GET_STATE answers `states` in turn, then ABSENT.  `current_protocol`
    is what CURRENT_PROTOCOL_TYPE reports for a SPECIFIC card; SET_PROTOCOL
    picks T=1 when asked for it, else T=0."""

    library = ""
    device_name = "scripted"
    lun = 0

    def __init__(self, states: list[int], *, atr: bytes = ATR, current_protocol: int = 2,
                 atr_before_reset: bool = True) -> None:
        self.states = list(states)
        self.atr = atr
        self.current_protocol = current_protocol
        self.atr_before_reset = atr_before_reset
        self.calls: list[str] = []
        self.closed = False
        self._reset = False
        self._lock = threading.Lock()
        self._done: list[ScriptedOperation] = []
        self._rsock, self._wsock = socket.socketpair()
        self._rsock.setblocking(False)

    def ioctl(self, code: int, input: bytes = b"", output_size: int = 0) -> bytes:
        data = bytes(input)
        with self._lock:
            self.calls.append(describe(code, data))
        if code == IOCTL.GET_STATE:
            return _U32.pack(self.states.pop(0) if self.states else 1)
        if code == IOCTL.POWER:
            if _U32.unpack(data)[0] == PowerAction.POWER_DOWN:
                return b""
            self._reset = True
            return self.atr
        if code == IOCTL.GET_ATTRIBUTE:
            tag = _U32.unpack(data)[0]
            if tag == Attr.ATR_STRING:
                if not (self._reset or self.atr_before_reset):
                    raise errors.InvalidStateError("no ATR before a reset",
                                                   status=0xC0000184, ioctl=code)
                return self.atr
            if tag == Attr.CURRENT_PROTOCOL_TYPE:
                return _U32.pack(self.current_protocol)
            raise errors.NotSupportedError("not kept", ioctl=code)
        if code == IOCTL.SET_PROTOCOL:
            return _U32.pack(2 if _U32.unpack(data)[0] & 2 else 1)
        return b""

    # -- the overlapped half ------------------------------------------------
    def submit(self, code: int, input: bytes = b"", output_size: int = 0) -> ScriptedOperation:
        try:
            op = ScriptedOperation(self, code, self.ioctl(code, input, output_size), None)
        except errors.ScardioError as exc:
            op = ScriptedOperation(self, code, None, exc)
        with self._lock:
            self._done.append(op)
        self._wsock.send(b"x")
        return op

    def fileno(self) -> int:
        return self._rsock.fileno()

    def waitable(self) -> int:
        return self._rsock.fileno()

    def wake(self) -> None:
        self._wsock.send(b"x")

    def harvest(self, timeout: float = 0.0) -> list[ScriptedOperation]:
        with self._lock:
            done, self._done = self._done, []
        try:
            while self._rsock.recv(4096):
                pass
        except BlockingIOError:
            pass
        return done

    def cancel_all(self) -> None:
        pass

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._rsock.close()
            self._wsock.close()

    def __enter__(self) -> "ScriptedDevice":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
