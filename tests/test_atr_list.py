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
