"""The IOCTL contract (the IOCTLs of native/scio.h) through Device, run against the
simulated reader and against Debian's vpcd driver with the test card: every
IOCTL, its success and error paths, and the reader still usable afterwards."""

from __future__ import annotations

import struct
import time

import pytest

from scardio import IOCTL, Attr, Protocol, State, errors
from scardio.constants import ctl_code

T1_ATR = bytes.fromhex("3BF81300008131FE457363617264696F31B0")
SELECT_AID = bytes.fromhex("00A4040008F0736361726469 6F".replace(" ", ""))


def dword(v: int) -> bytes:
    return struct.pack("<I", v)


class Harness:
    """One backend: a device plus a way to insert and remove the card."""

    def __init__(self, device, insert, remove, name):
        self.dev = device
        self.insert = insert
        self.remove = remove
        self.name = name

    def state(self) -> State:
        return State(struct.unpack("<I", self.dev.ioctl(IOCTL.GET_STATE, b"", 4))[0])

    def power(self, action: int = 1) -> bytes:
        return self.dev.ioctl(IOCTL.POWER, dword(action), 33)

    def set_protocol(self, mask: int) -> int:
        return struct.unpack("<I", self.dev.ioctl(IOCTL.SET_PROTOCOL, dword(mask), 4))[0]

    def transmit(self, apdu: bytes, proto: int = 2, output_size: int = 300) -> bytes:
        out = self.dev.ioctl(IOCTL.TRANSMIT, struct.pack("<II", proto, 8) + apdu,
                             output_size)
        assert out[:8] == struct.pack("<II", proto, 8)
        return out[8:]

    def connect(self) -> None:
        self.power(1)
        assert self.set_protocol(Protocol.T0 | Protocol.T1) == Protocol.T1

    def usable(self) -> None:
        """The reader still works end to end."""
        if self.state() == State.ABSENT:
            self.insert()
        if self.state() != State.SPECIFIC:
            self.connect()
        assert self.transmit(SELECT_AID)[-2:] == b"\x90\x00"


@pytest.fixture(params=["sim", "vpcd"])
def rd(request):
    if request.param == "sim":
        dev = request.getfixturevalue("sim_device")
        sim = request.getfixturevalue("sim")
        yield Harness(dev, sim.insert, sim.remove, "sim")
    else:
        dev, card = request.getfixturevalue("vpcd")

        def insert():
            card.insert(timeout=5)
            # vpcd sees the card on its next presence check
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                if struct.unpack("<I", dev.ioctl(IOCTL.GET_STATE, b"", 4))[0] != State.ABSENT:
                    return
                time.sleep(0.005)
            raise AssertionError("vpcd never saw the card")

        yield Harness(dev, insert, card.remove, "vpcd")


# ---- start-up: attributes ------------------------------------------------

def test_get_state_without_card_is_absent(rd):
    assert rd.state() == State.ABSENT


def test_device_unit_and_characteristics_are_dwords(rd):
    unit = rd.dev.ioctl(IOCTL.GET_ATTRIBUTE, dword(Attr.DEVICE_UNIT), 4)
    chars = rd.dev.ioctl(IOCTL.GET_ATTRIBUTE, dword(Attr.CHARACTERISTICS), 4)
    assert len(unit) == 4 and len(chars) == 4


def test_vendor_name_or_not_supported(rd):
    if rd.name == "sim":
        assert rd.dev.ioctl(IOCTL.GET_ATTRIBUTE, dword(Attr.VENDOR_NAME), 64) == b"scardio"
        assert rd.dev.ioctl(IOCTL.GET_ATTRIBUTE, dword(Attr.VENDOR_IFD_TYPE), 64) == \
            b"Simulated Reader"
    else:
        with pytest.raises(errors.NotSupportedError):
            rd.dev.ioctl(IOCTL.GET_ATTRIBUTE, dword(Attr.VENDOR_NAME), 64)
    rd.usable()


def test_unknown_attribute_not_supported(rd):
    with pytest.raises(errors.NotSupportedError):
        rd.dev.ioctl(IOCTL.GET_ATTRIBUTE, dword(0x7FFF1234), 64)
    rd.usable()


# ---- connect sequence --------------------------------------------------------

def test_full_connect_sequence(rd):
    rd.insert()
    assert rd.state() == State.SWALLOWED
    atr = rd.power(1)
    assert atr == T1_ATR
    assert rd.state() == State.NEGOTIABLE
    assert rd.dev.ioctl(IOCTL.GET_ATTRIBUTE, dword(Attr.ATR_STRING), 33) == T1_ATR
    assert rd.set_protocol(Protocol.T0 | Protocol.T1) == Protocol.T1
    assert rd.state() == State.SPECIFIC
    assert rd.dev.ioctl(IOCTL.GET_ATTRIBUTE, dword(Attr.CURRENT_PROTOCOL_TYPE), 4) == dword(2)
    assert rd.transmit(SELECT_AID) == b"\x90\x00"
    # SET_PROTOCOL again in SPECIFIC confirms the protocol in use
    assert rd.set_protocol(Protocol.T1) == Protocol.T1


def test_warm_reset_returns_to_negotiable(rd):
    rd.insert()
    rd.connect()
    assert rd.power(2) == T1_ATR
    assert rd.state() == State.NEGOTIABLE
    rd.usable()


def test_power_down_leaves_card_swallowed(rd):
    rd.insert()
    rd.connect()
    assert rd.dev.ioctl(IOCTL.POWER, dword(0), 0) == b""
    assert rd.state() == State.SWALLOWED
    # an unpowered card has no ATR
    with pytest.raises(errors.InvalidStateError):
        rd.dev.ioctl(IOCTL.GET_ATTRIBUTE, dword(Attr.ATR_STRING), 33)
    rd.usable()


@pytest.mark.parametrize("size", [0, 1, 255, 256])
def test_transmit_short_echo(rd, size):
    rd.insert()
    rd.connect()
    le = size & 0xFF
    resp = rd.transmit(bytes([0x80, 0xEE, 0, 0, le]))
    want = 256 if size == 0 else size
    assert len(resp) == want + 2
    assert resp[:want] == bytes(i & 0xFF for i in range(want))
    assert resp[-2:] == b"\x90\x00"


def test_transmit_extended_4k(rd):
    rd.insert()
    rd.connect()
    data = bytes(range(256)) * 16
    apdu = bytes([0x80, 0xEE, 0, 0, 0]) + struct.pack(">H", len(data)) + data + \
        struct.pack(">H", len(data))
    resp = rd.transmit(apdu, output_size=8 + len(data) + 2)
    assert resp == data + b"\x90\x00"


def test_get_last_error_reports_last_failure(rd):
    with pytest.raises(errors.NoCardError):
        rd.power(1)
    last = rd.dev.ioctl(IOCTL.GET_LAST_ERROR, b"", 4)
    assert struct.unpack("<I", last)[0] == errors.NoCardError.status


# ---- error paths, each followed by a working reader ---------------------------

def test_power_without_card(rd):
    with pytest.raises(errors.NoCardError):
        rd.power(1)
    rd.usable()


def test_set_protocol_before_reset_is_invalid_state(rd):
    rd.insert()
    with pytest.raises(errors.InvalidStateError):
        rd.set_protocol(Protocol.T1)
    rd.usable()


def test_set_protocol_raw_not_supported(rd):
    rd.insert()
    rd.power(1)
    with pytest.raises(errors.NotSupportedError):
        rd.set_protocol(Protocol.RAW)
    rd.usable()


def test_set_protocol_t0_on_t1_only_card(rd):
    rd.insert()
    rd.power(1)
    with pytest.raises(errors.NotSupportedError):
        rd.set_protocol(Protocol.T0)
    rd.usable()


def test_transmit_before_protocol_is_invalid_state(rd):
    rd.insert()
    rd.power(1)
    with pytest.raises(errors.InvalidStateError):
        rd.transmit(SELECT_AID)
    rd.usable()


def test_transmit_with_wrong_protocol(rd):
    rd.insert()
    rd.connect()
    with pytest.raises(errors.InvalidStateError):
        rd.transmit(SELECT_AID, proto=1)
    rd.usable()


@pytest.mark.parametrize("payload", [b"", b"\x02\x00\x00\x00", struct.pack("<II", 2, 4) + b"\x00",
                                     struct.pack("<II", 2, 99) + b"\x00\xa4\x00\x00",
                                     struct.pack("<II", 2, 8)])
def test_transmit_malformed_request(rd, payload):
    rd.insert()
    rd.connect()
    with pytest.raises(errors.InvalidParameterError):
        rd.dev.ioctl(IOCTL.TRANSMIT, payload, 300)
    rd.usable()


def test_transmit_output_too_small(rd):
    rd.insert()
    rd.connect()
    with pytest.raises(errors.BufferTooSmallError):
        rd.transmit(bytes([0x80, 0xEE, 0, 0, 0x10]), output_size=8 + 4)
    with pytest.raises(errors.BufferTooSmallError):
        rd.dev.ioctl(IOCTL.TRANSMIT, struct.pack("<II", 2, 8) + SELECT_AID, 9)
    rd.usable()


def test_power_output_too_small(rd):
    rd.insert()
    with pytest.raises(errors.BufferTooSmallError):
        rd.dev.ioctl(IOCTL.POWER, dword(1), 4)
    rd.usable()


def test_get_state_output_too_small(rd):
    with pytest.raises(errors.BufferTooSmallError):
        rd.dev.ioctl(IOCTL.GET_STATE, b"", 3)
    rd.usable()


def test_oversized_input(rd):
    from scardio._core import MAX_INPUT
    rd.insert()
    rd.connect()
    with pytest.raises(errors.InputTooLargeError):
        rd.dev.ioctl(IOCTL.TRANSMIT, b"\x02\x00\x00\x00\x08\x00\x00\x00" + bytes(MAX_INPUT), 300)
    with pytest.raises(errors.InputTooLargeError):
        rd.dev.submit(IOCTL.TRANSMIT, bytes(MAX_INPUT + 1), 300)
    rd.usable()


def test_unknown_ioctl(rd):
    with pytest.raises(errors.InvalidRequestError):
        rd.dev.ioctl(ctl_code(99), b"", 4)
    with pytest.raises(errors.InvalidRequestError):
        rd.dev.ioctl(0x12345678, b"", 4)
    rd.usable()


@pytest.mark.parametrize("code", [IOCTL.POWER, IOCTL.SET_PROTOCOL, IOCTL.GET_ATTRIBUTE,
                                  IOCTL.SET_ATTRIBUTE])
def test_missing_dword_input(rd, code):
    with pytest.raises(errors.InvalidParameterError):
        rd.dev.ioctl(code, b"\x01", 64)
    rd.usable()


def test_power_unknown_action(rd):
    rd.insert()
    with pytest.raises(errors.InvalidParameterError):
        rd.power(7)
    rd.usable()


def test_eject_and_confiscate_not_supported(rd):
    for code in (IOCTL.EJECT, IOCTL.CONFISCATE):
        with pytest.raises(errors.NotSupportedError):
            rd.dev.ioctl(code)
    rd.usable()


def test_swallow(rd):
    with pytest.raises(errors.NoCardError):
        rd.dev.ioctl(IOCTL.SWALLOW)
    rd.insert()
    rd.dev.ioctl(IOCTL.SWALLOW)
    assert rd.state() == State.SWALLOWED
    rd.usable()


def test_set_attribute_unknown_tag(rd):
    with pytest.raises((errors.NotSupportedError, errors.DriverError)):
        rd.dev.ioctl(IOCTL.SET_ATTRIBUTE, dword(0x7FFF4321) + b"\x01", 0)
    rd.usable()


def test_transmit_after_removal(rd):
    rd.insert()
    rd.connect()
    rd.remove()
    deadline = time.monotonic() + 5
    while rd.state() != State.ABSENT:
        assert time.monotonic() < deadline
        time.sleep(0.005)
    with pytest.raises(errors.NoCardError):
        rd.transmit(SELECT_AID)
    rd.usable()


# ---- card tracking ----------------------------------------------------------------

def test_is_present_pends_then_completes_on_insert(rd):
    op = rd.dev.submit(IOCTL.IS_PRESENT)
    time.sleep(0.05)
    assert not op.done()
    rd.insert()
    assert op.wait(5) == b""


def test_is_absent_completes_on_removal(rd):
    rd.insert()
    op = rd.dev.submit(IOCTL.IS_ABSENT)
    time.sleep(0.05)
    assert not op.done()
    rd.remove()
    assert op.wait(5) == b""
    assert rd.state() == State.ABSENT


def test_tracking_completes_at_once_when_already_true(rd):
    assert rd.dev.submit(IOCTL.IS_ABSENT).wait(2) == b""
    rd.insert()
    assert rd.dev.submit(IOCTL.IS_PRESENT).wait(2) == b""
    assert rd.dev.ioctl(IOCTL.IS_PRESENT) == b""


def test_second_tracking_request_is_busy(rd):
    op = rd.dev.submit(IOCTL.IS_PRESENT)
    second = rd.dev.submit(IOCTL.IS_ABSENT)
    with pytest.raises(errors.DeviceBusyError):
        second.wait(2)
    with pytest.raises(errors.DeviceBusyError):
        rd.dev.ioctl(IOCTL.IS_PRESENT)
    op.cancel()
    with pytest.raises(errors.CancelledError):
        op.wait(2)
    rd.usable()


def test_cancel_pending_wait(rd):
    op = rd.dev.submit(IOCTL.IS_PRESENT)
    time.sleep(0.02)
    t = time.monotonic()
    op.cancel()
    with pytest.raises(errors.CancelledError):
        op.wait(2)
    assert time.monotonic() - t < 1.0
    # the slot is free again
    op2 = rd.dev.submit(IOCTL.IS_PRESENT)
    rd.insert()
    op2.wait(5)
    rd.usable()


def test_wait_timeout_leaves_operation_pending(rd):
    op = rd.dev.submit(IOCTL.IS_PRESENT)
    with pytest.raises(errors.TimeoutError):
        op.wait(0.05)
    assert not op.done()
    with pytest.raises(errors.InvalidStateError):
        op.result()
    op.cancel()
    with pytest.raises(errors.CancelledError):
        op.wait(2)


def test_close_with_pending_operations(rd):
    track = rd.dev.submit(IOCTL.IS_PRESENT)
    queued = [rd.dev.submit(IOCTL.GET_STATE, b"", 4) for _ in range(50)]
    t = time.monotonic()
    rd.dev.close()
    assert time.monotonic() - t < 1.0
    with pytest.raises(errors.CancelledError):
        track.wait(1)
    for op in queued:
        assert op.done()
        try:
            op.result()  # ran before close, or was cancelled by it
        except errors.CancelledError:
            pass
    with pytest.raises(errors.ClosedError):
        rd.dev.ioctl(IOCTL.GET_STATE, b"", 4)
    rd.dev.close()  # idempotent


def test_overlapped_transmit_and_harvest(rd):
    rd.insert()
    rd.connect()
    ops = [rd.dev.submit(IOCTL.TRANSMIT, struct.pack("<II", 2, 8) + bytes([0x80, 0xEE, 0, 0, n]),
                         300) for n in range(1, 20)]
    done = []
    deadline = time.monotonic() + 5
    while len(done) < len(ops) and time.monotonic() < deadline:
        done += rd.dev.harvest(0.5)
    assert [o.id for o in done] == [o.id for o in ops]  # FIFO order
    for n, op in enumerate(ops, 1):
        assert len(op.result()) == 8 + n + 2
