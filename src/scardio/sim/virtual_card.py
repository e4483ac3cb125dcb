"""The base class of cards written in Python for the simulated reader."""

from __future__ import annotations

__all__ = ["VirtualCard"]


class VirtualCard:
    """A smart card whose answers are Python code.

    Subclasses set :attr:`atr` and override :meth:`apdu`; the power hooks
    are optional.  The simulated reader calls them on one thread at a time,
    in the order the card would see them: :meth:`power_up` when the reader
    powers the card, :meth:`reset` on a reset, :meth:`power_down` when it
    powers it off.  The reader handles the protocol's framing, so
    :meth:`apdu` sees and answers whole command APDUs.
    """

    #: The answer to reset the card gives when powered.
    atr: bytes = b""

    def apdu(self, command: bytes) -> bytes:
        """Answer one command APDU: the response data followed by SW1 SW2.

        The base class supports no instruction (``6D 00``)."""
        return b"\x6d\x00"

    def power_up(self) -> None:
        """The reader powered the card (before its ATR is read)."""

    def power_down(self) -> None:
        """The reader removed the card's power."""

    def reset(self, warm: bool) -> None:
        """The reader reset the card: warm (RST only) or cold (power cycled)."""
