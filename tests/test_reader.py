"""Reader start-up, attributes, Card transmit and its errors, APDU module,
tracing proxy."""

from __future__ import annotations

import struct
import time

import pytest

import scardio.sim
import scardio
from helpers_reader import Recorder, sim_reader
from scardio import IOCTL, Attr, Protocol, State, errors
from scardio.apdu import (APDU, APDUError, APDULengthError, HexError, check_length,
                          parse_apdu, parse_hex)
from scardio.card import CardDisconnectedError, Response, StatusWordError, transmit_steps
from scardio.discovery import ReaderDescriptor, sim_readers
from scardio.reader import Reader, TracingDevice, run_sync

SELECT_AID = "00 A4 04 0C 08 F07363617264696F"


# -- start-up ---------------------------------------------------------------

def test_startup_names_the_reader_from_attributes():
    with sim_reader() as (reader, sim):
        a = reader.attributes
        assert a.vendor_name == "scardio" and a.ifd_type == "Simulated Reader"
        assert a.device_unit == reader.device.lun
        assert a.ifd_version == "1.0.0"
        assert a.characteristics == 0 and a.characteristics_flags == []
        assert reader.name == f"scardio Simulated Reader {reader.device.lun}"
        info = reader.info()
        assert info["attributes"]["vendor_name"] == "scardio"


def test_startup_sequence_is_the_specs():
    records = []
    with sim_reader(trace=records.append):
        pass
    start = [(r.name, struct.unpack("<I", r.input)[0]) for r in records[:5]]
    assert start == [("GET_ATTRIBUTE", Attr.VENDOR_NAME), ("GET_ATTRIBUTE", Attr.VENDOR_IFD_TYPE),
                     ("GET_ATTRIBUTE", Attr.DEVICE_UNIT),
                     ("GET_ATTRIBUTE", Attr.VENDOR_IFD_VERSION),
                     ("GET_ATTRIBUTE", Attr.CHARACTERISTICS)]


class NoVendorAttrs:
    """Proxy of a driver (like vpcd) that has no vendor attributes."""

    def __init__(self, dev):
        self._dev = dev

    def __getattr__(self, name):
        return getattr(self._dev, name)

    def ioctl(self, code, data=b"", size=0):
        if code == IOCTL.GET_ATTRIBUTE and struct.unpack("<I", data)[0] != Attr.CHARACTERISTICS:
            raise errors.NotSupportedError("GET_ATTRIBUTE: NOT_SUPPORTED", ioctl=code)
        return self._dev.ioctl(code, data, size)


def test_missing_attributes_fall_back_to_the_descriptor_name():
    desc = ReaderDescriptor("Friendly Name From reader.conf", "reader.conf", "x", "y")
    dev = scardio.sim.open_device(0x2FF)
    with Reader(NoVendorAttrs(dev), desc) as reader:
        assert reader.name == "Friendly Name From reader.conf"
        assert reader.attributes.vendor_name is None
        assert "VENDOR_NAME" in reader.attributes.unsupported
        assert reader.attributes.characteristics == 0
    assert dev.closed


def test_open_reader_by_name_index_and_descriptor(monkeypatch):
    monkeypatch.delenv("SCARDIO_SIM", raising=False)
    pool = sim_readers(2)
    with scardio.open_reader("scardio Simulated Reader 1", readers=pool) as r:
        assert r.name == "scardio Simulated Reader 1"
    with scardio.open_reader(0, readers=pool) as r:
        assert r.device.lun == 0
    with scardio.open_reader(pool[1]) as r:
        assert r.descriptor == pool[1]
    with pytest.raises(scardio.ReaderNotFoundError):
        scardio.open_reader("no such reader", readers=pool)


def test_close_powers_down_and_is_idempotent():
    with sim_reader() as (reader, sim):
        sim.insert()
        reader.connect(timeout=5)
        dev = reader.device
        lun = dev.lun
        reader.close()
        reader.close()
        assert reader.closed and dev.closed
        with pytest.raises(errors.ClosedError):
            reader.connect()
        with pytest.raises(errors.ClosedError):
            reader.state()
    # the driver saw the power-down before the channel closed
    d2 = scardio.sim.open_device(lun)
    d2.close()


def test_close_power_down_is_counted():
    rec = Recorder()
    with sim_reader() as (reader, sim):
        reader.add_listener(rec)
        sim.insert()
        card = reader.connect(timeout=5)
        before = sim.counters().power_downs
        counters = []
        reader.add_listener(lambda ev: ev.kind == "power_down" and counters.append(sim.counters()))
        reader.close()
        assert counters and counters[0].power_downs == before + 1 and not counters[0].powered
        assert not card.connected
        with pytest.raises(CardDisconnectedError, match="closed"):
            card.transmit(SELECT_AID)
    assert rec.kinds()[-2:] == ["power_down", "close"]


# -- transmit ---------------------------------------------------------------

def test_transmit_data_and_sw():
    with sim_reader() as (reader, sim):
        sim.insert()
        with reader.connect(timeout=5) as card:
            assert card.transmit(SELECT_AID).sw == 0x9000
            assert card.transmit(bytes.fromhex("00A4000C020101")).ok
            r = card.transmit(APDU(0x00, 0xB0, 0, 0, ne=16))
            assert r.data == bytes(range(16)) and (r.sw1, r.sw2) == (0x90, 0x00)
            assert bytes(r) == bytes(range(16)) + b"\x90\x00"
            assert card.transmit("00 84 00 00 08").data.__len__() == 8
        assert not card.connected


def test_extended_apdu_on_t1():
    with sim_reader() as (reader, sim):
        sim.insert()
        card = reader.connect(timeout=5)
        r = card.transmit(APDU(0x80, 0xEE, 0, 0, ne=1000))
        assert r.ok and len(r.data) == 1000 and r.data[:4] == b"\x00\x01\x02\x03"
        data = bytes(300)
        r = card.transmit(APDU(0x80, 0xEE, 0, 0, data, ne=300))
        assert r.ok and r.data == data


def test_t0_get_response_automatic_and_optional():
    with sim_reader() as (reader, sim):
        sim.insert(t0=True)
        card = reader.connect(timeout=5)
        assert card.protocol == Protocol.T0
        echo = "80 EE 00 00 04 CAFEBABE 04"
        r = card.transmit(echo)
        assert r.data == bytes.fromhex("CAFEBABE") and r.ok
        r = card.transmit(echo, auto_get_response=False)
        assert (r.sw1, r.sw2, r.data) == (0x61, 0x04, b"")
        r = card.transmit("00 C0 00 00 04")  # GET RESPONSE by hand
        assert r.data == bytes.fromhex("CAFEBABE")


def _scripted(responses):
    """Drive transmit_steps with canned card answers; return (Response, sent)."""
    sent = []

    class Dev:
        def ioctl(self, code, data=b"", size=0):
            sent.append(bytes(data[8:]))
            return b"\x02\x00\x00\x00\x08\x00\x00\x00" + bytes.fromhex(responses.pop(0))
    return Dev(), sent


def test_6cxx_resends_with_exact_le():
    dev, sent = _scripted(["6C10", "00" * 16 + "9000"])
    r = run_sync(dev, transmit_steps(bytes.fromhex("00B0000000"), Protocol.T1))
    assert r.ok and len(r.data) == 16
    assert sent == [bytes.fromhex("00B0000000"), bytes.fromhex("00B0000010")]
    dev, sent = _scripted(["6C10"])
    r = run_sync(dev, transmit_steps(bytes.fromhex("00B0000000"), Protocol.T1,
                                     auto_resend=False))
    assert r.sw == 0x6C10 and len(sent) == 1


def test_61xx_chains_get_response_keeping_the_channel():
    dev, sent = _scripted(["AA61 02", "BBCC 61 01", "DD 9000"])
    r = run_sync(dev, transmit_steps(bytes.fromhex("01CA000000"), Protocol.T1))
    assert r.data == bytes.fromhex("AABBCCDD") and r.ok
    assert sent[1:] == [bytes.fromhex("01C0000002"), bytes.fromhex("01C0000001")]


def test_response_helpers():
    r = Response(b"\x01", 0x6A, 0x82)
    assert str(r) == "01 SW=6A82" and r.as_dict()["sw"] == "6A82"
    with pytest.raises(StatusWordError, match="6A82"):
        r.raise_for_status()
    assert Response(b"", 0x90, 0).raise_for_status().ok


@pytest.mark.parametrize("apdu, t0_only", [
    ("00A4", False), ("", False), ("80EE000000000400", False),
])
def test_apdu_too_short_for_the_protocol(apdu, t0_only):
    with sim_reader() as (reader, sim):
        sim.insert()
        card = reader.connect(timeout=5)
        if len(apdu) < 8:
            with pytest.raises(APDULengthError, match="too short"):
                card.transmit(bytes.fromhex(apdu))
        assert card.transmit(SELECT_AID).ok  # still usable


def test_apdu_too_long_and_extended_on_t0():
    with sim_reader() as (reader, sim):
        sim.insert(t0=True)
        card = reader.connect(timeout=5)
        with pytest.raises(APDULengthError, match="too long for T=0"):
            card.transmit(APDU(0x80, 0xEE, 0, 0, bytes(300)))
        with pytest.raises(APDULengthError, match="extended APDUs need T=1"):
            card.transmit("80 EE 00 00 00 04 00")
        assert card.transmit("80 EE 00 00 02").ok
    with sim_reader() as (reader, sim):
        sim.insert()
        card = reader.connect(timeout=5)
        with pytest.raises(APDULengthError, match="too long for T=1"):
            card.transmit(bytes(4 + 3 + 65536 + 2 + 1))
        assert card.transmit(SELECT_AID).ok


def test_malformed_hex_is_a_clear_error():
    with sim_reader() as (reader, sim):
        sim.insert()
        card = reader.connect(timeout=5)
        with pytest.raises(HexError, match="position 4"):
            card.transmit("00A4zz")
        assert card.transmit(SELECT_AID).ok


def test_transmit_after_disconnect():
    with sim_reader() as (reader, sim):
        sim.insert()
        card = reader.connect(timeout=5)
        card.disconnect()
        card.disconnect()  # idempotent
        with pytest.raises(CardDisconnectedError, match="disconnected"):
            card.transmit(SELECT_AID)
        assert isinstance(CardDisconnectedError("x"), errors.InvalidStateError)
        assert reader.connect(timeout=5).transmit(SELECT_AID).ok


def test_transmit_after_removal():
    with sim_reader() as (reader, sim):
        sim.insert()
        card = reader.connect(timeout=5)
        sim.remove()
        with pytest.raises(errors.NoCardError):
            card.transmit(SELECT_AID)
        with pytest.raises(CardDisconnectedError, match="removed"):
            card.transmit(SELECT_AID)
        assert reader.card is None
        with pytest.raises(errors.NoCardError):
            reader.connect(timeout=5)
        sim.insert()
        assert reader.connect(timeout=5).transmit(SELECT_AID).ok


def test_transmit_after_swap_is_refused():
    with sim_reader() as (reader, sim):
        sim.insert()
        card = reader.connect(timeout=5)
        sim.remove()
        assert reader.state() == State.ABSENT  # the reader notices the removal
        sim.insert()
        with pytest.raises(errors.InvalidStateError):
            card.transmit(SELECT_AID)
        assert not card.connected
        assert reader.connect(timeout=5).connected


def test_fast_swap_without_a_poll_is_seen_by_get_state():
    with sim_reader() as (reader, sim):
        sim.insert()
        reader.connect(timeout=5).disconnect()
        sim.remove()
        sim.insert()
        assert reader.state() == State.SWALLOWED


def test_reader_state_and_presence():
    with sim_reader() as (reader, sim):
        assert reader.state() == State.ABSENT and not reader.is_card_present()
        sim.insert()
        assert reader.state() == State.SWALLOWED and reader.is_card_present()


def test_wait_for_card_and_removal_without_monitor():
    import threading
    with sim_reader() as (reader, sim):
        with pytest.raises(errors.TimeoutError):
            reader.wait_for_card(0.1)
        t = threading.Timer(0.05, sim.insert)
        t.start()
        reader.wait_for_card(5)
        t.join()
        t0 = time.monotonic()
        reader.wait_for_card(5)  # already in: at once
        assert time.monotonic() - t0 < 1.0
        t = threading.Timer(0.05, sim.remove)
        t.start()
        reader.wait_for_removal(5)
        t.join()


# -- tracing ----------------------------------------------------------------

def test_tracing_proxy_records_every_ioctl():
    records = []
    with sim_reader(trace=records.append) as (reader, sim):
        sim.insert()
        reader.connect(timeout=None).transmit(SELECT_AID)
        names = [r.name for r in records]
        assert names[-1] == "TRANSMIT" and "SET_PROTOCOL" in names
        tx = records[-1]
        assert tx.status == "SUCCESS" and tx.output.endswith(b"\x90\x00")
        assert tx.duration_us >= 0 and not tx.overlapped
        with pytest.raises(errors.ScardioError):
            reader.device.ioctl(IOCTL.GET_ATTRIBUTE, struct.pack("<I", Attr.VENDOR_IFD_SERIAL_NO), 64)
        assert records[-1].status == "NOT_SUPPORTED" and records[-1].output is None
        op = reader.device.submit(IOCTL.GET_STATE, b"", 4)
        op.wait(5)
        assert records[-1].overlapped and records[-1].name == "GET_STATE"
        assert records[-1].as_dict()["ioctl"] == "GET_STATE"
        # the reader's tracking waits (Device.wait_tracking), once each
        before = len(records)
        reader.wait_for_card(5)  # in: at once
        with pytest.raises(errors.TimeoutError):
            reader.wait_for_removal(0.05)
        waits = records[before:]
        assert [(r.name, r.status, r.overlapped) for r in waits] == [
            ("IS_PRESENT", "SUCCESS", True), ("IS_ABSENT", "PENDING", True)]
    assert isinstance(reader.device, TracingDevice)


# -- apdu module ----------------------------------------------------------------

@pytest.mark.parametrize("text, case, nc, ne", [
    ("00A40000", "1", 0, None),
    ("00B0000010", "2S", 0, 16),
    ("00B0000000", "2S", 0, 256),
    ("00A4040C02AABB", "3S", 2, None),
    ("00A4040002AABB00", "4S", 2, 256),
    ("00B00000000000", "2E", 0, 65536),
    ("00B00000000100", "2E", 0, 256),
    ("00DA000000000201 02", "3E", 2, None),
    ("00DA0000000002010204 00", "4E", 2, 1024),
])
def test_parse_apdu_cases(text, case, nc, ne):
    a = parse_apdu(text)
    assert a.case == case and len(a.data) == nc and a.ne == ne
    assert bytes(a) == parse_hex(text)


@pytest.mark.parametrize("text, message", [
    ("00A400", "too short"),
    ("00A4000003AABB", "Lc is 3"),
    ("00A400000000", "truncated"),
    ("00A40000000000AA", "extended Lc is 0000"),
    ("00A4000000000301", "extended Lc is 3"),
])
def test_parse_apdu_errors(text, message):
    with pytest.raises(APDUError, match=message):
        parse_apdu(text)


@pytest.mark.parametrize("text, message", [
    ("", "no hex digits"), ("0", "odd number"), ("00 G1", "invalid character 'G' at position 3"),
])
def test_parse_hex_errors(text, message):
    with pytest.raises(HexError, match=message):
        parse_hex(text)


def test_parse_hex_separators():
    assert parse_hex("0x00:a4-04_0C, 08") == bytes.fromhex("00A4040C08")


def test_apdu_builder():
    assert bytes(APDU(0, 0xB0, ne=256)) == bytes.fromhex("00B0000000")
    assert bytes(APDU(0, 0xB0, ne=257)) == bytes.fromhex("00B00000000101")
    assert bytes(APDU(0, 0xB0, ne=65536)) == bytes.fromhex("00B00000000000")
    assert APDU(0, 0xDA, data=bytes(256)).case == "3E"
    with pytest.raises(APDUError):
        APDU(0x100, 0)
    with pytest.raises(APDUError):
        APDU(0, 0, ne=0)
    with pytest.raises(APDUError):
        APDU(0, 0, data=bytes(300), extended=False)


def test_check_length_raw_protocol():
    check_length(b"\x01", Protocol.RAW)
    with pytest.raises(APDULengthError):
        check_length(b"", Protocol.RAW)


def test_connect_events_reach_listeners_on_the_callers_thread():
    """The connect loop runs on the device's lane when bounded, but events
    (and a listener that uses the card at once) stay on the caller's thread."""
    import threading
    seen = []
    with sim_reader() as (reader, sim):
        sim.insert()

        def listener(ev):
            seen.append((ev.kind, threading.get_ident()))
            if ev.kind == "connect":
                assert reader.card.transmit(SELECT_AID).sw == 0x9000  # the reader lock is ours
        reader.add_listener(listener)
        reader.connect(timeout=5).disconnect()
        reader.connect(timeout=5).disconnect()
    me = threading.get_ident()
    kinds = [k for k, t in seen if t == me]
    assert kinds[:5] == ["connect", "disconnect", "power_down_cancelled", "connect", "disconnect"]
