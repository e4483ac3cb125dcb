"""The synchronous runner: drives a sequence (:mod:`scardio.sequences`)
with blocking IOCTLs on a Device.

Without a deadline the IOCTLs run in the calling thread.  With one, they
run on the device's I/O lane thread while the caller waits at most until
the deadline: a hung driver holds the lane, never the caller.  The
hand-off is what the bound costs, and its cheapest form depends on where
the two threads run (``Device.lane_apart``, docs/architecture.md):

- on different processors, each IOCTL goes to the lane by itself
  (``Device.ioctl_on_lane``): the two threads spin briefly for each other,
  so a hand-off costs about a microsecond, the sequence (Python) stays in
  the caller's thread and processor cache, and the lane runs C only,
  without the interpreter lock;
- on one processor (pinned, or placed so by the scheduler) nothing can
  spin, every hand-off is two context switches, so the whole sequence
  goes to the lane as one job (``Device.call_on_lane``): two switches for
  all its IOCTLs.

A :class:`~scardio.sequences.Loop` the sequence yields (the connect and
power-down loops) runs in the core as one operation where the device can
(``Device.run_loop``): in the calling thread, or with a deadline as one
job on the lane, a single hand-off for all its IOCTLs on either placement.
Where the core stops at an unusual answer, the loop's own steps replay
what it did and take over, so every such answer means what the sequence
says; a device without ``run_loop`` (a tracing proxy, a model) runs the
steps.

A caller that gives up stops the sequence: the IOCTL in progress finishes
on the lane unwaited (and a whole-sequence job stops before its next
one); the caller never learns its outcome, so a sequence run with a
deadline must change nothing but the device (the sans-IO sequences do
not; a runtime's state changes go before and after, in the caller's
thread).
"""

from __future__ import annotations

import time
from typing import Any, Callable, Optional

from . import errors
from ._core import STATUS_PENDING, run_loop_on
from .constants import ioctl_name
from .sequences import Loop, LoopSteps, Request, T

__all__ = ["run_sync", "run_loop"]

_monotonic = time.monotonic
_NO_REQUEST: Any = object()


def run_sync(device: Any, steps: "LoopSteps[T]", *, deadline: Optional[float] = None) -> T:
    """Drive `steps` with blocking IOCTLs on `device`.  With a `deadline`
    (time.monotonic()), give up at the deadline with TimeoutError even if
    the driver never answers (see the module doc)."""
    if deadline is None:
        return _drive(steps, device.ioctl if device is not None else None, device, None)
    lane_apart = getattr(device, "lane_apart", None)
    if lane_apart is None:  # a device without lanes of its own
        return _drive(steps, lambda code, input, size: _ioctl_until(device, deadline, code,
                                                                    input, size),
                      device, deadline)
    if lane_apart():
        return _drive(steps, _bounded(device.ioctl_on_lane, deadline), device, deadline)
    return _sequence_on_lane(device, steps, deadline)


def run_loop(device: Any, loop: Loop, deadline: Optional[float] = None) -> Any:
    """What ``loop.steps(deadline)`` returns, run on `device`: by the core
    as one operation where the device can (``Device.run_loop``; with a
    deadline on the I/O lane, waited for until then), else IOCTL by IOCTL
    (:func:`run_sync`), as also from wherever the core stopped (its record
    replayed through the steps, which decide what the answer that stopped
    it means)."""
    # In the binding: the connect of the reader API runs it from there too.
    return run_loop_on(device, loop, deadline)


def _drive(steps: "LoopSteps[T]", ioctl: Any, device: Any, deadline: Optional[float],
           first: Any = _NO_REQUEST) -> T:
    """Drive `steps` (from `first`, a request it already yielded): each
    Request through ioctl(code, input, output_size), each Loop through
    :func:`run_loop`, their errors thrown in; a TimeoutError of a wait given
    up (status STATUS_PENDING, not the driver's answer) ends it."""
    try:
        req = next(steps) if first is _NO_REQUEST else first
        while True:
            try:
                if isinstance(req, Loop):
                    out = run_loop(device, req, deadline)
                else:
                    out = ioctl(req.code, req.input, req.output_size)
            except errors.ScardioError as exc:
                if _given_up(exc):
                    raise
                req = steps.throw(exc)
            else:
                req = steps.send(out)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]
    finally:
        steps.close()


def _given_up(exc: errors.ScardioError) -> bool:
    """Whether `exc` is a wait given up (a TimeoutError of status
    STATUS_PENDING): not the driver's answer, so not the sequence's to see."""
    return exc.status == STATUS_PENDING and isinstance(exc, errors.TimeoutError)


def _bounded(on_lane: Callable[..., bytes], deadline: float) -> Callable[[int, bytes, int], bytes]:
    """ioctl(code, input, output_size), each on the lane until `deadline`."""
    def ioctl(code: int, input: bytes, output_size: int) -> bytes:
        left = deadline - _monotonic()
        if left <= 0:
            raise errors.TimeoutError(f"{ioctl_name(code)}: timed out before it started",
                                      ioctl=code, status=STATUS_PENDING)
        return on_lane(code, input, output_size, left)
    return ioctl


def _sequence_on_lane(device: Any, steps: "LoopSteps[T]", deadline: float) -> T:
    """One processor: each Loop the core runs goes to the lane by itself
    (from here, bounded), and the rest of the sequence as one job."""
    try:
        req = next(steps)
        while isinstance(req, Loop):
            try:
                out = run_loop(device, req, deadline)
            except errors.ScardioError as exc:
                if _given_up(exc):
                    raise
                req = steps.throw(exc)
            else:
                req = steps.send(out)
    except StopIteration as stop:
        steps.close()
        return stop.value  # type: ignore[no-any-return]
    except BaseException:
        steps.close()
        raise
    left = deadline - _monotonic()
    if left <= 0:
        steps.close()
        raise errors.TimeoutError("timed out before the first IOCTL started")
    job = _LaneJob(device, steps, req)
    try:
        return device.call_on_lane(job, left)  # type: ignore[no-any-return]
    except errors.TimeoutError as exc:
        job.abandoned = True
        if exc is job.raised:  # the sequence's own (its step or time bound)
            raise
        code = job.code
        what = ioctl_name(code) if code is not None else "the sequence"
        raise errors.TimeoutError(f"{what}: no answer from the driver within the timeout "
                                  "(given up)", ioctl=code) from exc
    except BaseException:
        job.abandoned = True  # Ctrl-C, a closed device: the sequence stops too
        raise


class _Abandoned(BaseException):
    """Its caller gave up: the lane job stops before its next IOCTL."""


class _LaneJob:
    """A sequence driven on the I/O lane (:func:`_drive`, from a request it
    already yielded), stopping before the next IOCTL once its caller has
    given up."""

    __slots__ = ("device", "steps", "first", "abandoned", "raised", "code")

    def __init__(self, device: Any, steps: "LoopSteps[Any]", first: "Request | Loop") -> None:
        self.device = device
        self.steps = steps
        self.first = first
        self.abandoned = False
        self.raised: Optional[BaseException] = None
        self.code: Optional[int] = None  # the IOCTL in progress, for the timeout's message

    def _ioctl(self, code: int, input: bytes, output_size: int) -> bytes:
        if self.abandoned:
            raise _Abandoned
        self.code = code
        return self.device.ioctl(code, input, output_size)  # type: ignore[no-any-return]

    def __call__(self) -> Any:
        device = self.device
        if self.abandoned:
            self.steps.close()
            return None
        try:
            return _drive(self.steps, self._ioctl, device, None, self.first)
        except _Abandoned:
            return None
        except BaseException as exc:
            self.raised = exc
            raise


def _ioctl_until(device: Any, deadline: float, code: int, input: bytes,
                 output_size: int) -> bytes:
    """One IOCTL overlapped and waited for at most the time left, then
    cancelled (for devices that offer submit() but no call_on_lane())."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise errors.TimeoutError(f"{ioctl_name(code)}: timed out before it started",
                                  ioctl=code)
    op = device.submit(code, input, output_size)
    try:
        return op.wait(left)  # type: ignore[no-any-return]
    except errors.TimeoutError:
        op.cancel()
        try:
            op.wait(1.0)  # let the driver let go before the caller goes on
        except errors.ScardioError:
            pass
        raise errors.TimeoutError(f"{ioctl_name(code)}: no answer from the driver "
                                  "within the timeout (cancelled)", ioctl=code) from None
