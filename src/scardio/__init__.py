"""scardio: talk to smart-card and NFC reader drivers directly.

The low level is :class:`Device` (IOCTLs of the Windows smart-card contract,
synchronous or overlapped, on every platform); :mod:`scardio.sim` steers the
built-in simulated reader.
"""

from . import errors
from ._core import Device, Operation
from .constants import IOCTL, Attr, PowerAction, Protocol, State

__version__ = "0.1.0"

__all__ = ["Device", "Operation", "IOCTL", "State", "Protocol", "Attr",
           "PowerAction", "errors", "__version__"]

# The reader layer (pure Python over Device): sequences, cards, monitor.
from .apdu import APDU, parse_apdu, parse_hex  # noqa: E402
from .card import Card, CardDisconnectedError, Response, StatusWordError  # noqa: E402
from .discovery import ReaderDescriptor, ReaderNotFoundError, find_reader, list_readers  # noqa: E402
from .monitor import CardEvent, Monitor  # noqa: E402
from .reader import (DEFAULT_POWER_DOWN_TIMEOUT, Disposition, Reader,  # noqa: E402
                     ReaderAttributes, ReaderEvent, TracingDevice, open_reader)

__all__ += ["open_reader", "list_readers", "find_reader", "ReaderDescriptor",
            "ReaderNotFoundError", "Reader", "ReaderAttributes", "ReaderEvent",
            "Disposition", "Card", "CardDisconnectedError", "Response",
            "StatusWordError", "Monitor", "CardEvent", "APDU", "parse_apdu",
            "parse_hex", "TracingDevice", "DEFAULT_POWER_DOWN_TIMEOUT"]
