"""scardio: talk to smart-card and NFC reader drivers directly.

The reader layer (:func:`open_reader`, :class:`Reader`, :class:`Card`,
:class:`Monitor`, :mod:`scardio.aio`) runs the smart-card resource manager's
sequences in pure Python over :class:`Device`, the IOCTLs of the Windows
smart-card contract (synchronous or overlapped) on every platform;
:mod:`scardio.sim` steers the built-in simulated reader.
"""

# Only the binding loads with the package; every other public name loads the
# module that defines it on first use (PEP 562), so ``import scardio`` costs
# little more than starting Python, and a program that never lists readers
# never loads discovery.  The imports under TYPE_CHECKING tell type checkers
# the same names.

from . import errors
from ._core import Device, Operation

TYPE_CHECKING = False
if TYPE_CHECKING:
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

# public name -> the module (relative to this package) that defines it
_LAZY = {
    "APDU": "apdu", "parse_apdu": "apdu", "parse_hex": "apdu",
    "Card": "card", "CardDisconnectedError": "card", "Response": "card",
    "StatusWordError": "card",
    "IOCTL": "constants", "Attr": "constants", "PowerAction": "constants",
    "Protocol": "constants", "State": "constants",
    "ReaderDescriptor": "discovery", "ReaderNotFoundError": "discovery",
    "find_reader": "discovery", "list_readers": "discovery",
    "CardEvent": "monitor", "Monitor": "monitor",
    "DEFAULT_POWER_DOWN_TIMEOUT": "reader", "Disposition": "reader", "Reader": "reader",
    "ReaderAttributes": "reader", "ReaderEvent": "reader", "TracingDevice": "reader",
    "open_reader": "reader",
}

# submodules, loaded on first attribute access too (``scardio.sim.open_device``
# after a bare ``import scardio`` worked when the package imported them all)
_SUBMODULES = frozenset({
    "aio", "apdu", "atr", "atr_list", "card", "card_protocol", "card_server", "cli",
    "completions", "constants", "discovery", "holders", "monitor", "pcsc", "powerdown",
    "probe", "reader", "recording", "runner", "sequences", "session", "sim", "status_words",
    "tracing", "waiting",
})


if not TYPE_CHECKING:  # type checkers see the imports above, not a catch-all
    def __getattr__(name: str) -> object:
        import importlib
        module = _LAZY.get(name)
        if module is not None:
            value = getattr(importlib.import_module(f".{module}", __name__), name)
            globals()[name] = value  # later lookups skip this function
            return value
        if name in _SUBMODULES:
            return importlib.import_module(f".{name}", __name__)  # binds itself here
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
