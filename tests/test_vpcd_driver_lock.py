"""vpcd does not declare itself thread safe: like pcscd, the core then makes
one call at a time into it across all its readers (its two slots share a
process-wide slot table), while the thread-safe sim is called concurrently."""

from __future__ import annotations

import os
import struct
import time

import pytest

import scardio.sim
from scardio import IOCTL, Device, State, errors
from scardio.sim import EntryPoint, Fault, SimControl

from conftest import VPCD_LIBRARY
from helpers_reader import free_port_pair


def state(dev):
    return State(struct.unpack("<I", dev.ioctl(IOCTL.GET_STATE, b"", 4))[0])


def wait_state(dev, want, timeout=5.0):
    deadline = time.monotonic() + timeout
    while state(dev) != want:
        assert time.monotonic() < deadline, f"never reached {want!r}"
        time.sleep(0.005)


def test_vpcd_slots_take_turns_in_the_driver():
    if not os.path.exists(VPCD_LIBRARY):
        pytest.skip("vsmartcard-vpcd is not installed")
    from vpcd_card import VirtualCard
    port = free_port_pair()
    slot0 = Device.open_ifd(VPCD_LIBRARY, f"/dev/null:{port:#x}", 0, close_timeout_ms=300)
    slot1 = Device.open_ifd(VPCD_LIBRARY, f"/dev/null:{port:#x}", 1, close_timeout_ms=300)
    card0, card1 = VirtualCard(port=port), VirtualCard(port=port + 1)
    try:
        card0.insert(timeout=5)
        card1.insert(timeout=5)
        wait_state(slot0, State.SWALLOWED)
        wait_state(slot1, State.SWALLOWED)
        # Slot 0's card goes silent: the driver blocks inside IFDHICCPresence.
        card0.stop_answering()
        stuck = slot0.submit(IOCTL.GET_STATE, b"", 4)
        time.sleep(0.1)
        assert not stuck.done()
        # Slot 1 has to wait for the driver, as under pcscd.
        other = slot1.submit(IOCTL.GET_STATE, b"", 4)
        with pytest.raises(errors.TimeoutError):
            other.wait(0.2)
        card0.remove()  # the driver's read fails, it lets go
        assert struct.unpack("<I", other.wait(5))[0] == State.SWALLOWED
        stuck.wait(5)
        wait_state(slot0, State.ABSENT)
    finally:
        card0.close()
        card1.close()
        slot0.close()
        slot1.close()


def test_thread_safe_sim_readers_are_called_concurrently():
    a, b = scardio.sim.open_device(0x7A01), scardio.sim.open_device(0x7A02)
    try:
        sa = SimControl(a)
        sa.insert()
        SimControl(b).insert()
        sa.fault(EntryPoint.ICC_PRESENCE, Fault.BLOCK)
        held = a.submit(IOCTL.GET_STATE, b"", 4)
        time.sleep(0.05)
        assert not held.done()
        # Reader b does not wait for reader a's call.
        assert state(b) == State.SWALLOWED
        sa.stop()
        held.wait(2)
    finally:
        a.close()
        b.close()
