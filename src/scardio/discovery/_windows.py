"""Windows: the readers are the OS's smart-card reader device interfaces,
opened by path through the binding; pcsc-lite's sources (driver bundles,
reader.conf) are not read."""

from __future__ import annotations

import platform

from .descriptor import ReaderDescriptor
from .sources import PlatformSources
from .usb import UsbDevice

__all__ = ["device_path_readers"]


def sources() -> PlatformSources:
    """This OS's sources: no bundle directories, and no USB enumeration of
    its own (the device interfaces already are the readers)."""
    return PlatformSources((), platform.system() or "Windows", _no_usb_devices,
                           os_readers=device_path_readers)


def _no_usb_devices() -> list[UsbDevice]:
    return []


def device_path_readers() -> list[ReaderDescriptor]:
    """Windows: one descriptor per smart-card reader device interface
    (source "win32", device_name the path).  Named by the start-up sequence
    when opened; until then by the path's device instance part.  Elsewhere
    the binding lists no device paths, so this is empty."""
    try:
        from .._core import list_device_paths
    except ImportError:  # the binding is not built
        return []
    readers = []
    for path in list_device_paths():
        # \\?\root#scardio_sim#0000#{guid} -> "root#scardio_sim#0000"
        short = path.split("\\")[-1].rsplit("#", 1)[0] or path
        readers.append(ReaderDescriptor(name=short, source="win32", library="",
                                        device_name=path, extra={"available": True}))
    return readers
