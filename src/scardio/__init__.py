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
