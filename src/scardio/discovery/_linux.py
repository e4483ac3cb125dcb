"""Linux: USB devices from sysfs, named as pcscd's libudev hotplug names
them, and pcsc-lite's driver bundles in ``/usr/lib/pcsc/drivers``.

The sysfs reader also serves ``list_readers(sysfs_root=...)`` on any OS.
"""

from __future__ import annotations

import logging
import os
import platform
from typing import Optional

from .descriptor import PathLike
from .sources import PlatformSources
from .usb import UsbDevice, UsbInterface

__all__ = ["read_usb_devices"]

# The package's logger: users configure the one name "scardio.discovery".
log = logging.getLogger(__package__)

DEFAULT_SYSFS_ROOT = "/sys"
DROP_DIRS: tuple[str, ...] = ("/usr/lib/pcsc/drivers",)


def sources() -> PlatformSources:
    """This OS's sources; also those of any POSIX system without a module
    of its own.  pcsc-lite names a bundle's library directory after the
    uname system name."""
    return PlatformSources(DROP_DIRS, platform.system() or "Linux", read_usb_devices)


def device_name(dev: UsbDevice, intf: UsbInterface, friendly: str) -> str:
    """The device name pcscd's libudev hotplug gives the driver."""
    return (f"usb:{dev.vendor_id:04x}/{dev.product_id:04x}:libudev:"
            f"{intf.number}:{dev.devnode}")


def _read_text(path: str) -> Optional[str]:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read().strip()
    except OSError:
        return None


def _read_int(path: str, base: int) -> Optional[int]:
    text = _read_text(path)
    if text is None:
        return None
    try:
        return int(text, base)
    except ValueError:
        return None



def read_usb_devices(sysfs_root: Optional[PathLike] = None) -> list[UsbDevice]:
    """USB devices present, from ``<sysfs_root>/bus/usb/devices``.

    Entries lacking idVendor, idProduct, busnum or devnum (or holding
    unreadable values) are skipped.  Returns [] when sysfs is absent.
    """
    root = os.fspath(sysfs_root) if sysfs_root is not None else DEFAULT_SYSFS_ROOT
    devdir = os.path.join(root, "bus", "usb", "devices")
    try:
        names = sorted(os.listdir(devdir))
    except OSError:
        return []
    devices = []
    for sysname in names:
        if ":" in sysname:
            continue  # an interface, collected with its device below
        path = os.path.join(devdir, sysname)
        vid = _read_int(os.path.join(path, "idVendor"), 16)
        pid = _read_int(os.path.join(path, "idProduct"), 16)
        bus = _read_int(os.path.join(path, "busnum"), 10)
        dev = _read_int(os.path.join(path, "devnum"), 10)
        if vid is None or pid is None or bus is None or dev is None:
            log.debug("skipping USB entry %s: idVendor/idProduct/busnum/devnum "
                      "missing or malformed", path)
            continue
        serial = _read_text(os.path.join(path, "serial")) or None
        devices.append(UsbDevice(sysname, path, vid, pid, bus, dev, serial,
                                 _read_interfaces(devdir, path, sysname)))
    return devices


def _read_interfaces(devdir: str, path: str, sysname: str) -> tuple[UsbInterface, ...]:
    prefix = sysname + ":"
    found: dict[str, str] = {}
    # Interfaces are subdirectories of the device; they are also linked from
    # the devices directory itself.
    for where in (path, devdir):
        try:
            entries = os.listdir(where)
        except OSError:
            continue
        for entry in entries:
            full = os.path.join(where, entry)
            if entry.startswith(prefix) and entry not in found and os.path.isdir(full):
                found[entry] = full
    interfaces = []
    for name, full in found.items():
        number = _read_int(os.path.join(full, "bInterfaceNumber"), 16)
        if number is None:
            log.debug("skipping USB interface %s: no bInterfaceNumber", full)
            continue
        klass = _read_int(os.path.join(full, "bInterfaceClass"), 16)
        label = _read_text(os.path.join(full, "interface")) or None
        interfaces.append(UsbInterface(name, number, klass, label))
    interfaces.sort(key=lambda i: (i.number, i.sysname))
    return tuple(interfaces)

