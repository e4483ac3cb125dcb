"""Record a card session as JSON Lines, and read a recording back.

A recording is a text file of JSON objects, one per line (UTF-8, ``\\n``
line ends), written by ``scardio apdu --record FILE`` and by
:meth:`scardio.card.Card.record`; :func:`read_recording` parses one and
:class:`scardio.sim.ReplayCard` plays one back as a card.

The first line is the header::

    {"format": "scardio-session", "version": 1,
     "time": "2026-12-01T11:54:32.123456+00:00",
     "reader": "scardio Simulated Reader 0", "atr": "3BF81300008131FE45...",
     "protocol": "T=1",
     "connect_actions": ["SWALLOWED", "COLD_RESET", "NEGOTIABLE", "ATR",
                         "SET_PROTOCOL(T=1)"]}

``time`` is when recording started (UTC, ISO 8601); ``protocol`` is the one
the card was connected with (``T=0``, ``T=1`` or ``RAW``);
``connect_actions`` are the connect sequence's steps (how the card was
powered or reset); hex is upper case without spaces.  Every later line has
a ``type`` and ``t``, seconds since the header was written (for a
transmit: when its first exchange started):

``apdu``
    one :meth:`Card.transmit <scardio.card.Card.transmit>`: ``command``
    (the APDU as given), ``response`` (the response data followed by SW1
    SW2, as returned), ``us`` (the call's duration in microseconds), and
    ``wire`` when the reader saw more than that one exchange: every
    TRANSMIT in order as ``[command, response]``
    (the 61xx answer and each GET RESPONSE, the 6Cxx answer and the re-send
    with the right Le).  A replay answers the ``wire`` exchanges, which are
    what a card sees, so a T=0 session replays as the card played it.
``error``
    a transmit that raised: ``command`` (``null`` when the argument was not
    an APDU at all), ``wire`` (the exchanges that reached the reader, the
    failed one with a ``null`` response; empty when the transmit was refused
    before any I/O: too long for the protocol, the card already
    disconnected), ``error`` (the exception's class name), ``message``,
    ``us``.
``disconnect``
    ``disposition``: ``LEAVE``, ``RESET`` (a warm reset) or ``UNPOWER``; the
    card is gone after it, so it ends the recording.
``end``
    the recording was closed; ``exchanges`` counts its ``apdu`` and
    ``error`` lines.  A file without it is the prefix of a session that
    stopped early (each line is flushed as it is written, so a process that
    dies leaves every line it completed).

Readers ignore keys they do not know; a new key is not a new version, a
change of meaning is.
"""

from __future__ import annotations

import datetime
import json
import os
import threading
import time
from dataclasses import dataclass, field
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any, Callable, Optional, Union

from . import errors
from .apdu import ApduLike, to_apdu_bytes
from .constants import IOCTL
from .sequences.disconnect import Disposition, DispositionLike, disposition_value
from .sequences.transmit import IO_HEADER, Response, transmit_steps
from .session import deadline_after

if TYPE_CHECKING:
    from .aio import AsyncCard
    from .card import Card
    from .sequences import Steps

__all__ = ["FORMAT", "FORMAT_VERSION", "PathOrFile", "Recorder", "RecordingFormatError", "RecordingHeader",
           "Exchange", "SessionEvent", "Recording", "read_recording"]

#: The header's ``format`` value.
FORMAT = "scardio-session"
#: The format version this module writes and reads.
FORMAT_VERSION = 1

_TRANSMIT = int(IOCTL.TRANSMIT)

#: Where a recording is written or read: a path, or a text file open for it.
PathOrFile = Union[str, os.PathLike[str], IO[str]]



class RecordingFormatError(ValueError):
    """A recording that cannot be read: not JSON Lines, not a scardio
    session, another version, or a line missing what its type needs.
    `line` is the 1-based line number (0: the file as a whole)."""

    def __init__(self, source: str, line: int, reason: str) -> None:
        where = f"{source}, line {line}" if line else source
        super().__init__(f"{where}: {reason}")
        self.source = source
        self.line = line
        self.reason = reason


@dataclass(frozen=True)
class RecordingHeader:
    """The first line of a recording."""
    version: int
    time: str
    reader: str
    atr: bytes
    protocol: str
    connect_actions: tuple[str, ...] = ()


#: One exchange with the reader: the command and the response (None: it failed).
WirePair = tuple[bytes, Optional[bytes]]


@dataclass(frozen=True)
class Exchange:
    """One recorded transmit: an ``apdu`` line (`response` set) or an
    ``error`` line (`error` set; `command` is None when the argument was
    not an APDU).  `wire` is what the reader saw, in order: for an ``apdu``
    line without a ``wire`` key, the one pair (command, response)."""
    line: int
    t: float
    command: Optional[bytes]
    response: Optional[bytes] = None
    error: Optional[str] = None
    message: str = ""
    us: float = 0.0
    wire: tuple[WirePair, ...] = ()


@dataclass(frozen=True)
class SessionEvent:
    """A ``disconnect`` or ``end`` line (`detail`: its other keys)."""
    line: int
    t: float
    kind: str
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Recording:
    """A parsed recording: its header and its lines in order."""
    source: str
    header: RecordingHeader
    entries: tuple[Union[Exchange, SessionEvent], ...]

    @property
    def exchanges(self) -> list[Exchange]:
        return [e for e in self.entries if isinstance(e, Exchange)]

    @property
    def complete(self) -> bool:
        """Whether the recording was closed (it ends with an ``end`` line)."""
        return bool(self.entries) and isinstance(self.entries[-1], SessionEvent) \
            and self.entries[-1].kind == "end"


# ---------------------------------------------------------------------------
# Writing


class _Wire:
    """The exchanges a transmit's steps ask the reader for: each TRANSMIT's
    [command, response] (hex, I/O headers off; response None while it runs
    and when it failed), and when the first one started.  The pair is
    listed before the IOCTL runs: a transmit that times out gives up while
    the driver still holds it, and it did reach the reader.  A too-small
    output buffer is not an exchange (the sequence asks again)."""

    def __init__(self) -> None:
        self.pairs: list[list[Optional[str]]] = []
        self.started: Optional[float] = None

    def observe(self, steps: "Steps[Response]") -> "Steps[Response]":
        """`steps`, passed through unchanged, watched."""
        value: Optional[bytes] = None
        error: Optional[BaseException] = None
        while True:
            try:
                if error is not None:
                    request = steps.throw(error)
                else:
                    request = steps.send(value)  # type: ignore[arg-type]  # None: start
            except StopIteration as stop:
                return stop.value  # type: ignore[no-any-return]
            error = None
            pair: Optional[list[Optional[str]]] = None
            if request.code == _TRANSMIT:
                if self.started is None:
                    self.started = time.monotonic()
                pair = [request.input[IO_HEADER:].hex().upper(), None]
                self.pairs.append(pair)
            try:
                value = yield request
            except GeneratorExit:
                steps.close()
                raise
            except BaseException as exc:  # the runner's: the IOCTL failed
                if pair is not None and isinstance(exc, errors.BufferTooSmallError):
                    self.pairs.remove(pair)
                error = exc
                continue
            if pair is not None:
                pair[1] = value[IO_HEADER:].hex().upper()


def _utc_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat()


class Recorder:
    """Records one connected card's session (see the module's format).

    Made by :meth:`Card.record <scardio.card.Card.record>` (and
    :meth:`AsyncCard.record <scardio.aio.AsyncCard.record>`); it writes the
    header at once, then one line per transmit of the card and one for its
    disconnect, until :meth:`close` (or the end of a ``with`` block, or the
    card's disconnect).  `target` is a path (the file is created or
    truncated, and closed with the recorder) or a text file open for
    writing (flushed after each line, left open).

    While recording, the card's ``transmit`` and ``disconnect`` are the
    recorder's, set on the card object itself; :meth:`close` removes them,
    so the class's transmit, the binding's fast path, runs again.  A card
    that is not being recorded therefore pays nothing for this feature.
    Lines are written with the reader's lock held, so their order is the
    order the card saw the commands in, from any number of threads."""

    def __init__(self, card: "Card", target: Union[str, os.PathLike[str], IO[str]], *,
                 front: "Optional[AsyncCard]" = None) -> None:
        # the object whose methods the recorder stands in for: the card, or
        # the asyncio card wrapping it
        self._front: Any = card if front is None else front
        if "transmit" in vars(self._front):
            raise ValueError("this card is already being recorded")
        card._check()  # a card that is gone has no session to record
        if isinstance(target, (str, os.PathLike)):
            self._file: IO[str] = open(target, "w", encoding="utf-8", newline="\n")
            self._owns_file = True
            self.path: Optional[str] = os.fspath(target)
        else:
            self._file = target
            self._owns_file = False
            self.path = getattr(target, "name", None)
        self.card = card
        self.exchanges = 0
        self._write_lock = threading.Lock()
        self._closed = False
        self._t0 = time.monotonic()
        front_type = type(self._front)
        self._disconnect: Callable[..., Any] = front_type.disconnect.__get__(self._front)
        try:
            self._write({"format": FORMAT, "version": FORMAT_VERSION, "time": _utc_now(),
                         "reader": card.reader.name, "atr": card.atr_bytes.hex().upper(),
                         "protocol": card.protocol_name,
                         "connect_actions": list(card.connect_actions)})
        except BaseException:
            if self._owns_file:
                self._file.close()
            raise
        self._methods: dict[str, Any] = (
            {"transmit": self.transmit, "disconnect": self.disconnect} if front is None else
            {"transmit": self._transmit_async, "disconnect": self._disconnect_async})
        vars(self._front).update(self._methods)

    @property
    def closed(self) -> bool:
        return self._closed

    def _write(self, obj: dict[str, Any]) -> None:
        with self._write_lock:
            self._file.write(json.dumps(obj, separators=(", ", ": ")) + "\n")
            self._file.flush()

    def _line(self, kind: str, t: float, **fields: Any) -> None:
        if not self._closed:
            self._write({"type": kind, "t": round(t - self._t0, 6), **fields})

    def transmit(self, apdu: ApduLike, *, auto_get_response: Optional[bool] = None,
                 auto_resend: Optional[bool] = None,
                 timeout: Optional[float] = None) -> Response:
        """The card's transmit, recorded (same arguments, same result, same
        errors: the card's full transmit sequence, watched on its way)."""
        card = self.card
        with card.reader._lock:  # reentrant; the lines keep the order the card saw
            t0 = time.perf_counter_ns()
            wire = _Wire()
            raw: Optional[bytes] = None
            try:
                raw = apdu if type(apdu) is bytes else to_apdu_bytes(apdu)
                deadline = None if timeout is None else deadline_after(timeout)
                resp = card._transmit_steps(raw, auto_get_response, auto_resend, deadline,
                                            wire.observe)
            except BaseException as exc:
                self._exchange(raw, None, exc, wire, t0)
                raise
            self._exchange(raw, resp, None, wire, t0)
        return resp

    async def _transmit_async(self, apdu: ApduLike, *,
                              auto_get_response: Optional[bool] = None,
                              auto_resend: Optional[bool] = None,
                              timeout: Optional[float] = None) -> Response:
        """The asyncio card's transmit, recorded (stands in for
        ``AsyncCard.transmit``).  One event loop runs the lines' writes
        right after each transmit, so they keep the card's order too."""
        card = self.card
        t0 = time.perf_counter_ns()
        wire = _Wire()
        raw: Optional[bytes] = None
        try:
            raw = apdu if type(apdu) is bytes else to_apdu_bytes(apdu)
            steps = transmit_steps(raw, card.protocol,
                                   auto_get_response=card._get_response(auto_get_response),
                                   auto_resend=card._resend(auto_resend))
            deadline = None if timeout is None else deadline_after(timeout)
            resp: Response = await self._front._transmit_steps(wire.observe(steps), deadline)
        except BaseException as exc:
            self._exchange(raw, None, exc, wire, t0)
            raise
        self._exchange(raw, resp, None, wire, t0)
        return resp

    def _exchange(self, raw: Optional[bytes], resp: Optional[Response],
                  exc: Optional[BaseException], wire: _Wire, t0: int) -> None:
        """One ``apdu`` or ``error`` line."""
        us = round((time.perf_counter_ns() - t0) / 1000.0, 1)
        started = time.monotonic() - us / 1e6 if wire.started is None else wire.started
        self.exchanges += 1
        command = None if raw is None else raw.hex().upper()
        if resp is None:
            self._line("error", started, us=us, command=command, wire=wire.pairs,
                       error=type(exc).__name__, message=str(exc))
            return
        response = bytes(resp).hex().upper()
        pairs = wire.pairs
        if len(pairs) == 1 and pairs[0][0] == command and pairs[0][1] == response:
            self._line("apdu", started, us=us, command=command, response=response)
        else:
            self._line("apdu", started, us=us, command=command, response=response,
                       wire=pairs)

    def disconnect(self, disposition: DispositionLike = Disposition.LEAVE) -> None:
        """The card's disconnect, recorded; it ends the recording (a
        disposition the card refuses ends nothing)."""
        value = disposition_value(disposition)
        connected = self.card.connected
        try:
            self._disconnect(value)
        finally:
            self._disconnected(connected, value)

    async def _disconnect_async(self, disposition: DispositionLike = Disposition.LEAVE) -> None:
        """The asyncio card's disconnect, recorded; it ends the recording."""
        value = disposition_value(disposition)
        connected = self.card.connected
        try:
            await self._disconnect(value)
        finally:
            self._disconnected(connected, value)

    def _disconnected(self, connected: bool, disposition: Disposition) -> None:
        if connected and not self._closed:
            self._line("disconnect", time.monotonic(), disposition=disposition.name)
        self.close()

    def close(self) -> None:
        """Write the ``end`` line, give the card its own methods back and
        close the file if the recorder opened it.  Idempotent."""
        if self._closed:
            return
        try:
            self._line("end", time.monotonic(), exchanges=self.exchanges)
        finally:
            self._closed = True
            d = vars(self._front)
            for name, method in self._methods.items():
                if d.get(name) == method:
                    del d[name]
            if self._owns_file:
                self._file.close()

    def __enter__(self) -> "Recorder":
        return self

    def __exit__(self, exc_type: Optional[type[BaseException]],
                 exc: Optional[BaseException], tb: Optional[TracebackType]) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "recording"
        return (f"<scardio.Recorder {self.path or self._file!r} {state}, "
                f"{self.exchanges} exchanges>")


# ---------------------------------------------------------------------------
# Reading


def _hex(source: str, n: int, obj: dict[str, Any], key: str,
         nullable: bool = False) -> Optional[bytes]:
    value = obj.get(key)
    if value is None and nullable and key in obj:
        return None
    if not isinstance(value, str):
        raise RecordingFormatError(source, n, f"{key!r} must be a hex string, got {value!r}")
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise RecordingFormatError(source, n, f"{key!r} is not hex: {value!r}") from None


def _number(source: str, n: int, obj: dict[str, Any], key: str, default: Optional[float] = None
            ) -> float:
    value = obj.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RecordingFormatError(source, n, f"{key!r} must be a number, got {value!r}")
    return float(value)


def _header(source: str, obj: dict[str, Any]) -> RecordingHeader:
    if obj.get("format") != FORMAT:
        raise RecordingFormatError(source, 1, f"not a scardio session recording (the first "
                                              f"line's \"format\" is not {FORMAT!r})")
    version = obj.get("version")
    if version != FORMAT_VERSION:
        raise RecordingFormatError(source, 1, f"format version {version!r} is not supported "
                                              f"(this scardio reads version {FORMAT_VERSION})")
    atr = _hex(source, 1, obj, "atr")
    assert atr is not None
    actions = obj.get("connect_actions", [])
    if not isinstance(actions, list) or not all(isinstance(a, str) for a in actions):
        raise RecordingFormatError(source, 1, "'connect_actions' must be a list of strings")
    for key in ("reader", "protocol", "time"):
        if not isinstance(obj.get(key), str):
            raise RecordingFormatError(source, 1, f"{key!r} must be a string, "
                                                  f"got {obj.get(key)!r}")
    return RecordingHeader(version=version, time=obj["time"], reader=obj["reader"], atr=atr,
                           protocol=obj["protocol"], connect_actions=tuple(actions))


def _entry(source: str, n: int, obj: dict[str, Any]) -> Union[Exchange, SessionEvent]:
    kind = obj.get("type")
    t = _number(source, n, obj, "t")
    if kind == "apdu":
        command = _hex(source, n, obj, "command")
        response = _check_response(source, n, _hex(source, n, obj, "response"))
        assert command is not None
        wire = (_wire_pairs(source, n, obj) if "wire" in obj
                else ((command, response),))
        return Exchange(line=n, t=t, command=command, response=response,
                        us=_number(source, n, obj, "us", 0.0), wire=wire)
    if kind == "error":
        if not isinstance(obj.get("error"), str):
            raise RecordingFormatError(source, n, "an error line needs 'error' (a string)")
        return Exchange(line=n, t=t, command=_hex(source, n, obj, "command", nullable=True),
                        error=obj["error"], message=str(obj.get("message", "")),
                        us=_number(source, n, obj, "us", 0.0),
                        wire=_wire_pairs(source, n, obj))
    if kind in ("disconnect", "end"):
        return SessionEvent(line=n, t=t, kind=kind,
                            detail={k: v for k, v in obj.items() if k not in ("type", "t")})
    raise RecordingFormatError(source, n, f"unknown line type {kind!r} "
                                          "(apdu, error, disconnect, end)")


def _wire_pairs(source: str, n: int, obj: dict[str, Any]) -> tuple[WirePair, ...]:
    wire = obj.get("wire")
    if not isinstance(wire, list):
        raise RecordingFormatError(source, n, f"'wire' must be a list, got {wire!r}")
    pairs: list[WirePair] = []
    for i, pair in enumerate(wire):
        if not (isinstance(pair, list) and len(pair) == 2):
            raise RecordingFormatError(source, n, f"'wire' item {i} must be "
                                                  f"[command, response], got {pair!r}")
        c, r = f"wire[{i}] command", f"wire[{i}] response"
        d = {c: pair[0], r: pair[1]}
        command = _hex(source, n, d, c)
        assert command is not None
        pairs.append((command, _hex(source, n, d, r, nullable=True)))
    return tuple(pairs)


def _check_response(source: str, n: int, response: Optional[bytes]) -> bytes:
    assert response is not None
    if len(response) < 2:
        raise RecordingFormatError(source, n, "a response has at least SW1 SW2 "
                                              f"(got {len(response)} bytes)")
    return response


def read_recording(source: Union[str, os.PathLike[str], IO[str]]) -> Recording:
    """Parse a recording (a path or an open text file).

    Raises :class:`RecordingFormatError` with the line number for anything
    it cannot read.  A last line cut short (no newline, not JSON: the
    process stopped while writing it) is left out; an incomplete recording
    is otherwise read as far as it goes (see :attr:`Recording.complete`)."""
    if isinstance(source, (str, os.PathLike)):
        name = os.fspath(source)
        try:
            with open(source, encoding="utf-8", newline="") as f:
                text = f.read()
        except UnicodeDecodeError as exc:
            raise RecordingFormatError(name, 0, f"not UTF-8 text ({exc.reason})") from None
    else:
        name = str(getattr(source, "name", "<recording>"))
        text = source.read()
    lines = text.split("\n")
    cut_short = lines[-1] != ""
    if not cut_short:
        lines.pop()
    header: Optional[RecordingHeader] = None
    entries: list[Union[Exchange, SessionEvent]] = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            raise RecordingFormatError(name, n, "empty line")
        try:
            obj = json.loads(line)
        except ValueError as exc:
            if cut_short and n == len(lines) and n > 1:
                break  # the last line, cut short
            raise RecordingFormatError(name, n, f"not JSON ({exc})") from None
        if not isinstance(obj, dict):
            raise RecordingFormatError(name, n, "each line must be a JSON object")
        if header is None:
            header = _header(name, obj)
            continue
        if "format" in obj:
            raise RecordingFormatError(name, n, "a second header: recordings cannot be "
                                                "concatenated")
        entries.append(_entry(name, n, obj))
    if header is None:
        raise RecordingFormatError(name, 0, "empty file: no header line")
    return Recording(source=name, header=header, entries=tuple(entries))
