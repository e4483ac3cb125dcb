"""Serial and virtual readers declared in pcsc-lite's reader.conf files
(``/etc/reader.conf.d/*`` and ``/etc/reader.conf``): ``FRIENDLYNAME``,
``DEVICENAME``, ``LIBPATH``, ``CHANNELID`` lines, ``#`` comments, values
optionally quoted."""

from __future__ import annotations

import logging
import os
import re
from typing import Iterable, Optional

from .descriptor import PathLike, ReaderDescriptor
from .limits import ConfigTooLargeError, read_bounded

__all__ = ["read_reader_conf"]

# The package's logger: users configure the one name "scardio.discovery".
log = logging.getLogger(__package__)

DEFAULT_READER_CONF: tuple[str, ...] = ("/etc/reader.conf.d", "/etc/reader.conf")

_KEYS = ("FRIENDLYNAME", "DEVICENAME", "LIBPATH", "CHANNELID")
_TOKEN = re.compile(r"""\s*(?:(\#.*)|"([^"]*)"|'([^']*)'|(["'].*)|([^\s"'#]+))""")


def _tokens(line: str) -> list[str]:
    """Split a reader.conf line into tokens; raise ValueError when malformed."""
    out: list[str] = []
    pos = 0
    line = line.rstrip("\r\n")
    while pos < len(line):
        m = _TOKEN.match(line, pos)
        if m is None or m.end() == pos:
            break  # only trailing whitespace left
        comment, dq, sq, unterminated, bare = m.groups()
        if comment is not None:
            break
        if unterminated is not None:
            raise ValueError(f"unterminated quote: {unterminated}")
        out.append(dq if dq is not None else sq if sq is not None else bare)
        pos = m.end()
    return out


class _Entry:
    def __init__(self, path: str, line: int) -> None:
        self.path = path
        self.line = line
        self.values: dict[str, str] = {}
        self.problems: list[str] = []


def _parse_reader_conf(text: str, path: str) -> list[_Entry]:
    entries: list[_Entry] = []
    current: Optional[_Entry] = None
    for number, line in enumerate(text.splitlines(), 1):
        problem: Optional[str] = None
        try:
            tokens = _tokens(line)
        except ValueError as exc:
            problem = f"line {number}: {exc}"
            tokens = line.split()[:1]
        if not tokens:
            continue
        key = tokens[0].upper()
        if key not in _KEYS:
            log.warning("%s:%d: ignoring unknown keyword %r (expected one of %s)",
                        path, number, tokens[0], ", ".join(_KEYS))
            continue
        # A keyword already set in the current entry starts the next one.
        if current is None or key in current.values:
            current = _Entry(path, number)
            entries.append(current)
        if problem is None and len(tokens) != 2:
            what = "no value" if len(tokens) == 1 else (
                f"{len(tokens) - 1} values (quote values that contain spaces)")
            problem = f"line {number}: {key} has {what}"
        if problem is not None:
            current.problems.append(problem)
            current.values[key] = ""
        else:
            current.values[key] = tokens[1]
    return entries


def _entry_descriptor(entry: _Entry) -> tuple[Optional[ReaderDescriptor], list[str]]:
    """A descriptor for *entry* (None when it cannot describe a reader) and
    the reasons it is unavailable or invalid."""
    v = entry.values
    problems = list(entry.problems)
    for key in ("FRIENDLYNAME", "LIBPATH"):
        if not v.get(key):
            problems.append(f"{key} missing")
    if "DEVICENAME" not in v and "CHANNELID" not in v:
        problems.append("DEVICENAME or CHANNELID missing")
    channel: Optional[int] = None
    if v.get("CHANNELID"):
        try:
            # pcscd reads CHANNELID as hexadecimal, with or without 0x
            channel = int(v["CHANNELID"], 16)
        except ValueError:
            problems.append(f"CHANNELID {v['CHANNELID']!r} is not hexadecimal")
    if problems:
        return None, problems
    library = v["LIBPATH"]
    device = v.get("DEVICENAME", "")
    unavailable = []
    if not os.path.exists(library):
        unavailable.append(f"driver library {library} does not exist")
    if device and ":" not in device and not os.path.exists(device):
        unavailable.append(f"device {device} does not exist "
                           "(use DEVICENAME /dev/null if the driver ignores it)")
    extra: dict[str, object] = {
        "available": not unavailable,
        "config_file": entry.path,
        "line": entry.line,
        "channel_id": channel,
    }
    if unavailable:
        extra["problem"] = "; ".join(unavailable)
    return ReaderDescriptor(v["FRIENDLYNAME"], "reader.conf", library, device, 0, extra), []


def read_reader_conf(paths: Optional[Iterable[PathLike]] = None, *,
                     include_unavailable: bool = True) -> list[ReaderDescriptor]:
    """Readers declared in reader.conf files.  Each of *paths* (default
    ``/etc/reader.conf.d`` and ``/etc/reader.conf``) is a file or a directory
    whose regular, non-hidden files are read in name order; missing paths
    are ignored.  Malformed entries, and files larger than
    :data:`~scardio.discovery.limits.MAX_CONFIG_BYTES`, are skipped with a warning.  Unavailable
    entries (missing library or device) are returned with
    ``extra["available"] = False`` unless *include_unavailable* is false.
    """
    files: list[str] = []
    for p in DEFAULT_READER_CONF if paths is None else paths:
        p = os.fspath(p)
        if os.path.isdir(p):
            try:
                names = sorted(os.listdir(p))
            except OSError as exc:
                log.warning("cannot list %s: %s", p, exc)
                continue
            files.extend(os.path.join(p, n) for n in names
                         if not n.startswith(".") and os.path.isfile(os.path.join(p, n)))
        elif os.path.isfile(p):
            files.append(p)
    readers = []
    for path in files:
        try:
            text = read_bounded(path).decode("utf-8", errors="replace")
        except ConfigTooLargeError as exc:
            log.warning("skipping reader configuration %s: %s", path, exc)
            continue
        except OSError as exc:
            log.warning("cannot read reader configuration %s: %s", path, exc)
            continue
        for entry in _parse_reader_conf(text, path):
            desc, problems = _entry_descriptor(entry)
            if desc is None:
                log.warning("skipping reader entry at %s:%d: %s", path, entry.line,
                            "; ".join(problems))
                continue
            if not desc.available and not include_unavailable:
                log.warning("skipping reader %r (%s:%d): %s", desc.name, path,
                            entry.line, desc.extra["problem"])
                continue
            readers.append(desc)
    return readers
