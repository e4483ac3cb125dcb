"""TraceRecord names what it can (attribute tags, POWER operations,
protocol masks, card states) and keeps the raw bytes; State explains itself."""

from __future__ import annotations

import struct

import pytest

from helpers_reader import sim_reader
from scardio import IOCTL, Attr, State, errors
from scardio.constants import (attr_name, power_action_name, protocol_mask_name,
                               state_name)
from scardio.reader import TraceRecord


def dword(v: int) -> bytes:
    return struct.pack("<I", v)


def record(code, data=b"", out=b"", status="SUCCESS"):
    return TraceRecord(0.0, code, data, out, status, None, 1.0, False)


def test_names_of_the_contracts_numbers():
    assert attr_name(0x00010100) == "VENDOR_NAME" and attr_name(0x7FFF0001) == "DEVICE_UNIT"
    assert attr_name(0x00080207) == "CURRENT_IFSC"
    assert attr_name(0x12345678) == "ATTR(0x12345678)"
    assert [power_action_name(i) for i in range(4)] == [
        "POWER_DOWN", "COLD_RESET", "WARM_RESET", "POWER_ACTION(3)"]
    assert protocol_mask_name(3) == "T0|T1" and protocol_mask_name(2) == "T1"
    assert protocol_mask_name(0x10000) == "RAW" and protocol_mask_name(0) == "0"
    assert protocol_mask_name(0x80000001) == "T0|DEFAULT"
    assert protocol_mask_name(0x5) == "T0|0x4"
    assert state_name(6) == "SPECIFIC" and state_name(99) == "STATE(99)"


@pytest.mark.parametrize("rec, decoded, text_in, text_out", [
    (record(IOCTL.GET_ATTRIBUTE, dword(Attr.VENDOR_NAME), b"abc"),
     {"attribute": "VENDOR_NAME"}, "VENDOR_NAME", "out=616263"),
    (record(IOCTL.SET_ATTRIBUTE, dword(Attr.CURRENT_IFSD) + b"\xfe", b""),
     {"attribute": "CURRENT_IFSD"}, "CURRENT_IFSD value=FE", "out=(empty)"),
    (record(IOCTL.POWER, dword(1), b"\x3b\x00"),
     {"operation": "COLD_RESET"}, "COLD_RESET", "out=3B00"),
    (record(IOCTL.POWER, dword(0), None, "NO_MEDIA"),
     {"operation": "POWER_DOWN"}, "POWER_DOWN", "out=-"),
    (record(IOCTL.SET_PROTOCOL, dword(3), dword(1)),
     {"protocols": "T0|T1", "protocol": "T0"}, "T0|T1", "out=T0"),
    (record(IOCTL.GET_STATE, b"", dword(5)), {"state": "NEGOTIABLE"}, "in=-", "out=NEGOTIABLE"),
    (record(IOCTL.GET_ATTRIBUTE, b"\x01", None), {}, "in=01", "out=-"),  # short: raw
    (record(IOCTL.TRANSMIT, b"\x02\x00", b"\x90\x00"), {}, "in=0200", "out=9000"),
])
def test_decoded_and_text(rec, decoded, text_in, text_out):
    assert rec.decoded == decoded
    assert rec.input_text() == text_in and rec.output_text() == text_out
    d = rec.as_dict()
    assert d["decoded"] == decoded and d["input"] == rec.input.hex()


def test_set_attribute_is_traced_by_name_on_a_real_device():
    records = []
    with sim_reader(trace=records.append) as (reader, sim):
        try:
            reader.device.ioctl(IOCTL.SET_ATTRIBUTE, dword(Attr.CURRENT_IFSD) + b"\x20", 0)
        except errors.ScardioError:
            pass  # the simulated reader may refuse it: the trace is what counts
    sets = [r for r in records if r.code == IOCTL.SET_ATTRIBUTE]
    assert len(sets) == 1
    assert sets[0].input_text() == "CURRENT_IFSD value=20"


def test_every_state_has_a_description():
    assert State.SWALLOWED.description == "card present, not powered"
    assert State.ABSENT.description == "no card"
    assert State.NEGOTIABLE.description == "powered, ATR read, protocol not yet chosen"
    assert State.SPECIFIC.description == "powered, protocol set"
    assert State.PRESENT.description.startswith("card present, not swallowed")
    assert State.POWERED.description.startswith("powered")
    descriptions = [s.description for s in State]
    assert all(descriptions) and len(set(descriptions)) == len(State)
