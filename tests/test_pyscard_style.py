"""What pyscard users write works: ``data, sw1, sw2 = card.transmit(...)``
and APDUs as lists of ints, blocking and with asyncio."""

from __future__ import annotations

import asyncio

import pytest

import scardio.aio as aio
from helpers_reader import next_lun, sim_reader
from scardio.apdu import APDUError, to_apdu_bytes
from scardio.card import Response
from scardio.discovery import ReaderDescriptor
from scardio.sim import SIM_LIBRARY, SimControl

SELECT_AID = [0x00, 0xA4, 0x04, 0x0C, 0x08, 0xF0, 0x73, 0x63, 0x61, 0x72, 0x64, 0x69, 0x6F]
READ_8 = [0x00, 0xB0, 0x00, 0x00, 0x08]
SELECT_EF = (0x00, 0xA4, 0x00, 0x0C, 0x02, 0x01, 0x01)


def test_response_unpacks_and_keeps_its_attributes():
    r = Response(b"\x01\x02", 0x90, 0x00)
    data, sw1, sw2 = r
    assert (data, sw1, sw2) == (b"\x01\x02", 0x90, 0x00)
    assert isinstance(data, bytes)  # pyscard gives a list of ints; ours stays bytes
    assert (r[0], r[1], r[2]) == (r.data, r.sw1, r.sw2) and len(r) == 3
    assert r.sw == 0x9000 and r.ok and bytes(r) == b"\x01\x02\x90\x00"
    assert list(r.data) == [1, 2]  # pyscard's form of the data
    assert r == Response(b"\x01\x02", 0x90, 0x00) != Response(b"", 0x90, 0x00)
    with pytest.raises(AttributeError):
        r.sw1 = 0x6A  # type: ignore[misc]


@pytest.mark.parametrize("apdu, expected", [
    ([0x00, 0xA4, 0x04, 0x00], b"\x00\xa4\x04\x00"),
    ((0x80, 0xEE, 0x00, 0x00, 0x00), b"\x80\xee\x00\x00\x00"),
    ([0xFF] * 5, b"\xff" * 5),
])
def test_list_of_ints_is_an_apdu(apdu, expected):
    assert to_apdu_bytes(apdu) == expected


@pytest.mark.parametrize("apdu, message", [
    ([0x00, 0xA4, 256, 0x00], r"element 2 is 256: .*0\.\.255"),
    ([0x00, -1, 0x00, 0x00], r"element 1 is -1"),
    ([0x00, 0xA4, "04", 0x00], r"element 2 is '04' \(str\)"),
    ((0x00, 0xA4, 4.0, 0x00), r"element 2 is 4.0 \(float\)"),
    ([0x00, 0xA4, None, 0x00], r"element 2 is None"),
])
def test_bad_list_elements_are_apdu_errors(apdu, message):
    with pytest.raises(APDUError, match=message) as info:
        to_apdu_bytes(apdu)
    assert isinstance(info.value, ValueError)


def test_other_types_are_type_errors():
    with pytest.raises(TypeError, match="list of ints"):
        to_apdu_bytes({0: 0})  # type: ignore[arg-type]


def test_card_transmit_sync_pyscard_style():
    with sim_reader() as (reader, sim):
        sim.insert()
        with reader.connect(timeout=5) as card:
            data, sw1, sw2 = card.transmit(SELECT_AID)
            assert (data, sw1, sw2) == (b"", 0x90, 0x00)
            assert card.transmit(SELECT_EF).ok
            data, sw1, sw2 = card.transmit(READ_8)
            assert data == bytes(range(8)) and (sw1, sw2) == (0x90, 0x00)
            data, sw1, sw2 = card.transmit(READ_8, timeout=5)  # the generator path
            assert data == bytes(range(8))
            with pytest.raises(APDUError, match="element 1 is 300"):
                card.transmit([0x00, 300, 0x00, 0x00])
            assert card.transmit(SELECT_AID).ok  # still usable


def test_card_transmit_async_pyscard_style():
    async def main():
        lun = next_lun()
        desc = ReaderDescriptor(f"scardio Simulated Reader {lun}", "sim", SIM_LIBRARY,
                                f"sim:{lun}", lun, {"available": True})
        async with await aio.open_reader(desc) as r:
            SimControl(r.reader.device).insert()
            await r.wait_for_card(timeout=5)
            async with await r.connect() as card:
                data, sw1, sw2 = await card.transmit(SELECT_AID)
                assert (data, sw1, sw2) == (b"", 0x90, 0x00)
                assert (await card.transmit(SELECT_EF)).ok
                data, sw1, sw2 = await card.transmit(READ_8)
                assert data == bytes(range(8)) and sw1 == 0x90
                with pytest.raises(APDUError, match="element 0 is 'x'"):
                    await card.transmit(["x", 0xA4, 0x00, 0x00])  # type: ignore[list-item]
                assert (await card.transmit(SELECT_AID)).ok

    asyncio.run(asyncio.wait_for(main(), 20))
