"""Status words explained (ISO/IEC 7816-4 section 5.1.3): every group of the
standard, its specific SW2 values, the ones that carry a number, group-level
fallbacks, proprietary and unknown SW1; Response.describe(); the CLI."""

from __future__ import annotations

import json

import pytest

from helpers_reader import run_cli
from scardio import status_words as swm
from scardio.card import Response
from scardio.status_words import describe_status_word, lookup_status_word

# The standard's groups by SW1, with their category (written out here, not
# read from the module, so that a table edit cannot pass by itself).
ISO_GROUPS = {
    0x61: swm.NORMAL, 0x90: swm.NORMAL,
    0x62: swm.WARNING, 0x63: swm.WARNING,
    0x64: swm.EXECUTION_ERROR, 0x65: swm.EXECUTION_ERROR, 0x66: swm.EXECUTION_ERROR,
    0x67: swm.CHECKING_ERROR, 0x68: swm.CHECKING_ERROR, 0x69: swm.CHECKING_ERROR,
    0x6A: swm.CHECKING_ERROR, 0x6B: swm.CHECKING_ERROR, 0x6C: swm.CHECKING_ERROR,
    0x6D: swm.CHECKING_ERROR, 0x6E: swm.CHECKING_ERROR, 0x6F: swm.CHECKING_ERROR,
}
# Groups where only SW2 00 is standard (the rest is the issuer's).
ONLY_00 = {0x67, 0x6B, 0x6D, 0x6E, 0x6F, 0x90}


@pytest.mark.parametrize("sw1", sorted(ISO_GROUPS), ids=lambda v: f"{v:02X}")
def test_every_iso_group_is_covered(sw1):
    for sw2 in range(256):
        st = lookup_status_word(sw1, sw2)
        assert (st.sw1, st.sw2) == (sw1, sw2)
        assert st.meaning and "unknown status word" not in st.meaning
        if sw1 in ONLY_00 and sw2:
            assert st.category == swm.PROPRIETARY and not st.specific
            assert f"{sw1:02X} 00" in st.meaning, st
        else:
            assert st.category == ISO_GROUPS[sw1], st
        assert str(st) == f"{sw1:02X} {sw2:02X}: {st.meaning}"


@pytest.mark.parametrize("sw, meaning", [
    (0x9000, "success"),
    (0x6200, "no information given"),
    (0x6281, "part of the returned data may be corrupted"),
    (0x6282, "end of file or record reached before Ne bytes were read"),
    (0x6283, "selected file deactivated"),
    (0x6284, "file control information not formatted"),
    (0x6285, "selected file in termination state"),
    (0x6286, "no input data available from a sensor"),
    (0x6300, "no information given"),
    (0x6381, "file filled up by the last write"),
    (0x6400, "execution error"),
    (0x6401, "immediate response required by the card"),
    (0x6500, "no information given"),
    (0x6581, "memory failure"),
    (0x6700, "wrong length"),
    (0x6881, "logical channel not supported"),
    (0x6882, "secure messaging not supported"),
    (0x6883, "last command of the chain expected"),
    (0x6884, "command chaining not supported"),
    (0x6900, "command not allowed"),
    (0x6981, "command incompatible with the file structure"),
    (0x6982, "security status not satisfied"),
    (0x6983, "authentication method blocked"),
    (0x6984, "reference data not usable"),
    (0x6985, "conditions of use not satisfied"),
    (0x6986, "command not allowed (no current EF)"),
    (0x6987, "expected secure messaging data objects missing"),
    (0x6988, "incorrect secure messaging data objects"),
    (0x6A80, "incorrect parameters in the command data field"),
    (0x6A81, "function not supported"),
    (0x6A82, "file or application not found"),
    (0x6A83, "record not found"),
    (0x6A84, "not enough memory space in the file"),
    (0x6A85, "Nc inconsistent with the TLV structure"),
    (0x6A86, "incorrect parameters P1-P2"),
    (0x6A87, "Nc inconsistent with parameters P1-P2"),
    (0x6A88, "referenced data or reference data not found"),
    (0x6A89, "file already exists"),
    (0x6A8A, "DF name already exists"),
    (0x6B00, "wrong parameters P1-P2"),
    (0x6D00, "instruction code not supported or invalid"),
    (0x6E00, "class not supported"),
    (0x6F00, "no precise diagnosis"),
], ids=lambda v: f"{v:04X}" if isinstance(v, int) else "")
def test_specific_codes(sw, meaning):
    st = lookup_status_word(sw)
    assert meaning in st.meaning and st.specific, st
    assert "no specific meaning" not in st.meaning
    assert lookup_status_word(sw >> 8, sw & 0xFF) == st


@pytest.mark.parametrize("sw, text", [
    (0x6110, "61 10: 16 bytes available"),
    (0x6101, "61 01: 1 bytes available"),
    (0x61FF, "61 FF: 255 bytes available"),
    (0x6100, "61 00: 256 or more bytes available"),
    (0x6C20, "6C 20: wrong Le: 32 bytes available (send again with Le 20)"),
    (0x6C00, "6C 00: wrong Le: 256 bytes available"),
    (0x63C0, "63 C0: counter 0"),
    (0x63C3, "63 C3: counter 3"),
    (0x63CF, "63 CF: counter 15"),
    (0x6202, "62 02: triggering by the card"),
    (0x6280, "62 80: triggering by the card"),
    (0x6402, "64 02: triggering by the card"),
    (0x6480, "64 80: triggering by the card"),
])
def test_codes_that_carry_a_number(sw, text):
    st = lookup_status_word(sw)
    assert str(st).startswith(text) and st.specific, st


@pytest.mark.parametrize("sw, group", [
    (0x6A99, "wrong parameters P1-P2"),
    (0x6A00 + 0x8B, "wrong parameters P1-P2"),
    (0x6201, "warning, non-volatile memory unchanged"),
    (0x6290, "warning, non-volatile memory unchanged"),
    (0x6312, "warning, non-volatile memory possibly changed"),
    (0x63D0, "warning, non-volatile memory possibly changed"),
    (0x6481, "execution error, non-volatile memory unchanged"),
    (0x6501, "execution error, non-volatile memory changed"),
    (0x6600, "security-related issue"),
    (0x6612, "security-related issue"),
    (0x6801, "function in CLA not supported"),
    (0x6999, "command not allowed"),
])
def test_group_fallback_for_unknown_sw2(sw, group):
    st = lookup_status_word(sw)
    assert not st.specific
    assert str(st) == (f"{sw >> 8:02X} {sw & 0xFF:02X}: {group} (SW2 {sw & 0xFF:02X}: "
                       "no specific meaning in ISO 7816-4)")


@pytest.mark.parametrize("sw", [0x6701, 0x6B12, 0x6DFF, 0x6E01, 0x6F42, 0x9001])
def test_sw2_beyond_00_is_proprietary_in_single_value_groups(sw):
    st = lookup_status_word(sw)
    assert st.category == swm.PROPRIETARY and not st.specific
    assert "proprietary" in st.meaning and f"{sw >> 8:02X} 00" in st.meaning


@pytest.mark.parametrize("sw", [0x9100, 0x9210, 0x9F20, 0x98FF])
def test_9x_other_than_9000_is_proprietary(sw):
    st = lookup_status_word(sw)
    assert st.category == swm.PROPRIETARY and "proprietary" in st.meaning


@pytest.mark.parametrize("sw1", [0x00, 0x12, 0x5F, 0x70, 0x8F, 0xA0, 0xFF])
def test_sw1_outside_the_iso_groups_is_unknown(sw1):
    st = lookup_status_word(sw1, 0x00)
    assert st.category == swm.UNKNOWN and not st.specific
    assert st.meaning.startswith("unknown status word") and f"SW1 {sw1:02X}" in st.meaning


def test_60_is_a_procedure_byte_not_a_status_word():
    st = lookup_status_word(0x60, 0x00)
    assert st.category == swm.UNKNOWN and "procedure byte" in st.meaning


def test_every_sw1_has_an_answer_and_bad_values_are_typed():
    for sw1 in range(256):
        assert lookup_status_word(sw1, 0x00).category in swm.CATEGORIES
    for bad in [(0x100, 0), (0x90, 0x100), (-1, 0), (0x10000, None), (-1, None)]:
        with pytest.raises(ValueError, match="0..255|0000..FFFF"):
            lookup_status_word(*bad)


def test_response_describe_and_as_dict():
    r = Response(b"\x01", 0x6A, 0x82)
    assert r.describe() == "6A 82: file or application not found"
    assert r.status_word.category == swm.CHECKING_ERROR
    d = r.as_dict()
    assert d["meaning"] == "file or application not found"
    assert d["category"] == "checking error" and d["sw"] == "6A82"
    assert Response(b"", 0x90, 0x00).describe() == "90 00: success"
    assert describe_status_word(0x6A82) == r.describe()


def test_cli_apdu_prints_the_meaning(tmp_path):
    conf = tmp_path / "reader.conf.d"
    conf.mkdir()
    select_ok = "00A4040C08F07363617264696F"
    select_missing = "00A4040C05A000000003"
    no_such_ins = "00FF0000"
    p = run_cli("--reader-conf", str(conf), "--sim", "1", "--insert", "apdu", "0",
                select_ok, select_missing, no_such_ins)
    assert p.returncode == 0, p.stderr
    replies = [ln for ln in p.stdout.splitlines() if ln.startswith("< ")]
    assert len(replies) == 3
    assert replies[0].startswith("< SW=9000: success  (")
    assert replies[1].startswith("< SW=6A82: file or application not found  (")
    assert replies[2].startswith("< SW=6D00: instruction code not supported or invalid  (")
    p = run_cli("--reader-conf", str(conf), "--sim", "1", "--insert", "--json", "apdu", "0",
                select_ok, select_missing)
    assert p.returncode == 0, p.stderr
    rs = json.loads(p.stdout)["responses"]
    assert [(r["sw"], r["meaning"], r["category"]) for r in rs] == [
        ("9000", "success", "normal processing"),
        ("6A82", "file or application not found", "checking error")]
