"""scardio.atr_list: parsing a list in pcsc-tools' format (a small list of our
own), matching ATRs against its patterns, caching; and the real list when
pcsc-tools installed one (read from the system at run time)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from helpers_reader import SRC
from scardio import atr_list
from scardio.atr_list import ATRList, find_atr_list, load_atr_list, lookup_atr
from scardio.sim import ATR_T0, ATR_T1

# A list of our own in the same format (tab-indented descriptions).
FIXTURE = "\n".join([
    "# a comment line",
    "",
    "3B F8 13 00 00 81 31 FE 45 73 63 61 72 64 69 6F 31 B0",
    "\tscardio simulated T=1 card",
    "\tsecond description line",
    "3B 68 00 00 73 63 61 72 64 69 6F 3.",
    "\tscardio simulated card, any model digit",
    "3B 68 00 00 73 63 61 72 64 69 6F [03]0",
    "\tscardio simulated T=0 card (class)",
    "3B 02 .. ..",
    "\tany two historical bytes",
    "3b 02 aa bb",
    "\tlower-case pattern",
    "3B 9F .*",
    "\tanything after 3B 9F",
    "3B 04 11 22 33 44",
    "3B 05 [12",
    "\tbroken expression: skipped",
    "3B 03 01 02 03",
    "\tthree historical bytes",
    "3B 81 80 01 81",
    "\ta T=1 ATR with a wrong check byte",
    "",
]) + "\n"


@pytest.fixture
def fixture_list(tmp_path):
    path = tmp_path / "smartcard_list.txt"
    path.write_text(FIXTURE)
    return str(path)


def descriptions(matches):
    return [d for m in matches for d in m.descriptions]


def test_parse_the_format():
    lst = ATRList(FIXTURE, "fixture")
    assert len(lst) == 8  # no descriptions: ignored; broken pattern: skipped
    assert [(line, pat) for line, pat, _ in lst.skipped] == [(17, "3B 05 [12")]
    first = lst.match(ATR_T1)[0]
    assert first.pattern == "3B F8 13 00 00 81 31 FE 45 73 63 61 72 64 69 6F 31 B0"
    assert first.descriptions == ("scardio simulated T=1 card", "second description line")
    assert first.line == 3 and first.as_dict()["line"] == 3


def test_crlf_and_blank_lines():
    lst = ATRList(FIXTURE.replace("\n", "\r\n"))
    assert descriptions(lst.match("3B 03 01 02 03")) == ["three historical bytes"]


@pytest.mark.parametrize("atr, expected", [
    (ATR_T0, ["scardio simulated card, any model digit",
              "scardio simulated T=0 card (class)"]),
    ("3B 68 00 00 73 63 61 72 64 69 6F 31", ["scardio simulated card, any model digit"]),
    ("3B 68 00 00 73 63 61 72 64 69 6F 00", ["scardio simulated T=0 card (class)"]),
    ("3B 02 12 34", ["any two historical bytes"]),
    ("3B 02 AA BB", ["any two historical bytes", "lower-case pattern"]),
    ("3b:02:aa:bb", ["any two historical bytes", "lower-case pattern"]),
    ("3B 9F 01 02 03", ["anything after 3B 9F"]),
    ("3B 03 01 02 03", ["three historical bytes"]),
    ("3B 03 01 02", []),            # a prefix of a pattern does not match
    ("3B 03 01 02 03 04", []),      # nor does a longer ATR
    ("3B 02 12", []),               # ".." stands for a whole byte
    ("3B 68 00 00 73 63 61 72 64 69 6F 4F", []),  # "3." needs a 3 first
])
def test_patterns(atr, expected):
    assert descriptions(ATRList(FIXTURE).match(atr)) == expected


def test_bytes_and_text_agree_and_bad_text_is_typed():
    lst = ATRList(FIXTURE)
    assert lst.match(bytes.fromhex("3B0212 34")) == lst.match("3b021234")
    with pytest.raises(ValueError, match="invalid character"):
        lst.match("3B 0Z")


def test_load_caches_until_the_file_changes(fixture_list):
    first = load_atr_list(fixture_list)
    assert load_atr_list(fixture_list) is first
    with open(fixture_list, "a") as f:
        f.write("3B 01 42\n\tadded later\n")
    st = os.stat(fixture_list)
    os.utime(fixture_list, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    again = load_atr_list(fixture_list)
    assert again is not first and descriptions(again.match("3B 01 42")) == ["added later"]
    assert descriptions(lookup_atr("3B 01 42", fixture_list)) == ["added later"]
    with pytest.raises(OSError):
        load_atr_list(fixture_list + ".missing")


def test_find_atr_list(tmp_path, monkeypatch):
    home = tmp_path / "home"
    (home / ".cache").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    assert find_atr_list(("~/.cache/smartcard_list.txt", str(tmp_path / "none"))) is None
    (home / ".cache" / "smartcard_list.txt").write_text(FIXTURE)
    assert find_atr_list(("~/.cache/smartcard_list.txt",)) == \
        str(home / ".cache" / "smartcard_list.txt")
    monkeypatch.setattr(atr_list, "DEFAULT_LOCATIONS", (str(tmp_path / "none"),))
    assert find_atr_list() is None and lookup_atr(ATR_T1) == []


def test_nothing_is_read_until_a_lookup():
    code = ("import scardio, scardio.cli, scardio.atr_list as a; "
            "assert not a._cache, a._cache; print('ok')")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env=dict(os.environ, PYTHONPATH=SRC), timeout=60)
    assert p.returncode == 0 and p.stdout.strip() == "ok", p.stderr


# -- the list pcsc-tools installs (never copied: read here at run time) --------

def _system_list():
    path = find_atr_list()
    if path is None:
        pytest.skip("no smartcard_list.txt installed (pcsc-tools)")
    return path


def _entries(path):
    """(pattern, descriptions) pairs, read independently of the module."""
    entries, current = [], None
    with open(path, encoding="utf-8", errors="replace") as f:
        for raw in f:
            line = raw.rstrip("\r\n")
            if not line.strip() or line.startswith("#"):
                continue
            if line[0] == "\t":
                if current is not None:
                    current[1].append(line.strip())
            else:
                current = (line.strip(), [])
                entries.append(current)
    return [(p, d) for p, d in entries if d]


def test_system_list_exact_entry():
    path = _system_list()
    pattern, descs = next((p, d) for p, d in _entries(path)
                          if re.fullmatch(r"[0-9A-F]{2}( [0-9A-F]{2})+", p))
    found = lookup_atr(bytes.fromhex(pattern.replace(" ", "")))
    assert any(m.pattern == pattern and list(m.descriptions) == descs for m in found)


def test_system_list_wildcard_entry():
    path = _system_list()
    pattern, descs = next((p, d) for p, d in _entries(path)
                          if ".." in p and re.fullmatch(r"[0-9A-F. ]+", p))
    atr = bytes.fromhex(pattern.replace("..", "00").replace(".", "0").replace(" ", ""))
    found = lookup_atr(atr, path)
    assert any(m.pattern == pattern and list(m.descriptions) == descs for m in found)
    lst = load_atr_list(path)
    assert len(lst) + len(lst.skipped) == len(_entries(path))


# -- lookups give the answers of a full parse ----------------------------------
# The list is searched per lookup (by the hex bytes a pattern starts with),
# not parsed whole.  The reference below is the full parse: every entry read,
# plain patterns compared as normalised text, the others compiled.

def _reference_parse(text):
    """[(pattern, descriptions, line, plain text or compiled or None)]"""
    entries, pattern, start, descs = [], None, 0, []

    def add():
        if pattern is None or not descs:
            return
        normal = " ".join(pattern.upper().split())
        if re.fullmatch(r"[0-9A-F]{2}( [0-9A-F]{2})*", normal):
            how = normal
        else:
            try:
                how = re.compile(pattern, re.IGNORECASE)
            except re.error:
                how = None
        entries.append((pattern, tuple(descs), start, how))

    for number, raw in enumerate(text.splitlines(), 1):
        if raw.startswith("#") or not raw.strip():
            continue
        if raw[0] in " \t":
            if pattern is not None:
                descs.append(raw.strip())
            continue
        add()
        pattern, start, descs = raw.strip(), number, []
    add()
    return entries


def _reference_match(entries, atr):
    text = bytes(atr).hex(" ").upper()
    return [(p, d, line) for p, d, line, how in entries
            if (how == text if isinstance(how, str)
                else how is not None and how.fullmatch(text) is not None)]


def _found(lst, atr):
    return [(m.pattern, m.descriptions, m.line) for m in lst.match(atr)]


def _concrete(pattern, rnd):
    """An ATR a pattern may stand for: its literal pairs, random bytes for
    the rest."""
    return bytes(int(tok, 16) if re.fullmatch(r"[0-9A-Fa-f]{2}", tok) else rnd.randrange(256)
                 for tok in pattern.split())


def _near_misses(atr, rnd):
    yield atr
    if atr:
        yield atr[:-1]
        flipped = bytearray(atr)
        flipped[rnd.randrange(len(atr))] ^= 1 << rnd.randrange(8)
        yield bytes(flipped)
        yield atr[:rnd.randrange(len(atr))]
    yield atr + bytes([rnd.randrange(256)])


# Edge cases of the format and of the syntax the prefix search must not miss.
EDGES = "\n".join([
    "3b  8f\t80 01 ",           # plain once normalised: case, runs of blanks
    "\tnormalised plain",
    "3B 8F 80 0.",
    "\tlast nibble varies",
    "3B 8F *",                    # the run's last space is quantified
    "\tspace quantified",
    "3B 02|3F 01",                # alternation: another first byte matches
    "\talternation",
    "(?i)3b 03 aa",
    "\tinline flag",
    "3B 04 (?=AA)AA BB",
    "\tlookahead",
    "3[BF] 05 ..",
    "\tclass in the first byte",
    ".. 06",
    "\twildcard first",
    "3B 07 ..",                   # described after a comment and a blank line
    "# a comment between entries",
    "\xa0",                       # blank (a non-breaking space): not a pattern line
    "\tdescribed late",
    "3B 0C ..",
    "\t",                         # a blank indented line: no description, no entry
    "\xa03B 08",                  # starts with other white space: a pattern line
    "\tnbsp start",
    "3B 09 \ufb00",               # upper() makes it 3B 09 FF: plain
    "\tligature",
    "3B 0A [12",
    "\tbroken: skipped",
    " ".join(["3B"] + ["%02X" % i for i in range(44)]),  # longer than any ATR
    "\t45 bytes",
    " ".join(["3B"] + ["%02X" % i for i in range(41)] + [".."] * 3),
    "\t45 bytes, 3 wildcards",
    "3b 0d .a",                   # wildcards only, lower case: compared unparsed
    "\tdots, lower case",
    "3B  0E ..",                  # two spaces: no ATR has them
    "\ttwo spaces",
    "3B 0B 01",
    "# comment inside",
    "",
    "\tafter a comment and a blank line",
    "  indented description with spaces",
]) + "\n"

EDGE_ATRS = ["3B 8F 80 01", "3B 8F 80 0A", "3B 8F 80", "3B 8F", "3B", "3B 02", "3F 01",
             "3B 03 AA", "3B 04 AA BB", "3F 05 00", "3A 05 00", "12 06", "3B 07 00",
             "3B 08", "3B 0C 00", "3B 09 FF", "3B 0A 01", "3B 0B 01", "3B 0D 1A", "3B 0D 1B", "3B 0E 00", "",
             " ".join(["3B"] + ["%02X" % i for i in range(44)]),
             " ".join(["3B"] + ["%02X" % i for i in range(41)] + ["FF", "00", "01"]),
             " ".join(["3B"] + ["%02X" % i for i in range(41)] + ["FF", "00"]),
             " ".join(["3B"] + ["%02X" % i for i in range(45)])]


@pytest.mark.parametrize("breaks", ["\n", "\r\n", "\r", "\u2028"])
def test_edge_cases_match_the_full_parse(breaks):
    text = EDGES.replace("\n", breaks)
    ref = _reference_parse(text)
    lst = ATRList(text)
    found_any = 0
    for hex_atr in EDGE_ATRS:
        atr = bytes.fromhex(hex_atr)
        assert _found(lst, atr) == _reference_match(ref, atr), hex_atr
        found_any += bool(_reference_match(ref, atr))
    assert found_any >= 15  # the cases above really match something
    assert len(lst) == sum(1 for e in ref if e[3] is not None)
    assert [line for line, _, _ in lst.skipped] == [e[2] for e in ref if e[3] is None]


def test_every_system_list_entry_matches_as_the_full_parse():
    import random
    path = _system_list()
    with open(path, encoding="utf-8", errors="replace") as f:
        text = f.read()
    ref = _reference_parse(text)
    lst = ATRList(text, path)
    rnd = random.Random(12)
    atrs = [_concrete(p, rnd) for p, _, _, _ in ref]  # every entry
    atrs += [near for atr in rnd.sample(atrs, 200) for near in _near_misses(atr, rnd)]
    atrs += [bytes([0x3B] + [rnd.randrange(256) for _ in range(rnd.randrange(1, 33))])
             for _ in range(200)]
    matched = 0
    for atr in atrs:
        expected = _reference_match(ref, atr)
        assert _found(lst, atr) == expected, atr.hex(" ")
        matched += bool(expected)
    assert matched >= len(ref) * 0.9  # the concrete ATRs do match their entries
    assert len(lst) == sum(1 for e in ref if e[3] is not None)
    assert lst.skipped == [(line, p, lst.skipped[i][2]) for i, (p, _, line, _) in
                           enumerate(e for e in ref if e[3] is None)]


def test_a_lookup_reads_only_a_few_entries():
    # the point of the search: a lookup compiles the entries its ATR may
    # match, not every pattern of the list
    path = _system_list()
    with open(path, encoding="utf-8", errors="replace") as f:
        lst = ATRList(f.read(), path)
    lst.match(bytes.fromhex("3B8F8001804F0CA000000306030001000000006A"))
    assert 0 < len(lst._entries) < 200
