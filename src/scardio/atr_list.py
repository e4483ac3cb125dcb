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
lookup, and kept until the file changes.
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


class ATRList:
    """A parsed list.  Plain patterns (hex only) are looked up in a dict;
    the few with wildcards are compiled as regular expressions."""

    def __init__(self, text: str, path: Optional[str] = None) -> None:
        self.path = path
        self._exact: dict[str, list[ATRMatch]] = {}
        self._patterns: list[tuple["re.Pattern[str]", ATRMatch]] = []
        #: (line, pattern, reason) of patterns that are not valid expressions
        self.skipped: list[tuple[int, str, str]] = []
        self._parse(text)

    def _parse(self, text: str) -> None:
        pattern: Optional[str] = None
        start = 0
        descriptions: list[str] = []
        for number, raw in enumerate(text.splitlines(), 1):
            if raw.startswith("#") or not raw.strip():
                continue
            if raw[0] in " \t":
                if pattern is not None:
                    descriptions.append(raw.strip())
                continue
            self._add(pattern, start, descriptions)
            pattern, start, descriptions = raw.strip(), number, []
        self._add(pattern, start, descriptions)

    def _add(self, pattern: Optional[str], line: int, descriptions: list[str]) -> None:
        if pattern is None or not descriptions:
            return
        entry = ATRMatch(pattern, tuple(descriptions), line)
        normal = " ".join(pattern.upper().split())
        if _PLAIN.fullmatch(normal):
            self._exact.setdefault(normal, []).append(entry)
            return
        try:
            compiled = re.compile(pattern, re.IGNORECASE)
        except re.error as exc:
            self.skipped.append((line, pattern, str(exc)))
            return
        self._patterns.append((compiled, entry))

    def __len__(self) -> int:
        return sum(map(len, self._exact.values())) + len(self._patterns)

    def match(self, atr: Union[bytes, bytearray, memoryview, str]) -> list[ATRMatch]:
        """Every entry matching `atr` (bytes or hex text), in the list's
        order."""
        text = atr_text(parse_hex(atr) if isinstance(atr, str) else atr)
        found = list(self._exact.get(text, ()))
        found += [entry for rx, entry in self._patterns if rx.fullmatch(text)]
        found.sort(key=lambda e: e.line)
        return found


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
