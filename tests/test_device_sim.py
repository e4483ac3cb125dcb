"""Device behaviour that needs the simulated reader's hooks: vendor controls,
driver faults, forced states, many readers, the completion descriptor."""

from __future__ import annotations

import select
import struct
import threading
import time

import pytest

from platform_support import completion_fd
import scardio.sim
from scardio import IOCTL, Protocol, State, errors
from scardio.constants import vendor_ctl_pcsc, vendor_ctl_win
from scardio.sim import ATR_T0, ATR_T1, EntryPoint, Fault, SimControl

IFD_COMMUNICATION_ERROR = 612
IFD_RESPONSE_TIMEOUT = 613
IFD_ICC_NOT_PRESENT = 616
IFD_NO_SUCH_DEVICE = 617


def dword(v):
    return struct.pack("<I", v)


def state(dev):
    return State(struct.unpack("<I", dev.ioctl(IOCTL.GET_STATE, b"", 4))[0])


def connect(dev, mask=Protocol.T0 | Protocol.T1):
    dev.ioctl(IOCTL.POWER, dword(1), 33)
    return struct.unpack("<I", dev.ioctl(IOCTL.SET_PROTOCOL, dword(mask), 4))[0]


def transmit(dev, apdu, proto=2, size=300):
    return dev.ioctl(IOCTL.TRANSMIT, struct.pack("<II", proto, 8) + apdu, size)[8:]


def test_vendor_codes_in_both_styles_reach_the_driver(sim_device):
    for code in (vendor_ctl_pcsc(3500), vendor_ctl_win(3500)):
        sim_device.ioctl(code, b"")
        assert state(sim_device) == State.SWALLOWED
        sim_device.ioctl(code - 3500 + 3501 if code > 0x42000000 else vendor_ctl_win(3501))
        assert state(sim_device) == State.ABSENT


def test_unknown_vendor_code_not_supported(sim_device):
    with pytest.raises(errors.NotSupportedError):
        sim_device.ioctl(vendor_ctl_pcsc(3999))


def test_t0_card_selects_t0(sim_device, sim):
    sim.insert(t0=True)
    assert sim_device.ioctl(IOCTL.POWER, dword(1), 33) == ATR_T0
    assert struct.unpack("<I", sim_device.ioctl(IOCTL.SET_PROTOCOL, dword(3), 4))[0] == 1
    sim_device.ioctl(IOCTL.POWER, dword(2), 33)
    with pytest.raises(errors.NotSupportedError):
        sim_device.ioctl(IOCTL.SET_PROTOCOL, dword(Protocol.T1), 4)
    # T=0: a case-4 command answers 61xx and GET RESPONSE fetches the data
    connect(sim_device, Protocol.T0)
    assert transmit(sim_device, bytes([0x80, 0xEE, 0, 0, 2, 0xAA, 0xBB, 4]), proto=1) == b"\x61\x04"
    assert transmit(sim_device, bytes([0x00, 0xC0, 0, 0, 4]), proto=1) == \
        b"\xAA\xBB\xAA\xBB\x90\x00"
    assert ATR_T1 != ATR_T0


def test_counters_and_reset_counters(sim_device, sim):
    sim.insert()
    connect(sim_device)
    c = sim.counters()
    assert c.present and c.powered and c.power_ups == 1 and c.insertions == 1
    assert c.protocol == 2 and c.calls[EntryPoint.POWER_ICC] >= 1
    sim.reset_counters()
    assert sim.counters().power_ups == 0


def test_latency_is_applied(sim_device, sim):
    sim.insert()
    connect(sim_device)
    sim.set_latency(20000)
    t = time.perf_counter()
    transmit(sim_device, bytes([0x80, 0xEE, 0, 0, 1]))
    assert time.perf_counter() - t >= 0.019
    sim.set_latency(0)
    assert sim.counters().latency_us == 0


def test_swallow_is_a_no_op_on_a_card_that_is_in(sim_device, sim):
    # An IFD handler has no card mechanism: a card that is in is SWALLOWED.
    with pytest.raises(errors.NoCardError):
        sim_device.ioctl(IOCTL.SWALLOW)
    sim.insert()
    assert state(sim_device) == State.SWALLOWED
    sim_device.ioctl(IOCTL.SWALLOW)
    assert state(sim_device) == State.SWALLOWED


@pytest.mark.parametrize("entry,code,exc", [
    (EntryPoint.POWER_ICC, IFD_COMMUNICATION_ERROR, errors.DriverError),
    (EntryPoint.POWER_ICC, IFD_RESPONSE_TIMEOUT, errors.TimeoutError),
    (EntryPoint.POWER_ICC, IFD_ICC_NOT_PRESENT, errors.NoCardError),
    (EntryPoint.TRANSMIT, IFD_COMMUNICATION_ERROR, errors.DriverError),
    (EntryPoint.TRANSMIT, IFD_NO_SUCH_DEVICE, errors.DeviceGoneError),
    (EntryPoint.ICC_PRESENCE, IFD_COMMUNICATION_ERROR, errors.DriverError),
    (EntryPoint.SET_PROTOCOL, 605, errors.DriverError),
    (EntryPoint.GET_CAPABILITIES, IFD_COMMUNICATION_ERROR, errors.DriverError),
])
def test_driver_return_codes_become_typed_errors(sim_device, sim, entry, code, exc):
    sim.insert()
    if entry in (EntryPoint.TRANSMIT,):
        connect(sim_device)
    if entry is EntryPoint.SET_PROTOCOL:
        sim_device.ioctl(IOCTL.POWER, dword(1), 33)
    sim.fault(entry, Fault.RETURN, code)
    with pytest.raises(exc) as info:
        if entry is EntryPoint.POWER_ICC:
            sim_device.ioctl(IOCTL.POWER, dword(1), 33)
        elif entry is EntryPoint.TRANSMIT:
            transmit(sim_device, bytes([0x80, 0xEE, 0, 0, 1]))
        elif entry is EntryPoint.ICC_PRESENCE:
            state(sim_device)
        elif entry is EntryPoint.SET_PROTOCOL:
            sim_device.ioctl(IOCTL.SET_PROTOCOL, dword(Protocol.T1), 4)
        else:
            sim_device.ioctl(IOCTL.GET_ATTRIBUTE, dword(0x00010100), 64)
    assert info.value.driver_code == code
    # the reader works again
    if state(sim_device) == State.ABSENT:
        sim.insert()
    if state(sim_device) != State.SPECIFIC:
        connect(sim_device)
    assert transmit(sim_device, bytes([0x80, 0xEE, 0, 0, 1]))[-2:] == b"\x90\x00"


def test_overlong_transmit_length_is_refused(sim_device, sim):
    sim.insert()
    connect(sim_device)
    sim.fault(EntryPoint.TRANSMIT, Fault.OVERLONG_LENGTH, 1000)
    with pytest.raises(errors.DriverDataError):
        transmit(sim_device, bytes([0x80, 0xEE, 0, 0, 1]))
    assert transmit(sim_device, bytes([0x80, 0xEE, 0, 0, 1]))[-2:] == b"\x90\x00"


def test_long_atr_is_refused_and_card_recovers(sim_device, sim):
    sim.insert()
    sim.fault(EntryPoint.POWER_ICC, Fault.LONG_ATR, 40)
    with pytest.raises(errors.DriverDataError):
        sim_device.ioctl(IOCTL.POWER, dword(1), 64)
    assert state(sim_device) == State.SWALLOWED
    assert connect(sim_device) == 2


def test_card_removed_during_transmit(sim_device, sim):
    sim.insert()
    connect(sim_device)
    sim.fault(EntryPoint.TRANSMIT, Fault.REMOVE_CARD)
    with pytest.raises(errors.NoCardError):
        transmit(sim_device, bytes([0x80, 0xEE, 0, 0, 1]))
    assert state(sim_device) == State.ABSENT
    sim.insert()
    connect(sim_device)


def test_blocked_transmit_released_by_stop(sim_device, sim):
    sim.insert()
    connect(sim_device)
    sim.fault(EntryPoint.TRANSMIT, Fault.BLOCK)
    op = sim_device.submit(IOCTL.TRANSMIT, struct.pack("<II", 2, 8) + bytes([0x80, 0xEE, 0, 0, 1]),
                           300)
    time.sleep(0.05)
    assert not op.done()
    sim.stop()  # gets through although the blocked call holds the reader lock
    op.wait(2)
    assert transmit(sim_device, bytes([0x80, 0xEE, 0, 0, 1]))[-2:] == b"\x90\x00"


def test_close_abandons_a_call_stuck_in_the_driver_within_bound():
    dev = scardio.sim.open_device(0x7001, close_timeout_ms=300)
    sim = SimControl(dev)
    sim.insert()
    connect(dev)
    sim.fault(EntryPoint.TRANSMIT, Fault.BLOCK)
    op = dev.submit(IOCTL.TRANSMIT, struct.pack("<II", 2, 8) + bytes([0x80, 0xEE, 0, 0, 1]), 300)
    time.sleep(0.05)
    t = time.monotonic()
    dev.close()
    assert time.monotonic() - t < 1.0
    # The call is abandoned inside the driver (it stays blocked for the
    # rest of this process, as a hung real driver would); its operation is
    # completed as cancelled so that nobody waits on it forever.
    assert op.done()
    with pytest.raises(errors.CancelledError):
        op.result()
    del op


def test_same_lun_twice_is_refused(sim_device):
    with pytest.raises(errors.ReaderInUseError):
        scardio.sim.open_device(sim_device.lun)


def test_many_readers(tmp_path):
    devs = [scardio.sim.open_device(0x10000 + i) for i in range(256)]
    try:
        ops = [d.submit(IOCTL.IS_PRESENT) for d in devs]
        for i in (0, 100, 255):
            SimControl(devs[i]).insert()
            ops[i].wait(2)
        assert sum(op.done() for op in ops) == 3
    finally:
        t = time.monotonic()
        for d in devs:
            d.close()
        assert time.monotonic() - t < 5


@completion_fd
def test_completion_fd_is_readable_while_completions_wait(sim_device, sim):
    fd = sim_device.fileno()
    assert select.select([fd], [], [], 0)[0] == []
    op = sim_device.submit(IOCTL.IS_PRESENT)
    sim.insert()
    assert select.select([fd], [], [], 2)[0] == [fd]
    assert sim_device.harvest() == [op]
    assert select.select([fd], [], [], 0)[0] == []


@completion_fd
def test_dropped_operation_is_not_harvested(sim_device, sim):
    op = sim_device.submit(IOCTL.GET_STATE, b"", 4)
    op.wait(2)
    del op
    assert sim_device.harvest() == []
    assert select.select([sim_device.fileno()], [], [], 0)[0] == []


def test_operation_outlives_closed_device(sim):
    dev = scardio.sim.open_device(0x7003)
    op = dev.submit(IOCTL.GET_STATE, b"", 4)
    op.wait(2)
    dev.close()
    del dev
    assert len(op.result()) == 4


def test_ioctl_accepts_buffer_protocol_inputs(sim_device, sim):
    sim.insert()
    connect(sim_device)
    apdu = struct.pack("<II", 2, 8) + bytes([0x80, 0xEE, 0, 0, 3])
    for buf in (bytearray(apdu), memoryview(apdu)):
        assert sim_device.ioctl(IOCTL.TRANSMIT, buf, 300)[-2:] == b"\x90\x00"
    with pytest.raises(TypeError):
        sim_device.ioctl(IOCTL.TRANSMIT, "not bytes", 300)
    with pytest.raises(ValueError):
        sim_device.ioctl(IOCTL.GET_STATE, b"", -1)


def test_largest_response(sim_device, sim):
    sim.insert()
    connect(sim_device)
    resp = transmit(sim_device, bytes([0x80, 0xEE, 0, 0, 0, 0xFF, 0xFF]), size=8 + 65537)
    assert len(resp) == 65535 + 2 and resp[-2:] == b"\x90\x00"


def test_threads_transmit_concurrently(sim_device, sim):
    sim.insert()
    connect(sim_device)
    bad = []

    def worker(n):
        for _ in range(200):
            r = transmit(sim_device, bytes([0x80, 0xEE, 0, 0, 2, n, n, 2]))
            if r != bytes([n, n, 0x90, 0x00]):
                bad.append(r)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(1, 9)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert not bad


def test_every_card_event_is_reported_once_however_fast(sim_device, sim):
    """Card events that happen while nobody waits are not lost: each
    completion consumes one (the sim counts events for the core)."""
    cycles = 100
    for _ in range(cycles):
        sim.insert()
        sim.remove()
    seen = []
    for _ in range(cycles):
        sim_device.submit(IOCTL.IS_PRESENT).wait(2)
        seen.append("in")
        sim_device.submit(IOCTL.IS_ABSENT).wait(2)
        seen.append("out")
    assert seen == ["in", "out"] * cycles
    op = sim_device.submit(IOCTL.IS_PRESENT)
    with pytest.raises(errors.TimeoutError):
        op.wait(0.05)  # nothing left to report
    op.cancel()
    c = sim.counters()
    assert c.insertions == c.removals == cycles


def test_quick_swap_is_a_departure_then_an_arrival(sim_device, sim):
    sim.insert()
    sim_device.submit(IOCTL.IS_PRESENT).wait(2)
    absent = sim_device.submit(IOCTL.IS_ABSENT)
    time.sleep(0.02)
    sim.insert(t0=True)  # swap cards without the reader ever seeing "empty"
    absent.wait(2)
    sim_device.submit(IOCTL.IS_PRESENT).wait(2)
    assert state(sim_device) == State.SWALLOWED


def test_swapped_card_is_a_new_unpowered_card(sim_device, sim):
    sim.insert()
    connect(sim_device)
    sim.remove()
    sim.insert()  # no presence check in between
    with pytest.raises(errors.NoCardError):
        transmit(sim_device, bytes([0x80, 0xEE, 0, 0, 1]))
    assert state(sim_device) == State.SWALLOWED
    assert connect(sim_device) == 2
    assert transmit(sim_device, bytes([0x80, 0xEE, 0, 0, 1]))[-2:] == b"\x90\x00"
