"""scardio: talk to smart-card and NFC reader drivers directly.

The reader layer (:func:`open_reader`, :class:`Reader`, :class:`Card`,
:class:`Monitor`, :mod:`scardio.aio`) runs the smart-card resource manager's
sequences in pure Python over :class:`Device`, the IOCTLs of the Windows
smart-card contract (synchronous or overlapped) on every platform;
:mod:`scardio.sim` steers the built-in simulated reader.
"""

from . import errors
from ._core import Device, Operation
from .apdu import APDU, parse_apdu, parse_hex
from .card import Card, CardDisconnectedError, Response, StatusWordError
from .constants import IOCTL, Attr, PowerAction, Protocol, State
from .discovery import ReaderDescriptor, ReaderNotFoundError, find_reader, list_readers
from .monitor import CardEvent, Monitor
from .reader import (DEFAULT_POWER_DOWN_TIMEOUT, Disposition, Reader, ReaderAttributes,
                     ReaderEvent, TracingDevice, open_reader)

__version__ = "0.1.0"

__all__ = [
    # reader layer
    "open_reader", "list_readers", "find_reader", "ReaderDescriptor",
    "ReaderNotFoundError", "Reader", "ReaderAttributes", "ReaderEvent", "Disposition",
    "Card", "CardDisconnectedError", "Response", "StatusWordError", "Monitor",
    "CardEvent", "APDU", "parse_apdu", "parse_hex", "TracingDevice",
    "DEFAULT_POWER_DOWN_TIMEOUT",
    # device layer
    "Device", "Operation", "IOCTL", "State", "Protocol", "Attr", "PowerAction",
    "errors", "__version__",
]
