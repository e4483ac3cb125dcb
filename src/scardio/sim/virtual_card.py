"""The base class of cards written in Python for the simulated reader."""

from __future__ import annotations

__all__ = ["VirtualCard", "CardMute"]


class CardMute(Exception):
    """Raise from :meth:`VirtualCard.apdu` for a card that does not answer
    at all: the reader reports a timeout (scardio raises
    :class:`scardio.errors.TimeoutError`) instead of answering ``6F 00``."""


class VirtualCard:
    """A smart card whose answers are Python code.

    Subclasses set :attr:`atr` and override :meth:`apdu`; the power hooks
    are optional.  The simulated reader calls them on one thread at a time,
    in the order the card would see them: :meth:`power_up` when the reader
    powers the card, :meth:`reset` on a reset, :meth:`power_down` when it
    powers it off.  The reader handles the protocol's framing, so
    :meth:`apdu` sees and answers whole command APDUs.

    The reader calls the card with none of its own locks held: the card's
    code may steer the reader (:class:`scardio.sim.SimControl`), sleep, or
    take locks of its own.  An exception raised by :meth:`apdu` answers
    ``6F 00`` and is logged (logger ``scardio.sim``) with its traceback; one
    raised by :meth:`power_up` or :meth:`reset` fails that power-up or reset
    (a driver error), and is logged too.
    """

    #: The answer to reset the card gives when powered (2..33 bytes, checked
    #: by :func:`scardio.atr.parse_atr` and read once, when the card is
    #: inserted).
    atr: bytes = b""

    def apdu(self, command: bytes) -> bytes:
        """Answer one command APDU: the response data followed by SW1 SW2
        (bytes, at least the two status bytes; at most 256 data bytes for a
        short command, 65536 for an extended one).

        The base class supports no instruction (``6D 00``)."""
        return b"\x6d\x00"

    def power_up(self) -> None:
        """The reader powered the card (before its ATR is read)."""

    def power_down(self) -> None:
        """The reader removed the card's power."""

    def reset(self, warm: bool) -> None:
        """The reader reset the card: warm (RST only) or cold (power cycled)."""
