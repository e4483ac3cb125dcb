"""The one place that asks which OS this is: it picks the per-OS module
whose sources discovery reads, once, at import."""

from __future__ import annotations

import sys
from typing import Mapping

from ._freebsd import sources as freebsd_sources
from ._linux import device_name as libudev_device_name
from ._linux import sources as linux_sources
from ._macos import device_name as friendly_device_name
from ._macos import sources as macos_sources
from ._windows import sources as windows_sources
from .sources import DeviceNamer, PlatformSources

__all__ = ["DEVICE_NAMERS", "PLATFORM", "current", "sources_for"]


def sources_for(name: str) -> PlatformSources:
    """The sources of the OS that ``sys.platform`` calls *name* (any POSIX
    system without a module of its own reads as Linux does)."""
    if name == "darwin":
        return macos_sources()
    if name == "win32":
        return windows_sources()
    if name.startswith("freebsd"):
        return freebsd_sources()
    return linux_sources()


#: This OS's sources.
PLATFORM = sources_for(sys.platform)


def current() -> PlatformSources:
    """:data:`PLATFORM`, looked up at each call rather than bound at import
    (so that it can be replaced, as the tests do to read as macOS)."""
    return PLATFORM


#: How the IFD device name is built, by the enumeration that found the
#: device; any of them can run on any OS (``list_readers(sysfs_root=...)``).
DEVICE_NAMERS: Mapping[str, DeviceNamer] = {
    "sysfs": libudev_device_name,
    "ioreg": friendly_device_name,
}
