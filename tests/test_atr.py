"""Tests for scardio.atr, the ISO/IEC 7816-3 ATR parser."""

from __future__ import annotations

import os
import re
from collections import Counter
from functools import reduce
from operator import xor
from typing import Optional

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from scardio.atr import (
    ATRChecksumError,
    ATRError,
    ATRInvalidError,
    ATRTooLongError,
    ATRTruncatedError,
    InterfaceGroup,
    SpecificMode,
    parse_atr,
)


def with_tck(hexstr: str) -> bytes:
    """The bytes of *hexstr* followed by the TCK that makes them valid."""
    body = bytes.fromhex(hexstr)
    return body + bytes([reduce(xor, body[1:], 0)])


# ---------------------------------------------------------------------------
# Input forms


@pytest.mark.parametrize("form", [
    b"\x3b\x02\x14\x50",
    bytearray(b"\x3b\x02\x14\x50"),
    memoryview(b"\x3b\x02\x14\x50"),
    "3B 02 14 50",
    "3b:02:14:50",
    "3B021450",
    "  3B 02\n14\t50  ",
    "0x3B021450",
    "0x3B 0x02 0x14 0x50",
])
def test_input_forms(form: object) -> None:
    atr = parse_atr(form)  # type: ignore[arg-type]
    assert atr.raw == b"\x3b\x02\x14\x50"
    assert bytes(atr) == atr.raw
    assert str(atr) == "3B 02 14 50"
    assert atr.hex("") == "3B021450"


def test_not_bytes_is_type_error() -> None:
    with pytest.raises(TypeError):
        parse_atr(0x3B)  # type: ignore[arg-type]


def test_frozen() -> None:
    atr = parse_atr("3B 00")
    with pytest.raises(AttributeError):
        atr.tck = 1  # type: ignore[misc]
    assert hash(atr) == hash(parse_atr(b"\x3b\x00"))
    assert atr == parse_atr(b"\x3b\x00")


# ---------------------------------------------------------------------------
# Fields


def test_minimal_atr() -> None:
    atr = parse_atr("3B 00")
    assert atr.ts == 0x3B
    assert atr.convention == "direct"
    assert atr.t0 == 0x00
    assert atr.interface == ()
    assert atr.historical == b""
    assert atr.tck is None
    assert atr.protocols == (0,)
    assert atr.default_protocol == 0
    assert atr.protocols_mask() == 1


def test_inverse_convention() -> None:
    atr = parse_atr("3F 02 14 50")
    assert atr.convention == "inverse"
    assert atr.ts == 0x3F
    assert any("inverse convention" in line and "decoded" in line
               for line in atr.describe())


def test_interface_groups_and_historical() -> None:
    # T0: TA1 TB1 TC1 TD1, K=3; TD1 = 0x81: TD2 follows, T=1; TD2 = 0x31: TA3 TB3, T=1
    raw = with_tck("3B F3 96 00 FF 81 31 FE 45 41 42 43")
    atr = parse_atr(raw)
    assert atr.t0 == 0xF3
    assert atr.interface == (
        InterfaceGroup(1, ta=0x96, tb=0x00, tc=0xFF, td=0x81),
        InterfaceGroup(2, td=0x31),
        InterfaceGroup(3, ta=0xFE, tb=0x45),
    )
    assert atr.interface[0].protocol == 1
    assert atr.interface[2].protocol is None
    assert atr.interface[0].as_dict() == {"TA1": 0x96, "TB1": 0x00, "TC1": 0xFF, "TD1": 0x81}
    assert atr.group(3) == atr.interface[2]
    assert atr.group(4) is None and atr.group(0) is None
    assert (atr.ta1, atr.tb1, atr.tc1, atr.td1) == (0x96, 0x00, 0xFF, 0x81)
    assert (atr.ta2, atr.tb2, atr.tc2) == (None, None, None)
    assert atr.historical == b"ABC"
    assert atr.tck == raw[-1]


def test_protocols_t0_implicit_without_td1() -> None:
    assert parse_atr("3B 10 96").protocols == (0,)


def test_protocols_td1_t1_only() -> None:
    atr = parse_atr(with_tck("3B 81 01 AA"))  # TD1 T=1, one historical byte
    assert atr.protocols == (1,)
    assert atr.default_protocol == 1
    assert atr.protocols_mask() == 2


def test_protocols_t0_and_t1() -> None:
    atr = parse_atr(with_tck("3B 80 80 01"))  # TD1 T=0 -> TD2 T=1
    assert atr.protocols == (0, 1)
    assert atr.default_protocol == 0
    assert atr.protocols_mask() == 3


def test_t15_is_not_a_protocol_but_needs_tck() -> None:
    # TD1 T=0 -> TD2 = 0x1F: TA3 global (T=15); TA3 = 0xC3: XI=3, UI = classes A, B
    atr = parse_atr(with_tck("3B 80 80 1F C3"))
    assert atr.protocols == (0,)
    assert atr.tck is not None
    assert atr.clock_stop == "no preference"
    assert atr.classes == ("A (5 V)", "B (3 V)")
    assert parse_atr("3B 00").clock_stop is None
    assert parse_atr("3B 00").classes is None


def test_unsupported_protocol_not_in_mask() -> None:
    atr = parse_atr(with_tck("3B 80 02"))  # TD1 T=2
    assert atr.protocols == (2,)
    assert atr.protocols_mask() == 0


def test_fi_di_from_ta1() -> None:
    atr = parse_atr("3B 10 96")  # FI=9 -> 512 / 5 MHz, DI=6 -> 32
    assert (atr.fi_code, atr.di_code) == (9, 6)
    assert (atr.fi, atr.di, atr.f_max) == (512, 32, 5.0)
    assert not atr.fi_rfu and not atr.di_rfu
    atr = parse_atr("3B 10 18")  # FI=1 -> 372 / 5, DI=8 -> 12
    assert (atr.fi, atr.di, atr.f_max) == (372, 12, 5.0)
    atr = parse_atr("3B 10 A9")  # FI=A -> 768 / 7.5, DI=9 -> 20
    assert (atr.fi, atr.di, atr.f_max) == (768, 20, 7.5)
    atr = parse_atr("3B 10 07")  # FI=0 -> 372 / 4 MHz, DI=7 -> 64
    assert (atr.fi, atr.di, atr.f_max) == (372, 64, 4.0)


def test_fi_di_defaults_without_ta1() -> None:
    atr = parse_atr("3B 00")
    assert (atr.fi_code, atr.di_code) == (1, 1)
    assert (atr.fi, atr.di, atr.f_max) == (372, 1, 5.0)
    assert any("default, TA1 absent" in line for line in atr.describe())


def test_fi_di_rfu_flagged() -> None:
    atr = parse_atr("3B 10 70")  # FI=7 RFU, DI=0 RFU
    assert atr.fi is None and atr.f_max is None and atr.di is None
    assert atr.fi_rfu and atr.di_rfu
    assert any("RFU" in line for line in atr.describe())
    atr = parse_atr("3B 10 1A")  # DI=A RFU only
    assert not atr.fi_rfu and atr.di_rfu and atr.fi == 372


def test_specific_mode() -> None:
    assert parse_atr("3B 00").specific_mode is None
    # TD1 = 0x11: TA2 follows, T=1; TA2 = 0x11: specific T=1, implicit, can change
    atr = parse_atr(with_tck("3B 80 11 11"))
    assert atr.specific_mode == SpecificMode(protocol=1, implicit=True, can_change=True)
    assert atr.default_protocol == 1
    atr = parse_atr(with_tck("3B 80 11 80"))  # specific T=0, explicit, cannot change
    assert atr.specific_mode == SpecificMode(protocol=0, implicit=False, can_change=False)
    assert atr.default_protocol == 0
    assert any("Mode: specific, T=0" in line for line in atr.describe())


def test_extra_guard_time() -> None:
    assert parse_atr("3B 00").extra_guard_time == 0
    assert parse_atr("3B 00").guard_time_etu() == 12
    atr = parse_atr("3B 40 02")  # TC1 = 2
    assert atr.extra_guard_time == 2
    assert atr.guard_time_etu() == 14
    atr = parse_atr("3B 40 FF")  # N = 255 -> minimum
    assert atr.extra_guard_time == 255
    assert atr.guard_time_etu() == 12
    assert atr.guard_time_etu(1) == 11
    assert parse_atr(with_tck("3B C0 FF 01")).guard_time_etu() == 11  # default T=1


def test_t0_waiting_time() -> None:
    assert parse_atr("3B 00").wi == 10
    assert parse_atr("3B 80 40 20").wi == 0x20  # TD1 -> TC2 = 0x20, T=0


def test_t1_parameters_defaults() -> None:
    atr = parse_atr(with_tck("3B 80 01"))
    assert (atr.ifsc, atr.bwi, atr.cwi, atr.error_detection) == (32, 4, 13, "LRC")
    assert not atr.ifsc_invalid


def test_t1_parameters_from_first_t1_group() -> None:
    # TD1 T=1 -> TD2 = 0xF1 (TA3 TB3 TC3 TD3, T=1) -> TD3 = 0x31 (TA4 TB4)
    atr = parse_atr(with_tck("3B 80 81 F1 FE 45 01 31 20 77"))
    assert atr.ifsc == 0xFE
    assert (atr.bwi, atr.cwi) == (4, 5)
    assert atr.error_detection == "CRC"
    text = "\n".join(atr.describe())
    assert "IFSC = 254" in text and "BWI = 4" in text and "CRC" in text


def test_t1_bytes_after_t0_td_are_not_t1() -> None:
    # TD1 T=1 -> TD2 = 0x90 (TA3, TD3; T=0) -> TD3 = 0x11 (TA4; T=1): TA3 is T=0's
    atr = parse_atr(with_tck("3B 80 81 90 AA 11 40"))
    assert atr.ifsc == 0x40


def test_group2_bytes_are_not_t1_parameters() -> None:
    # TD1 = 0x71 announces TA2 TB2 TC2 with T=1; those are global/T=0 bytes
    atr = parse_atr(with_tck("3B 80 71 11 22 33"))
    assert (atr.ifsc, atr.bwi, atr.cwi, atr.error_detection) == (32, 4, 13, "LRC")


def test_ifsc_invalid_values_flagged() -> None:
    assert parse_atr(with_tck("3B 80 81 11 00")).ifsc_invalid
    assert parse_atr(with_tck("3B 80 81 11 FF")).ifsc_invalid
    assert any("(invalid)" in line for line in parse_atr(with_tck("3B 80 81 11 00")).describe())


def test_describe_lines() -> None:
    atr = parse_atr(with_tck("3B F3 96 00 FF 81 31 FE 45 41 42 43"))
    lines = atr.describe()
    assert lines[0].startswith("ATR: 3B F3 96")
    for needle in ("TS  = 0x3B: direct convention", "TA1 = 0x96", "TB1 = 0x00",
                   "TC1 = 0xFF", "TD1 = 0x81", "TD2 = 0x31", "TA3 = 0xFE", "TB3 = 0x45",
                   "Protocols: T=1", "Fi = 512", "Di = 32", "Extra guard time N = 255",
                   '"ABC"', "TCK = 0x"):
        assert any(needle in line for line in lines), needle
    assert all(isinstance(line, str) for line in lines)
    assert any("TCK absent" in line for line in parse_atr("3B 00").describe())
    assert any("T=0 implied" in line for line in parse_atr("3B 00").describe())


# ---------------------------------------------------------------------------
# Errors


def test_error_hierarchy() -> None:
    for cls in (ATRInvalidError, ATRTruncatedError, ATRTooLongError, ATRChecksumError):
        assert issubclass(cls, ATRError)
    assert issubclass(ATRError, ValueError)


@pytest.mark.parametrize("data", [b"", "", "   ", ":"])
def test_empty(data: object) -> None:
    with pytest.raises(ATRInvalidError, match="empty"):
        parse_atr(data)  # type: ignore[arg-type]


def test_not_hex() -> None:
    with pytest.raises(ATRInvalidError, match="not hexadecimal: unexpected 'Z'"):
        parse_atr("3B ZZ")
    with pytest.raises(ATRInvalidError, match=r"odd number of hex digits \(3\)"):
        parse_atr("3B 0")


def test_bad_ts() -> None:
    with pytest.raises(ATRInvalidError, match=r"TS at offset 0 is 0x3A, expected 0x3B") as exc:
        parse_atr("3A 00")
    assert exc.value.offset == 0
    with pytest.raises(ATRInvalidError, match="not decoded"):
        parse_atr("03 00")


def test_truncated_t0() -> None:
    with pytest.raises(ATRTruncatedError, match="T0 missing at offset 1"):
        parse_atr("3B")


def test_truncated_interface_byte() -> None:
    with pytest.raises(ATRTruncatedError,
                       match=r"T0=0x10 announces TA1 at offset 2, but the ATR ends after 2 bytes") as exc:
        parse_atr("3B 10")
    assert exc.value.offset == 2
    with pytest.raises(ATRTruncatedError, match=r"T0=0xE0 announces TD1 at offset 4"):
        parse_atr("3B E0 11 22")
    with pytest.raises(ATRTruncatedError, match=r"TD1=0x81 announces TD2 at offset 3"):
        parse_atr("3B 80 81")
    with pytest.raises(ATRTruncatedError, match=r"TD2=0x21 announces TB3 at offset 4"):
        parse_atr("3B 80 80 21")


def test_truncated_historical() -> None:
    with pytest.raises(ATRTruncatedError,
                       match=r"T0=0x04 announces 4 historical bytes from offset 2, "
                             r"but only 2 are present"):
        parse_atr("3B 04 60 89")
    with pytest.raises(ATRTruncatedError, match="only 1 is present"):
        parse_atr("3B 02 60")


def test_truncated_tck() -> None:
    with pytest.raises(ATRTruncatedError,
                       match=r"TCK missing at offset 4: required because TD indicates T=1") as exc:
        parse_atr("3B 81 01 AA")
    assert exc.value.offset == 4


def test_too_long_trailing_bytes() -> None:
    with pytest.raises(ATRTooLongError,
                       match=r"1 unexpected byte\(s\) after the last historical byte, from offset 4: 11 "
                             r"\(no TCK expected: only T=0 is indicated\)") as exc:
        parse_atr("3B 02 14 50 11")
    assert exc.value.offset == 4
    with pytest.raises(ATRTooLongError, match="after the last interface byte"):
        parse_atr("3B 10 14 50")
    with pytest.raises(ATRTooLongError, match=r"2 unexpected byte\(s\) after TCK, from offset 4: 00 00"):
        parse_atr(with_tck("3B 80 01") + b"\x00\x00")


def test_too_long_over_33_bytes() -> None:
    # four full groups (16 bytes) + 15 historical + TS + T0 + TCK = 34 bytes
    raw = with_tck("3B FF" + " 11 22 33 F1" * 3 + " 11 22 33 01" + " 00" * 15)
    assert len(raw) == 34
    with pytest.raises(ATRTooLongError,
                       match="TCK would be at offset 33, beyond the maximum ATR length of 33 bytes"):
        parse_atr(raw)
    with pytest.raises(ATRTooLongError, match=r"T0=0xFF announces 15 historical bytes from "
                                              r"offset 22, beyond the maximum"):
        parse_atr("3B FF" + " 11 22 33 F1" * 4 + " 11 22 33 00" + " 00" * 11)
    with pytest.raises(ATRTooLongError, match=r"TD7=0xF0 announces TD8 at offset 33, beyond"):
        parse_atr("3B F0" + " 11 22 33 F0" * 8)  # 34 bytes of interface characters
    # any input longer than 33 bytes is rejected one way or another
    with pytest.raises(ATRTooLongError):
        parse_atr(b"\x3b\x0f" + b"\x00" * 32)


def test_maximum_length_accepted() -> None:
    raw = with_tck("3B FE" + " 11 22 33 F1" * 3 + " 11 22 33 00" + " 00" * 14)
    assert len(raw) == 33
    atr = parse_atr(raw)
    assert len(atr.interface) == 4
    assert len(atr.historical) == 14
    assert atr.protocols == (0, 1)


def test_checksum() -> None:
    good = with_tck("3B 80 01")
    bad = good[:-1] + bytes([good[-1] ^ 0x5A])
    with pytest.raises(ATRChecksumError,
                       match=rf"TCK at offset 3 is 0x{bad[-1]:02X}, expected 0x{good[-1]:02X}") as exc:
        parse_atr(bad)
    assert exc.value.expected == good[-1]
    assert exc.value.got == bad[-1]
    assert exc.value.offset == 3


# ---------------------------------------------------------------------------
# Property tests

_BYTE = st.integers(0, 255)


@st.composite
def well_formed_atrs(draw: st.DrawFn) -> tuple[bytes, dict[str, object]]:
    """A random well-formed ATR and the fields that built it."""
    ts = draw(st.sampled_from([0x3B, 0x3F]))
    ngroups = draw(st.integers(0, 4))
    groups: list[InterfaceGroup] = []
    # protocols announced by TD1..TD(n-1); the last group has no TD
    protos = [draw(st.integers(0, 15)) for _ in range(max(ngroups - 1, 0))]
    for i in range(ngroups):
        last = i == ngroups - 1
        ta, tb, tc = (draw(st.none() | _BYTE) for _ in range(3))
        if last and ta is None and tb is None and tc is None:
            ta = draw(_BYTE)  # an announced group has at least one byte
        groups.append(InterfaceGroup(i + 1, ta, tb, tc, None))
    # fill in the TDs now that the next group's presence bits are known
    def ybits(g: InterfaceGroup, has_td: bool) -> int:
        return ((g.ta is not None) | (g.tb is not None) << 1
                | (g.tc is not None) << 2 | has_td << 3)
    built: list[InterfaceGroup] = []
    for i, g in enumerate(groups):
        td = None
        if i < ngroups - 1:
            td = ybits(groups[i + 1], i + 1 < ngroups - 1) << 4 | protos[i]
        built.append(InterfaceGroup(g.index, g.ta, g.tb, g.tc, td))
    historical = draw(st.binary(max_size=15))
    y1 = ybits(built[0], ngroups > 1) if built else 0
    t0 = y1 << 4 | len(historical)
    body = bytearray([ts, t0])
    for g in built:
        body += bytes(b for b in (g.ta, g.tb, g.tc, g.td) if b is not None)
    body += historical
    tck: Optional[int] = None
    if any(protos):
        tck = reduce(xor, body[1:], 0)
        body.append(tck)
    assume(len(body) <= 33)
    offered = {p for p in protos if p != 15} | ({0} if not protos else set())
    return bytes(body), {
        "ts": ts, "t0": t0, "interface": tuple(built), "historical": historical,
        "tck": tck, "protocols": tuple(sorted(offered)),
        "convention": "direct" if ts == 0x3B else "inverse",
    }


@settings(max_examples=400)
@given(well_formed_atrs())
def test_roundtrip_well_formed(case: tuple[bytes, dict[str, object]]) -> None:
    raw, fields = case
    atr = parse_atr(raw)
    assert atr.raw == raw
    for name, value in fields.items():
        assert getattr(atr, name) == value, name
    assert parse_atr(atr.hex()) == atr
    assert parse_atr(atr.hex(":")) == atr
    lines = atr.describe()
    assert lines and all(isinstance(line, str) for line in lines)
    assert atr.protocols_mask() in (0, 1, 2, 3)


@settings(max_examples=300)
@given(well_formed_atrs(), st.integers(1, 255))
def test_corrupted_checksum_detected(case: tuple[bytes, dict[str, object]],
                                     flip: int) -> None:
    raw, fields = case
    assume(fields["tck"] is not None)
    mutated = bytearray(raw)
    mutated[-1] ^= flip  # only the TCK changes: the structure stays the same
    with pytest.raises(ATRChecksumError):
        parse_atr(bytes(mutated))


@settings(max_examples=300)
@given(well_formed_atrs())
def test_prefixes_are_truncated(case: tuple[bytes, dict[str, object]]) -> None:
    raw, _ = case
    for cut in range(1, len(raw)):
        with pytest.raises(ATRTruncatedError):
            parse_atr(raw[:cut])


@settings(max_examples=1000)
@given(st.binary(max_size=40))
def test_random_bytes_only_raise_atr_error(data: bytes) -> None:
    try:
        atr = parse_atr(data)
    except ATRError as exc:
        assert str(exc)
    else:
        assert atr.raw == data and len(data) <= 33
        atr.describe()


@settings(max_examples=1000)
@given(st.sampled_from([b"\x3b", b"\x3f"]), st.binary(max_size=36))
def test_random_tails_only_raise_atr_error(ts: bytes, tail: bytes) -> None:
    try:
        atr = parse_atr(ts + tail)
    except ATRError as exc:
        assert str(exc)
    else:
        atr.describe()
        atr.guard_time_etu()
        atr.protocols_mask()


@settings(max_examples=300)
@given(st.sampled_from([b"\x3b", b"\x3f"]), st.binary(min_size=33, max_size=60))
def test_longer_than_33_bytes_is_too_long(ts: bytes, tail: bytes) -> None:
    with pytest.raises(ATRTooLongError):
        parse_atr(ts + tail)


@settings(max_examples=300)
@given(st.text(max_size=80))
def test_random_text_only_raises_atr_error(text: str) -> None:
    try:
        parse_atr(text)
    except ATRError:
        pass


# ---------------------------------------------------------------------------
# Corpus: the ATR list of Debian's pcsc-tools (GPL; read in place, never copied)

SMARTCARD_LIST = "/usr/share/pcsc/smartcard_list.txt"
_LITERAL = re.compile(r"(?:[0-9A-Fa-f]{2} )*[0-9A-Fa-f]{2}")


@pytest.mark.skipif(not os.path.exists(SMARTCARD_LIST),
                    reason=f"{SMARTCARD_LIST} is absent (install Debian's pcsc-tools package)")
def test_smartcard_list_corpus() -> None:
    """Every literal ATR of pcsc-tools' smartcard_list.txt parses or is
    rejected with a precise reason.

    Lines starting with 3B or 3F are ATRs; those with regular-expression
    syntax (``..``, ``[...]``, ``6.``) are patterns and are skipped.  Measured
    with pcsc-tools 1.6.2 (Debian 12, list dated 2023): 4,041 ATR lines,
    238 patterns, 3,803 literals: 3,711 parsed (97.6 %), 42 truncated
    (historical bytes or TCK missing), 33 too long (bytes after the last
    announced one, mostly a TCK on a T=0-only ATR), 17 checksum errors,
    0 invalid.  The bounds below leave room for newer lists.
    """
    tally: Counter[str] = Counter()
    category = {
        ATRTruncatedError: "truncated",
        ATRTooLongError: "too long",
        ATRChecksumError: "checksum",
        ATRInvalidError: "invalid",
    }
    with open(SMARTCARD_LIST, encoding="utf-8", errors="replace") as f:
        for line in f:
            if not line.startswith(("3B", "3F")):
                continue
            text = line.strip()
            if not _LITERAL.fullmatch(text):
                tally["pattern"] += 1
                continue
            tally["literal"] += 1
            try:
                atr = parse_atr(text)
            except ATRError as exc:
                tally[category[type(exc)]] += 1
                message = str(exc)
                assert "offset" in message, message
                assert exc.offset is not None, message
            else:
                tally["parsed"] += 1
                assert atr.hex() == text.upper()
                assert atr.describe()
    print("smartcard_list.txt tally:", dict(tally))
    literal = tally["literal"]
    assert literal > 1000
    assert tally["pattern"] > 0
    assert (tally["parsed"] + tally["truncated"] + tally["too long"]
            + tally["checksum"] + tally["invalid"]) == literal
    assert tally["parsed"] > 0.90 * literal
    assert tally["invalid"] == 0  # every line starts with a valid TS
    for name in ("truncated", "too long", "checksum"):
        assert tally[name] < 0.05 * literal, name


def test_parse_atr_cached_returns_the_same_parse_and_stays_bounded():
    from scardio import atr as atr_module
    raw = bytes.fromhex("3BF81300008131FE457363617264696F31B0")
    first = atr_module.parse_atr_cached(raw)
    assert first == atr_module.parse_atr(raw)
    assert atr_module.parse_atr_cached(bytearray(raw)) is first  # parsed once
    for i in range(atr_module.ATR_CACHE_SIZE * 2):  # many other cards
        atr_module.parse_atr_cached(bytes([0x3B, 0x01, i & 0xFF]))
    assert atr_module._parse_cached.cache_info().currsize <= atr_module.ATR_CACHE_SIZE


def test_parse_atr_cached_raises_like_parse_atr_on_a_bad_atr():
    from scardio.atr import ATRError, parse_atr_cached
    with pytest.raises(ATRError):
        parse_atr_cached(b"\x3B\x01")  # one historical byte announced, none there
