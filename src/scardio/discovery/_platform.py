"""The one place that asks which OS this is: it picks the per-OS module
whose sources discovery reads, once, at import."""

from __future__ import annotations

import sys
from typing import Mapping

from .sources import DeviceNamer, PlatformSources

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .usb import UsbDevice, UsbInterface

__all__ = ["DEVICE_NAMERS", "PLATFORM", "current", "sources_for"]


def sources_for(name: str) -> PlatformSources:
    """The sources of the OS that ``sys.platform`` calls *name* (any POSIX
    system without a module of its own reads as Linux does).  Only that OS's
    module is imported: the others' imports (plistlib on macOS) cost every
    listing elsewhere."""
    if name == "darwin":
        from . import _macos
        return _macos.sources()
    if name == "win32":
        from . import _windows
        return _windows.sources()
    if name.startswith("freebsd"):
        from . import _freebsd
        return _freebsd.sources()
    from . import _linux
    return _linux.sources()


#: This OS's sources.
PLATFORM = sources_for(sys.platform)


def current() -> PlatformSources:
    """:data:`PLATFORM`, looked up at each call rather than bound at import
    (so that it can be replaced, as the tests do to read as macOS)."""
    return PLATFORM


def _libudev_device_name(dev: UsbDevice, intf: UsbInterface, friendly: str) -> str:
    from ._linux import device_name
    return device_name(dev, intf, friendly)


def _friendly_device_name(dev: UsbDevice, intf: UsbInterface, friendly: str) -> str:
    from ._macos import device_name
    return device_name(dev, intf, friendly)


#: How the IFD device name is built, by the enumeration that found the
#: device; any of them can run on any OS (``list_readers(sysfs_root=...)``),
#: its module imported when a device it found is named.
DEVICE_NAMERS: Mapping[str, DeviceNamer] = {
    "sysfs": _libudev_device_name,
    "ioreg": _friendly_device_name,
}
