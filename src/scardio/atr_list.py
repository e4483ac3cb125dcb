"""Which card an ATR belongs to, from a list in pcsc-tools' format.

pcsc-tools installs such a list as ``smartcard_list.txt`` (it is GPL data:
scardio reads it from the system at run time and ships none of it).  The
format: an ATR pattern on a line of its own, then one or more description
lines indented with a tab; ``#`` starts a comment line.  A pattern is the
ATR as upper-case hex pairs separated by single spaces, where regular
expression syntax stands in for bytes that vary: ``..`` any byte, ``3.``
any low nibble, ``0[1-5]`` a class, ``.*`` anything.  It must match the
whole ATR.

:func:`lookup_atr` finds the installed list itself (:data:`DEFAULT_LOCATIONS`,
first one present) unless given a file.  A list is read once, on the first
lookup, and kept until the file changes; a lookup reads and compiles only
the entries whose leading bytes fit the ATR.
"""

from __future__ import annotations

import os
import re
import threading
from dataclasses import dataclass
from typing import Optional, Union

from .apdu import parse_hex

__all__ = ["ATRMatch", "ATRList", "DEFAULT_LOCATIONS", "find_atr_list", "load_atr_list",
           "lookup_atr", "atr_text"]

#: Where pcsc-tools' list is looked for, in order: the per-user copies its
#: update script downloads, then the system-wide installs (Debian and most
#: Linux distributions, /usr/local and Homebrew builds).
DEFAULT_LOCATIONS: tuple[str, ...] = (
    "~/.cache/smartcard_list.txt",
    "~/.smartcard_list.txt",
    "/usr/share/pcsc/smartcard_list.txt",
    "/usr/local/share/pcsc/smartcard_list.txt",
    "/opt/homebrew/share/pcsc/smartcard_list.txt",
)

_PLAIN = re.compile(r"[0-9A-F]{2}( [0-9A-F]{2})*")
# Patterns of hex digits, spaces and "." only: as an expression each
# character matches one of the ATR's (a digit in either case, "." any), so
# they compare character by character without being compiled.
_DOTS_ONLY = re.compile(r"[0-9A-Fa-f. ]*")

# Line boundaries str.splitlines() knows besides "\n"
_OTHER_BREAKS = "\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
# Regular-expression syntax that can make a pattern match an ATR that does
# not start with the pattern's leading bytes (alternation, inline flags,
# lookarounds): lines with it are tried on every lookup.
_ANYWHERE = ("|", "(?")
# An ATR's leading bytes a lookup searches for, at most (ATRs have 33)
_MAX_PREFIX_PAIRS = 40


@dataclass(frozen=True)
class ATRMatch:
    """One entry of the list that matches: its pattern and descriptions."""
    pattern: str
    descriptions: tuple[str, ...]
    line: int  # of the pattern, 1-based

    def as_dict(self) -> dict[str, object]:
        return {"pattern": self.pattern, "descriptions": list(self.descriptions),
                "line": self.line}


def atr_text(atr: Union[bytes, bytearray, memoryview]) -> str:
    """The form the list's patterns match: "3B 8F 80 01 ..."."""
    return bytes(atr).hex(" ").upper()


class _Entry:
    """One entry, read on first use: plain patterns (hex only) compare as
    text, those with "." only as wildcards character by character, the
    others are compiled as regular expressions."""

    __slots__ = ("start", "pattern", "descriptions", "plain", "dots", "regex", "error",
                 "_match")

    def __init__(self, start: int, pattern: str, descriptions: tuple[str, ...]) -> None:
        self.start = start
        self.pattern = pattern
        self.descriptions = descriptions
        normal = " ".join(pattern.upper().split())
        self.plain: Optional[str] = normal if _PLAIN.fullmatch(normal) else None
        self.dots: Optional[str] = None
        self.regex: Optional["re.Pattern[str]"] = None
        self.error: Optional[str] = None
        self._match: Optional[ATRMatch] = None
        if self.plain is None and _DOTS_ONLY.fullmatch(pattern):
            self.dots = pattern.upper()
        elif self.plain is None:
            try:
                self.regex = re.compile(pattern, re.IGNORECASE)
            except re.error as exc:
                self.error = str(exc)

    def matches(self, text: str) -> bool:
        if self.plain is not None:
            return self.plain == text
        if self.dots is not None:
            return len(self.dots) == len(text) and \
                all(p == c or p == "." for p, c in zip(self.dots, text))
        return self.regex is not None and self.regex.fullmatch(text) is not None

    def line(self, list_text: str) -> int:
        return list_text.count("\n", 0, self.start) + 1

    def atr_match(self, list_text: str) -> ATRMatch:
        if self._match is None:
            self._match = ATRMatch(self.pattern, self.descriptions, self.line(list_text))
        return self._match


def _prefix_search(text: str) -> "re.Pattern[str]":
    """Finds the pattern lines of a list that ATR `text` ("3B 8F ...") may
    match, by their leading run of whole hex pairs each followed by a space
    (any case): those whose run is a prefix of the ATR.

    An entry outside them cannot match: a plain pattern starting with such a
    run normalises to text starting with it, and a regular expression without
    alternation or "(?" whose first characters are literal pairs followed by
    spaces matches only text starting with those pairs (in upper case, as
    IGNORECASE compares hex letters)."""
    pairs = [_literal(pair) + " " for pair in text.split()[:_MAX_PREFIX_PAIRS]]
    chain = ""
    for pair in reversed(pairs):
        chain = f"(?:{pair}{chain})?"
    longest_run = chain + r"(?![0-9A-Fa-f]{2} )"
    if len(pairs) == _MAX_PREFIX_PAIRS:  # a longer run may match a longer ATR
        longest_run = f"(?:{longest_run}|{''.join(pairs)})"
    return re.compile(r"\n(?![#\t \n])" + longest_run)


def _literal(pair: str) -> str:
    """A hex pair as an expression matching it in either case."""
    return "".join(f"[{c}{c.lower()}]" if c.isalpha() else c for c in pair)


class ATRList:
    """A parsed list.  Nothing is parsed up front: a lookup searches the text
    for the pattern lines the ATR may match (by the hex bytes a pattern
    starts with, and those that start with a wildcard) and reads and
    compiles only those, once; so a lookup costs a scan of the text and a
    few entries, not the whole list."""

    def __init__(self, text: str, path: Optional[str] = None) -> None:
        self.path = path
        if any(c in text for c in _OTHER_BREAKS):
            text = "\n".join(text.splitlines())  # the same lines, one kind of break
        # every line, the first one included, starts after a "\n"
        self._text = "\n" + text
        self._entries: dict[int, Optional[_Entry]] = {}  # by the line's "\n"
        self._lock = threading.Lock()
        self._anywhere: Optional[tuple[int, ...]] = None
        self._census: Optional[tuple[int, list[tuple[int, str, str]]]] = None

    def _line_end(self, start: int) -> int:
        end = self._text.find("\n", start + 1)
        return len(self._text) if end < 0 else end

    def _is_pattern_line(self, start: int) -> bool:
        """Whether the line after the "\n" at `start` is a pattern line:
        not a comment, not indented, not blank."""
        line = self._text[start + 1:self._line_end(start)]
        return bool(line.strip()) and line[0] not in "# \t"

    def _entry(self, start: int) -> Optional[_Entry]:
        """The entry whose pattern line starts after `start`; None when that
        is not a pattern line or the pattern has no description."""
        try:
            return self._entries[start]
        except KeyError:
            pass
        entry = None
        if self._is_pattern_line(start):
            t = self._text
            end = self._line_end(start)
            pattern = t[start + 1:end].strip()
            descriptions: list[str] = []
            while end < len(t):  # description lines, up to the next pattern line
                nxt = self._line_end(end)
                line = t[end + 1:nxt]
                stripped = line.strip()
                if stripped and line[0] != "#":
                    if line[0] not in " \t":
                        break
                    descriptions.append(stripped)
                end = nxt
            if descriptions:
                entry = _Entry(start, pattern, tuple(descriptions))
        with self._lock:  # the first reader's object is everyone's
            return self._entries.setdefault(start, entry)

    def _anywhere_lines(self) -> tuple[int, ...]:
        """Pattern lines with syntax that defeats the prefix search."""
        if self._anywhere is None:
            t, found = self._text, set()
            for needle in _ANYWHERE:
                pos = t.find(needle)
                while pos >= 0:
                    start = t.rfind("\n", 0, pos)
                    if self._is_pattern_line(start):
                        found.add(start)
                    pos = t.find(needle, self._line_end(start))
            self._anywhere = tuple(sorted(found))
        return self._anywhere

    def _count(self) -> tuple[int, list[tuple[int, str, str]]]:
        """(entries, skipped) over the whole list: every entry read."""
        if self._census is None:
            t = self._text
            valid, skipped = 0, []
            start = 0
            while start >= 0:
                entry = self._entry(start)
                if entry is not None:
                    if entry.error is None:
                        valid += 1
                    else:
                        skipped.append((entry.line(t), entry.pattern, entry.error))
                start = t.find("\n", start + 1)
            self._census = (valid, skipped)
        return self._census

    @property
    def skipped(self) -> list[tuple[int, str, str]]:
        """(line, pattern, reason) of patterns that are not valid expressions
        (reading it reads every entry)."""
        return self._count()[1]

    def __len__(self) -> int:
        return self._count()[0]

    def match(self, atr: Union[bytes, bytearray, memoryview, str]) -> list[ATRMatch]:
        """Every entry matching `atr` (bytes or hex text), in the list's
        order."""
        text = atr_text(parse_hex(atr) if isinstance(atr, str) else atr)
        candidates = {m.start() for m in _prefix_search(text).finditer(self._text)}
        candidates.update(self._anywhere_lines())
        found: list[_Entry] = []
        for start in sorted(candidates):  # offsets in the list's order
            entry = self._entry(start)
            if entry is not None and entry.matches(text):
                found.append(entry)
        return [entry.atr_match(self._text) for entry in found]


def find_atr_list(locations: Optional[tuple[str, ...]] = None) -> Optional[str]:
    """The first list present among `locations` (default
    :data:`DEFAULT_LOCATIONS`; ~ expanded), or None."""
    for loc in DEFAULT_LOCATIONS if locations is None else locations:
        path = os.path.expanduser(loc)
        if os.path.isfile(path):
            return path
    return None


_cache: dict[str, tuple[tuple[int, int], ATRList]] = {}
_cache_lock = threading.Lock()


def load_atr_list(path: str) -> ATRList:
    """The parsed list in `path`, cached while the file's size and
    modification time stay the same.  OSError when it cannot be read."""
    st = os.stat(path)
    key = (st.st_mtime_ns, st.st_size)
    with _cache_lock:
        hit = _cache.get(path)
        if hit is not None and hit[0] == key:
            return hit[1]
    with open(path, encoding="utf-8", errors="replace") as f:
        parsed = ATRList(f.read(), path)
    with _cache_lock:
        _cache[path] = (key, parsed)
    return parsed


def lookup_atr(atr: Union[bytes, bytearray, memoryview, str],
               list_file: Optional[str] = None) -> list[ATRMatch]:
    """Descriptions of the card with this ATR, from `list_file` or else the
    installed pcsc-tools list; [] when nothing matches or no list is
    installed.  OSError when `list_file` cannot be read."""
    path = list_file if list_file is not None else find_atr_list()
    if path is None:
        return []
    return load_atr_list(path).match(atr)
