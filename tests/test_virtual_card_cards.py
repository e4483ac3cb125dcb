"""scardio.sim.cards: the file-system card answers a script byte for byte as
the built-in C card does (T=1 and T=0, with and without Card.transmit's
follow-ups), the applet router selects by AID, the faulty card misbehaves
as its attributes say."""

from __future__ import annotations

import time

import pytest

from helpers_reader import sim_reader
from scardio import errors
from scardio.sim import AID, ATR_T0, VirtualCard
from scardio.sim.cards import Applet, AppletRouter, FaultyCard, FileSystemCard

SELECT_APP = "00A4040008" + AID.hex()

# Every command, their error paths, and the T=0 cases (61xx / 6Cxx / GET
# RESPONSE with too long and too short Le, pending data dropped by another
# command, GET RESPONSE with nothing pending, with odd P1P2 while pending).
SCRIPT = [
    "00A40000023F00", "00A40000022F01", "00B0000010", "00B00FF820", "00B0100001",
    "00B0800001", "00D600000401020304", "00B0000008", "00D60FFE03AABBCC",
    "00D60FFF01EE", "00B00FFE02",
    SELECT_APP, "00A40000022F01", "00A40000020101", "00B0000004", "00A4040001F0",
    "00A4040C08" + AID.hex(), "00A4010000", "00A4000C00", "00A40001022F01",
    "0084000008", "0084000000", "0084000108", "00840000", "008400000101",
    "80EE000003AABBCC05", "00C0000002", "00C0000010", "00C0000003", "00C0000001",
    "80EE000003AABBCC00", "00C0000080", "00C0000080", "00C0000001",
    "80EE000002ABCD04", "00C0000102", "00C00000", "00C0000002",
    "80EE000002ABCD04", "00B0000001", "00C0000004",
    "80EE00000A", "80EE0000", "80EE000001FF", "80EE000000",
    "00C0000004", "00120000", "81EE000001", "0CA4000000", "10A4000000", "40A4000000",
    "20A4000000", "FFA4000000", "A0A4000000", "80A4000000", "00A4", "00B000",
    "00B0000002AA", "00A400000501", "00B0000000", "00D6000000",
]

# Extended APDUs (T=1 only: under T=0 the reader refuses them itself).
SCRIPT_T1 = SCRIPT + ["00B00000000010", "00B0000000000000", "0084000000001000",
                      "80EE0000000002ABCD0100", "00D600000000020102", "00B0000000000020"]


def _run(card_kind: str, t0: bool, script: list[str], follow_ups: bool) -> list[object]:
    with sim_reader(power_down_timeout=0) as (reader, sim):
        if card_kind == "builtin":
            sim.insert(t0=t0)
        else:
            sim.insert(card=FileSystemCard(t0=t0))
        reader.wait_for_card(timeout=5)
        out: list[object] = []
        with reader.connect() as card:
            assert card.protocol_name == ("T=0" if t0 else "T=1")
            for apdu in script:
                try:
                    r = card.transmit(bytes.fromhex(apdu), auto_get_response=follow_ups,
                                      auto_resend=follow_ups)
                    out.append((apdu, bytes(r.data).hex(), f"{r.sw:04X}"))
                except (errors.ScardioError, ValueError) as exc:
                    out.append((apdu, type(exc).__name__))
        return out


@pytest.mark.parametrize("t0", [False, True], ids=["T=1", "T=0"])
@pytest.mark.parametrize("follow_ups", [False, True], ids=["raw", "follow-ups"])
def test_the_file_system_card_answers_as_the_built_in_one(t0, follow_ups):
    script = SCRIPT if t0 else SCRIPT_T1
    builtin = _run("builtin", t0, script, follow_ups)
    twin = _run("twin", t0, script, follow_ups)
    # Not vacuous: the script reaches data, warnings and the T=0 framing.
    sws = {row[2] for row in builtin if len(row) == 3}
    assert {"9000", "6A82", "6986", "6D00", "6E00", "6700"} <= sws
    if not t0:
        assert "6282" in sws
    elif not follow_ups:
        assert {"6C08", "6105", "6103", "6985"} <= sws
    mismatches = [(b, t) for b, t in zip(builtin, twin) if b != t]
    assert mismatches == []


def test_the_file_system_card_keeps_its_files_across_resets():
    from scardio.sequences.disconnect import Disposition
    with sim_reader(power_down_timeout=0) as (reader, sim):
        sim.insert(card=FileSystemCard())
        reader.wait_for_card(timeout=5)
        with reader.connect() as card:
            assert card.transmit(bytes.fromhex("00A40000022F01")).sw == 0x9000
            assert card.transmit(bytes.fromhex("00D6000002CAFE")).sw == 0x9000
            card.disconnect(Disposition.RESET)
        with reader.connect() as card:
            # The reset forgot the selection, not the file's contents.
            assert card.transmit(bytes.fromhex("00B0000002")).sw == 0x6986
            card.transmit(bytes.fromhex("00A40000022F01"))
            assert bytes(card.transmit(bytes.fromhex("00B0000002")).data) == b"\xca\xfe"


class Counter(Applet):
    aid = bytes.fromhex("A000000001")

    def __init__(self) -> None:
        self.n = 0
        self.deselected = 0

    def deselect(self) -> None:
        self.deselected += 1

    def apdu(self, command: bytes) -> bytes:
        self.n += 1
        return bytes([self.n]) + b"\x90\x00"


class Greeter(Applet):
    aid = bytes.fromhex("A000000002AA")

    def select(self, command: bytes) -> bytes:
        return b"hi\x90\x00"  # FCI data, then SW

    def apdu(self, command: bytes) -> bytes:
        return b"hello" + b"\x90\x00" if command[1] == 0x01 else b"\x6d\x00"


@pytest.mark.parametrize("atr", [None, ATR_T0], ids=["T=1", "T=0"])
def test_the_applet_router_selects_by_aid(atr):
    counter, greeter = Counter(), Greeter()
    router = AppletRouter([counter, greeter], **({"atr": atr} if atr else {}))
    with sim_reader(power_down_timeout=0) as (reader, sim):
        sim.insert(card=router)
        reader.wait_for_card(timeout=5)
        with reader.connect() as card:
            def tx(hex_apdu: str) -> tuple[bytes, int]:
                r = card.transmit(bytes.fromhex(hex_apdu))
                return bytes(r.data), r.sw

            assert tx("00100000") == (b"", 0x6985)             # nothing selected
            assert tx("00A4040005A000000001") == (b"", 0x9000)
            assert tx("00100000") == (b"\x01", 0x9000)
            assert tx("00100000") == (b"\x02", 0x9000)
            assert tx("00A4040005A0000000FF") == (b"", 0x6A82)  # unknown: kept
            assert tx("00100000") == (b"\x03", 0x9000)
            # Partial AID selects the first applet it starts; FCI comes back
            # (under T=0 through 61xx + GET RESPONSE).
            assert tx("00A4040006A000000002AA00") == (b"hi", 0x9000)
            assert counter.deselected == 1
            assert tx("00010000") == (b"hello", 0x9000)
            assert tx("00020000") == (b"", 0x6D00)
            assert tx("00A4040003A0000000") == (b"", 0x9000)  # partial: the first
            assert tx("00100000") == (b"\x04", 0x9000)
            assert tx("00A40400") == (b"", 0x6700)


def test_an_applet_needs_an_aid():
    class NoAid(Applet):
        pass

    with pytest.raises(ValueError, match="NoAid.aid must have 1..16 bytes"):
        AppletRouter([NoAid()])


def test_the_faulty_card_misbehaves_as_told(caplog):
    faulty = FaultyCard()
    with sim_reader(power_down_timeout=0) as (reader, sim):
        sim.insert(card=faulty)
        reader.wait_for_card(timeout=5)
        with reader.connect() as card:
            select = bytes.fromhex("00A40000022F01")
            read4 = bytes.fromhex("00B0000004")
            assert card.transmit(select).sw == 0x9000
            assert bytes(card.transmit(read4).data) == b"\x00\x01\x02\x03"
            # Wrong lengths: extra bytes, missing bytes, no status word.
            faulty.length_delta = 2
            assert bytes(card.transmit(read4).data) == b"\x00\x01\x02\x03\x00\x00"
            faulty.length_delta = -3
            assert bytes(card.transmit(read4).data) == b"\x00"
            faulty.length_delta = -5
            with pytest.raises(errors.DriverDataError):
                card.transmit(read4)
            faulty.length_delta = 0
            # Slow answers.
            faulty.delay = 0.2
            start = time.monotonic()
            assert card.transmit(read4).sw == 0x9000
            assert time.monotonic() - start >= 0.2
            faulty.delay = 0
            # Raising: 6F00.
            faulty.raise_after = faulty.apdus
            assert card.transmit(read4).sw == 0x6F00
            faulty.raise_after = None
            # Mute after N APDUs: every later one times out.
            faulty.mute_after = faulty.apdus + 1
            assert card.transmit(read4).sw == 0x9000
            for _ in range(2):
                with pytest.raises(errors.TimeoutError):
                    card.transmit(read4)
            faulty.mute_after = None
            assert card.transmit(read4).sw == 0x9000


def test_the_faulty_card_wraps_any_card():
    class Plain(VirtualCard):
        atr = ATR_T0

    faulty = FaultyCard(Plain(), mute_after=0)
    assert faulty.atr == ATR_T0
    with sim_reader(power_down_timeout=0) as (reader, sim):
        sim.insert(card=faulty)
        reader.wait_for_card(timeout=5)
        with reader.connect() as card:
            with pytest.raises(errors.TimeoutError):
                card.transmit(b"\x00\x10\x00\x00")
