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
from ._core import STATUS_PENDING
from .constants import ioctl_name
from .sequences import Steps, T, replayed
from .sequences.connect import Connected, connect_steps, connected, set_protocol_request

__all__ = ["run_sync", "run_connect"]

_monotonic = time.monotonic


def run_sync(device: Any, steps: "Steps[T]", *, deadline: Optional[float] = None) -> T:
    """Drive `steps` with blocking IOCTLs on `device`.  With a `deadline`
    (time.monotonic()), give up at the deadline with TimeoutError even if
    the driver never answers (see the module doc)."""
    if deadline is None:
        return _drive(device.ioctl, steps)
    lane_apart = getattr(device, "lane_apart", None)
    if lane_apart is None:  # a device without lanes of its own
        return _drive(lambda code, input, size: _ioctl_until(device, deadline, code,
                                                             input, size), steps)
    if lane_apart():
        return _drive_until(device.ioctl_on_lane, steps, deadline)
    return _sequence_on_lane(device, steps, deadline)


def run_connect(device: Any, protocols: int, *, max_steps: int,
                deadline: Optional[float] = None, share: Optional[int] = None) -> Connected:
    """The connect loop (:func:`scardio.sequences.connect.connect_steps`)
    on `device`, bounded by `deadline` as :func:`run_sync` bounds it.

    A device of the core runs the loop itself as one operation
    (``Device.connect_loop``: in the calling thread, or with a deadline as
    one job on the I/O lane, a single hand-off for all its IOCTLs) along
    the ordinary answers; where it stops, the sequence replays what it did
    and takes over, so every unusual answer means what the sequence says.
    Devices without it (a tracing proxy, a model), and a connect that asks
    for a share mode, run the sequence alone."""
    loop = getattr(device, "connect_loop", None) if share is None else None
    if loop is not None and type(max_steps) is int and 0 <= max_steps <= 0xFFFFFFFF:
        protocols = int(protocols)  # its argument errors first, as the sequence's
        set_protocol_request(protocols)
        if deadline is None:
            done, got, trail = loop(protocols, max_steps)
        else:
            left = deadline - _monotonic()
            if left <= 0:
                raise errors.TimeoutError("timed out before the first IOCTL started")
            done, got, trail = loop(protocols, max_steps, left)
        if done:
            return connected(got, trail)
        steps = replayed(connect_steps(protocols, max_steps=max_steps, deadline=deadline), got)
    else:
        steps = connect_steps(protocols, max_steps=max_steps, deadline=deadline, share=share)
    return run_sync(device, steps, deadline=deadline)


def _drive(ioctl: Callable[[int, bytes, int], bytes], steps: "Steps[T]") -> T:
    try:
        req = next(steps)
        while True:
            try:
                out = ioctl(req.code, req.input, req.output_size)
            except errors.ScardioError as exc:
                req = steps.throw(exc)
            else:
                req = steps.send(out)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]
    finally:
        steps.close()


def _drive_until(on_lane: Callable[..., bytes], steps: "Steps[T]", deadline: float) -> T:
    """:func:`_drive` with each IOCTL on the lane, bounded by `deadline`."""
    try:
        req = next(steps)
        while True:
            left = deadline - _monotonic()
            if left <= 0:
                raise errors.TimeoutError(f"{ioctl_name(req.code)}: timed out before it "
                                          "started", ioctl=req.code)
            try:
                out = on_lane(req.code, req.input, req.output_size, left)
            except errors.TimeoutError as exc:
                if exc.status == STATUS_PENDING:  # given up waiting: not the driver's answer
                    raise
                req = steps.throw(exc)
            except errors.ScardioError as exc:
                req = steps.throw(exc)
            else:
                req = steps.send(out)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]
    finally:
        steps.close()


def _sequence_on_lane(device: Any, steps: "Steps[T]", deadline: float) -> T:
    """The whole sequence as one job on the lane, waited for until `deadline`."""
    left = deadline - _monotonic()
    if left <= 0:
        steps.close()
        raise errors.TimeoutError("timed out before the first IOCTL started")
    job = _LaneJob(device.ioctl, steps)
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


class _LaneJob:
    """A sequence driven on the I/O lane: :func:`_drive`, stopping before
    the next IOCTL once its caller has given up."""

    __slots__ = ("ioctl", "steps", "abandoned", "raised", "code")

    def __init__(self, ioctl: Callable[[int, bytes, int], bytes], steps: "Steps[Any]") -> None:
        self.ioctl = ioctl
        self.steps = steps
        self.abandoned = False
        self.raised: Optional[BaseException] = None
        self.code: Optional[int] = None  # the IOCTL in progress, for the timeout's message

    def __call__(self) -> Any:
        ioctl, steps = self.ioctl, self.steps
        try:
            if self.abandoned:
                return None
            req = next(steps)
            while not self.abandoned:
                self.code = req.code
                try:
                    out = ioctl(req.code, req.input, req.output_size)
                except errors.ScardioError as exc:
                    req = steps.throw(exc)
                else:
                    req = steps.send(out)
            return None
        except StopIteration as stop:
            return stop.value
        except BaseException as exc:
            self.raised = exc
            raise
        finally:
            steps.close()


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
