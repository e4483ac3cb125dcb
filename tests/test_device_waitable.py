"""Device.waitable() and Device.wake(): the completion queue's waitable as
the binding hands it to event loops and waiter threads.  Here (POSIX) it is a
descriptor; the Windows event behind it is tested in C under Wine
(tests/win32/test_win32_ifd.c, shared_queue)."""

from __future__ import annotations

import select
import threading
import time

import pytest

from platform_support import WINDOWS, completion_fd
import scardio.sim
from scardio import IOCTL, errors


def readable(fd: int, timeout: float = 0.0) -> bool:
    return select.select([fd], [], [], timeout)[0] == [fd]


def harvest_count(device, n: int, timeout: float = 2.0) -> list:
    """Harvest until `n` completions came (bounded): an operation is done a
    moment before its record reaches the queue, so a harvest right after
    wait() may come before the record."""
    deadline = time.monotonic() + timeout
    got = device.harvest()
    while len(got) < n and time.monotonic() < deadline:
        got += device.harvest(0.05)
    return got


@completion_fd
def test_waitable_is_the_completion_descriptor(sim_device):
    assert sim_device.waitable() == sim_device.fileno() >= 0


@completion_fd
def test_waitable_is_signalled_exactly_while_completions_wait(sim_device, sim):
    w = sim_device.waitable()
    a = sim_device.submit(IOCTL.IS_PRESENT)
    assert not a.done() and not readable(w, 0.05), "a pending request signals nothing"
    sim.insert()
    assert readable(w, 2)
    b = sim_device.submit(IOCTL.GET_STATE, b"", 4)
    b.wait(2)
    assert readable(w)
    assert harvest_count(sim_device, 2) == [a, b]
    assert not readable(w)


@completion_fd
def test_wake_signals_until_the_next_harvest(sim_device):
    w = sim_device.waitable()
    sim_device.wake()
    assert readable(w)
    assert sim_device.harvest() == []
    assert not readable(w)


@completion_fd
def test_wake_hides_no_completion(sim_device, sim):
    op = sim_device.submit(IOCTL.IS_PRESENT)
    sim.insert()
    op.wait(2)
    sim_device.wake()
    assert harvest_count(sim_device, 1) == [op]
    assert not readable(sim_device.waitable())


@completion_fd
def test_wake_releases_a_thread_blocked_on_the_waitable(sim_device):
    w = sim_device.waitable()
    seen: list[bool] = []
    waiter = threading.Thread(target=lambda: seen.append(readable(w, 10)))
    waiter.start()
    sim_device.wake()
    waiter.join(5)
    assert seen == [True]
    assert sim_device.harvest() == []


def test_closed_device_has_no_waitable():
    dev = scardio.sim.open_device(0x7101)
    dev.close()
    with pytest.raises(errors.ClosedError):
        dev.waitable()
    with pytest.raises(errors.ClosedError):
        dev.wake()


@pytest.mark.skipif(not WINDOWS, reason="the queue's event HANDLE exists on Windows only")
def test_waitable_is_an_event_handle_on_windows(sim_device):
    assert sim_device.fileno() == -1
    assert sim_device.waitable() > 0
