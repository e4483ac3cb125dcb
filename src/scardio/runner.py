"""The synchronous runner: drives a sequence (:mod:`scardio.sequences`)
with blocking IOCTLs on a Device."""

from __future__ import annotations

import time
from typing import Any, Optional

from . import errors
from .constants import ioctl_name
from .sequences import Request, Steps, T

__all__ = ["run_sync"]


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
