"""A card that plays back a recorded session (:mod:`scardio.recording`)."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional, Union

from .virtual_card import CardMute, VirtualCard

if TYPE_CHECKING:
    import os
    from typing import IO

    from ..recording import Recording

__all__ = ["ReplayCard", "ReplayMismatch", "ReplayStep", "NO_PRECISE_DIAGNOSIS"]

#: What a replay answers to a command it has no answer for (and to one whose
#: recorded exchange failed): SW 6F 00, "no precise diagnosis".
NO_PRECISE_DIAGNOSIS = b"\x6f\x00"


@dataclass(frozen=True)
class ReplayStep:
    """One recorded exchange with the card: `command`, its `response` (None:
    the exchange failed, with `error`, the class name of what the transmit
    raised) and the recording's `line` it comes from."""
    line: int
    command: bytes
    response: Optional[bytes]
    error: Optional[str] = None


@dataclass(frozen=True)
class ReplayMismatch:
    """A command the recording did not expect.

    `index` counts the commands the card received (0: the first);
    `expected` is the command the recording has next in strict mode (None
    past its end, and always None in loose mode: no recorded command has
    those bytes), `line` its line in the file (0 when None)."""
    index: int
    command: bytes
    expected: Optional[bytes]
    line: int

    def __str__(self) -> str:
        got = self.command.hex(" ").upper() or "(empty)"
        if self.expected is not None:
            return (f"command {self.index + 1} ({got}) is not the recorded one: expected "
                    f"{self.expected.hex(' ').upper()} (line {self.line})")
        return f"command {self.index + 1} ({got}) is not in the recording"


class ReplayCard(VirtualCard):
    """A virtual card answering what a recorded card answered.

    `source` is a recording (a path, an open text file, or a
    :class:`~scardio.recording.Recording`); the card's ATR is the recorded
    one.  The card replays what the recorded card saw: the ``wire``
    exchanges of each recorded transmit (its GET RESPONSE and re-sends
    included), so the host's own follow-ups meet the recorded answers.  A
    transmit refused before any I/O left no exchange, so it is not expected;
    an exchange that timed out is mute again (:class:`CardMute`: the host
    gets a timeout), one that failed otherwise (the card was removed, a
    driver error) is answered ``6F 00``.

    Strict mode (the default) expects the recorded commands in the recorded
    order: each command that is the next recorded one gets its recorded
    answer; any other answers ``6F 00``, is logged as a warning (logger
    ``scardio.sim.replay``) and added to :attr:`mismatches` with the command
    that was expected, which is still the one expected next (so a stray
    extra command costs one mismatch, and the session goes on after it).

    Loose mode (``strict=False``) matches by command bytes alone, in any
    order: the n-th time a command comes, it gets the answer the n-th
    recorded occurrence of that command got, and after the last one the
    answers start again from the first (a command recorded once always gets
    that one answer; one recorded with different answers, such as GET
    CHALLENGE, cycles through them).  A command never recorded answers
    ``6F 00`` and is a mismatch.

    Power-ups and resets change nothing: a session recorded across resets
    is replayed as one sequence (:meth:`rewind` starts it again)."""

    def __init__(self, source: "Union[str, os.PathLike[str], IO[str], Recording]", *,
                 strict: bool = True) -> None:
        import logging

        from ..recording import Recording, read_recording
        self.recording: Recording = (source if isinstance(source, Recording)
                                     else read_recording(source))
        self.atr = self.recording.header.atr
        self.strict = strict
        self._log = logging.getLogger(__name__)
        self._lock = threading.Lock()
        # what the card saw, in order: the exchanges of every recorded transmit
        self._steps: list[ReplayStep] = [
            ReplayStep(e.line, command, response, None if response is not None else e.error)
            for e in self.recording.exchanges for command, response in e.wire]
        self._by_command: dict[bytes, list[ReplayStep]] = {}
        for step in self._steps:
            self._by_command.setdefault(step.command, []).append(step)
        self._mismatches: list[ReplayMismatch] = []
        self.rewind()

    def rewind(self) -> None:
        """Start the session again: strict mode expects the first recorded
        command, loose mode each command's first answer; the mismatches
        seen so far are forgotten."""
        with self._lock:
            self._position = 0
            self._received = 0
            self._seen: dict[bytes, int] = {}
            self._mismatches.clear()

    @property
    def mismatches(self) -> list[ReplayMismatch]:
        """The commands answered ``6F 00`` because the recording did not
        expect them, in order (a copy)."""
        with self._lock:
            return list(self._mismatches)

    @property
    def remaining(self) -> list[ReplayStep]:
        """Strict mode: the recorded exchanges not replayed yet (empty once
        the whole session was).  Loose mode: the first exchange of each
        recorded command never asked for."""
        with self._lock:
            if self.strict:
                return self._steps[self._position:]
            return [steps[0] for cmd, steps in self._by_command.items() if cmd not in self._seen]

    def apdu(self, command: bytes) -> bytes:
        command = bytes(command)
        with self._lock:
            index = self._received
            self._received += 1
            found = (self._next_strict(index, command) if self.strict
                     else self._next_loose(index, command))
            if isinstance(found, ReplayMismatch):
                self._mismatches.append(found)
        if isinstance(found, ReplayMismatch):
            self._log.warning("replay of %s: %s", self.recording.source, found)
            return NO_PRECISE_DIAGNOSIS
        if found.response is None:  # the recorded exchange failed
            if found.error == "TimeoutError":
                raise CardMute(f"replay of {self.recording.source}: the recorded card did "
                               f"not answer this command (line {found.line})")
            return NO_PRECISE_DIAGNOSIS
        return found.response

    def _next_strict(self, index: int, command: bytes) -> "Union[ReplayStep, ReplayMismatch]":
        if self._position < len(self._steps):
            expected = self._steps[self._position]
            if expected.command == command:
                self._position += 1
                return expected
            return ReplayMismatch(index, command, expected.command, expected.line)
        return ReplayMismatch(index, command, None, 0)

    def _next_loose(self, index: int, command: bytes) -> "Union[ReplayStep, ReplayMismatch]":
        answers = self._by_command.get(command)
        if not answers:
            return ReplayMismatch(index, command, None, 0)
        n = self._seen.get(command, 0)
        self._seen[command] = n + 1
        return answers[n % len(answers)]

    def __repr__(self) -> str:
        mode = "strict" if self.strict else "loose"
        return (f"<scardio.sim.ReplayCard {self.recording.source!r} {mode}, "
                f"{len(self._steps)} exchanges, {len(self._mismatches)} mismatches>")
