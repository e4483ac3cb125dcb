"""FreeBSD: pcsc-lite's driver bundles in ``/usr/local/lib/pcsc/drivers``
(the ports tree's prefix).  USB devices are looked for in sysfs as on
Linux; FreeBSD has none at ``/sys``, so only reader.conf and simulated
readers are found there."""

from __future__ import annotations

import platform

from ._linux import read_usb_devices
from .sources import PlatformSources

__all__: list[str] = []

DROP_DIRS: tuple[str, ...] = ("/usr/local/lib/pcsc/drivers",)


def sources() -> PlatformSources:
    """This OS's sources (the library directory is the uname system name)."""
    return PlatformSources(DROP_DIRS, platform.system() or "Linux", read_usb_devices)
