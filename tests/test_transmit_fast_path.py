"""The reader API's per-call paths (Card.transmit, Reader.state) take
shortcuts for speed; these tests pin that the shortcuts answer exactly what
the full checks answer: the same responses, the same typed errors, the same
messages (benchmarks/test_bench_reader_api.py measures the speed)."""

from __future__ import annotations

import struct
from typing import Any, Optional

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scardio import apdu as apdu_module
from scardio import errors
from scardio.apdu import APDULengthError, MAX_APDU, check_length
from scardio.card import Card
from scardio.constants import IOCTL, Protocol, State
from scardio.reader import Reader
from scardio.sequences import decode_state
from scardio.sequences.transmit import Response

from helpers_reader import sim_reader

U32 = struct.Struct("<I")
PROTOCOLS = [Protocol.T0, Protocol.T1, Protocol.RAW, 0x4, 0]


def outcome(fn: Any, *args: Any) -> Optional[tuple[type, str]]:
    try:
        fn(*args)
    except APDULengthError as exc:
        return type(exc), str(exc)
    return None


def interesting_apdus() -> st.SearchStrategy[bytes]:
    """Around every length limit, with the fifth byte often 00 (an extended
    length on T=1, refused on T=0)."""
    lengths = st.sampled_from([0, 1, 3, 4, 5, 6, 7, 8, 9, 260, 261, 262, 263,
                               MAX_APDU - 1, MAX_APDU, MAX_APDU + 1])
    return st.builds(
        lambda n, fifth, seed: bytes((seed + i) & 0xFF if i != 4 else fifth
                                     for i in range(n)),
        lengths, st.sampled_from([0, 1, 0xFF]), st.integers(0, 255))


@settings(max_examples=400, deadline=None)
@given(interesting_apdus(), st.sampled_from(PROTOCOLS))
def test_check_length_shortcut_agrees_with_the_full_checks(raw: bytes, protocol: int) -> None:
    # The full checks are what check_length ran for every length before it
    # decided the common ones at once.
    assert outcome(check_length, raw, protocol) == \
        outcome(apdu_module._check_length_in_detail, raw, protocol)


@pytest.mark.parametrize("raw, protocol", [
    (bytes(261), Protocol.T1), (b"\x80\xEE\x00\x00\xFF" + bytes(256), Protocol.T0),
    (bytes(4105), Protocol.T1), (b"\x01", Protocol.RAW), (bytes(300), 0x4),
])
def test_check_length_builds_no_message_for_a_valid_apdu(monkeypatch: pytest.MonkeyPatch,
                                                         raw: bytes, protocol: int) -> None:
    def no_message(protocol: int) -> str:
        raise AssertionError("an error message was built for a valid APDU")
    monkeypatch.setattr(apdu_module, "_protocol_name", no_message)
    check_length(raw, protocol)


@pytest.mark.parametrize("raw, protocol, message", [
    (b"\x00\xA4", Protocol.T1, "APDU of 2 byte(s) is too short for T=1: at least the 4 "
     "header bytes CLA INS P1 P2 are needed"),
    (bytes(262), Protocol.T0, "APDU of 262 bytes is too long for T=0: at most 261 "
     "(extended APDUs need T=1)"),
    (bytes(MAX_APDU + 1), 0x4, f"APDU of {MAX_APDU + 1} bytes is too long for protocol "
     f"0x4: at most {MAX_APDU}"),
    (bytes.fromhex("80EE0000000400"), Protocol.T0, "extended APDU (case 2E) cannot be sent "
     "with T=0; extended APDUs need T=1"),
    (b"", Protocol.RAW, "empty command"),
])
def test_check_length_messages(raw: bytes, protocol: int, message: str) -> None:
    with pytest.raises(APDULengthError) as info:
        check_length(raw, protocol)
    assert str(info.value) == message


@pytest.mark.parametrize("value", list(range(len(State) + 2)) + [0xFFFFFFFF])
def test_decode_state_by_value(value: int) -> None:
    expected = State(value) if value < len(State) else State.UNKNOWN
    assert decode_state(U32.pack(value)) is expected
    # a longer answer is decoded from its first four bytes, as before
    assert decode_state(U32.pack(value) + b"\x00") is expected


def test_decode_state_short_output_is_a_driver_data_error() -> None:
    with pytest.raises(errors.DriverDataError, match="GET_STATE: driver returned 3 byte"):
        decode_state(b"\x06\x00\x00")


class AnsweringDevice:
    """A Device whose TRANSMIT answers come from a list (and GET_STATE from
    `state`), recording the IOCTLs it was asked."""

    closed = False

    def __init__(self, answers: list[bytes], state: bytes = U32.pack(6)) -> None:
        self.answers = list(answers)
        self.state = state
        self.calls: list[tuple[int, bytes, int]] = []

    def ioctl(self, code: int, input: bytes = b"", output_size: int = 0) -> bytes:
        self.calls.append((code, bytes(input), output_size))
        if code == IOCTL.GET_STATE:
            return self.state
        return self.answers.pop(0)

    def close(self) -> None:
        self.closed = True


def card_on(device: AnsweringDevice, protocol: Protocol = Protocol.T1) -> Card:
    reader = Reader(device, startup=False, power_down_timeout=None, name="answering")
    return Card(reader, bytes.fromhex("3B00"), protocol)


HEADER = bytes(8)


def test_transmit_answer_without_status_word_is_a_driver_data_error() -> None:
    card = card_on(AnsweringDevice([HEADER + b"\x90"]))
    with pytest.raises(errors.DriverDataError, match="response of 1 byte"):
        card.transmit(b"\x80\xEE\x00\x00\x01")
    assert card.connected


def test_transmit_returns_a_response_and_asks_the_right_sizes() -> None:
    dev = AnsweringDevice([HEADER + b"\x01\x90\x00", HEADER + b"\x90\x00",
                           HEADER + bytes(4096) + b"\x90\x00"])
    card = card_on(dev)
    rsp = card.transmit(b"\x80\xEE\x00\x00\x01")
    assert type(rsp) is Response and rsp == (b"\x01", 0x90, 0x00) and rsp.ok
    data, sw1, sw2 = rsp
    assert (data, sw1, sw2) == (b"\x01", 0x90, 0x00)
    card.transmit(b"\x80\xEE\x00\x00\x02\x01\x02")
    card.transmit(b"\x80\xEE\x00\x00\x00\x10\x00")  # extended Le: the large buffer
    header = struct.pack("<II", int(Protocol.T1), 8)
    assert dev.calls == [
        (int(IOCTL.TRANSMIT), header + b"\x80\xEE\x00\x00\x01", 8 + 256 + 2),
        (int(IOCTL.TRANSMIT), header + b"\x80\xEE\x00\x00\x02\x01\x02", 8 + 256 + 2),
        (int(IOCTL.TRANSMIT), header + b"\x80\xEE\x00\x00\x00\x10\x00", 8 + 65536 + 2),
    ]


def test_transmit_follow_ups_resolve_the_card_defaults() -> None:
    # 61xx: GET RESPONSE unless the card or the call turns it off
    dev = AnsweringDevice([HEADER + b"\x61\x02", HEADER + b"\xAB\xCD\x90\x00",
                           HEADER + b"\x61\x02", HEADER + b"\x61\x02"])
    card = card_on(dev)
    assert card.transmit(b"\x00\xB0\x00\x00") == (b"\xAB\xCD", 0x90, 0x00)
    card.auto_get_response = False
    assert card.transmit(b"\x00\xB0\x00\x00") == (b"", 0x61, 0x02)
    card.auto_get_response = True
    assert card.transmit(b"\x00\xB0\x00\x00", auto_get_response=False) == (b"", 0x61, 0x02)
    assert len(dev.calls) == 4 and dev.calls[1][1].endswith(b"\x00\xC0\x00\x00\x02")


def test_transmit_infinite_timeout_is_no_timeout() -> None:
    card = card_on(AnsweringDevice([HEADER + b"\x90\x00"]))
    assert card.transmit(b"\x00\xA4\x04\x00", timeout=float("inf")).ok
    with pytest.raises(ValueError):
        card.transmit(b"\x00\xA4\x04\x00", timeout=-1)


def test_transmit_releases_the_reader_lock_on_every_outcome() -> None:
    dev = AnsweringDevice([HEADER + b"\x90"])
    card = card_on(dev)
    with pytest.raises(errors.DriverDataError):
        card.transmit(b"\x80\xEE\x00\x00\x01")
    with pytest.raises(APDULengthError):
        card.transmit(b"\x80")
    card._mark_gone("test")
    with pytest.raises(errors.InvalidStateError, match="not connected: test"):
        card.transmit(b"\x80\xEE\x00\x00\x01")
    assert card.reader._lock.acquire(blocking=False)
    card.reader._lock.release()


def test_reader_state_on_a_closed_reader_is_a_closed_error() -> None:
    dev = AnsweringDevice([], state=U32.pack(4))
    reader = Reader(dev, startup=False, power_down_timeout=None, name="answering")
    assert reader.state() is State.POWERED
    reader.close(power_down=False)
    with pytest.raises(errors.ClosedError, match="'answering' is closed"):
        reader.state()


def test_sim_card_transmit_and_state_after_the_lanes_ran() -> None:
    """connect() runs through the device's lanes; the synchronous calls after
    it answer as before, and an overlapped call still completes."""
    with sim_reader() as (reader, sim):
        sim.insert()
        card = reader.connect(timeout=5)
        for _ in range(200):
            assert reader.state() is State.SPECIFIC
            assert card.transmit(b"\x80\xEE\x00\x00\x01") == (b"\x00", 0x90, 0x00)
        op = reader.device.submit(IOCTL.GET_STATE, b"", 4)
        assert decode_state(op.wait(5)) is State.SPECIFIC
