"""macOS: USB devices from the IORegistry (``ioreg``), named by the
friendly name as pcsc-lite's macOS hotplug names them, and the two driver
bundle directories of macOS's PC/SC stack.

Two identical readers share one device name (the friendly name), so which
is opened first is the driver's choice, as under pcscd there.
"""

from __future__ import annotations

import logging
import plistlib
import xml.parsers.expat
from typing import Mapping, Optional, Sequence

from .sources import PlatformSources
from .usb import UsbDevice, UsbInterface

__all__ = ["parse_ioreg_usb", "read_ioreg_usb_devices"]

# The package's logger: users configure the one name "scardio.discovery".
log = logging.getLogger(__package__)

#: The command listing the USB plane of the IORegistry as a plist.
IOREG_COMMAND: tuple[str, ...] = ("ioreg", "-p", "IOUSB", "-l", "-a")
IOREG_TIMEOUT = 10.0
DROP_DIRS: tuple[str, ...] = ("/usr/local/libexec/SmartCardServices/drivers",
                              "/usr/libexec/SmartCardServices/drivers")


def sources() -> PlatformSources:
    """This OS's sources: macOS bundles keep their library in ``Contents/MacOS``."""
    return PlatformSources(DROP_DIRS, "MacOS", read_ioreg_usb_devices)


def device_name(dev: UsbDevice, intf: UsbInterface, friendly: str) -> str:
    """The device name pcsc-lite's macOS hotplug gives the driver: the
    bundle's friendly name (CCID built for macOS matches it against its
    ifdFriendlyName list)."""
    return friendly


def _plist_int(entry: Mapping[str, object], key: str) -> Optional[int]:
    value = entry.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _plist_str(entry: Mapping[str, object], *keys: str) -> Optional[str]:
    for key in keys:
        value = entry.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


def parse_ioreg_usb(data: bytes) -> list[UsbDevice]:
    """The USB devices in the output of ``ioreg -p IOUSB -l -a`` (a plist).

    Every entry of the tree (``IORegistryEntryChildren``) with integer
    ``idVendor`` and ``idProduct`` is a device (hubs included; nothing lists
    them as readers).  Raises ValueError when *data* is not a plist.
    """
    try:
        root = plistlib.loads(data)
    except (plistlib.InvalidFileException, xml.parsers.expat.ExpatError) as exc:
        raise ValueError(f"not a plist: {exc}") from exc
    devices: list[UsbDevice] = []

    def walk(node: object, parent: str) -> None:
        if isinstance(node, list):
            for child in node:
                walk(child, parent)
            return
        if not isinstance(node, dict):
            return
        name = _plist_str(node, "IORegistryEntryName") or "?"
        location = _plist_int(node, "locationID")
        here = f"{name}@{location:x}" if location is not None else name
        path = f"{parent}/{here}"
        vid, pid = _plist_int(node, "idVendor"), _plist_int(node, "idProduct")
        if vid is not None and pid is not None:
            loc = location or 0
            devices.append(UsbDevice(
                sysname=here, path=path, vendor_id=vid, product_id=pid,
                busnum=loc >> 24, devnum=_plist_int(node, "USB Address") or 0,
                serial=_plist_str(node, "USB Serial Number", "kUSBSerialNumberString"),
                interfaces=(), source="ioreg",
                product_name=_plist_str(node, "USB Product Name", "kUSBProductString"),
                location_id=location, session_id=_plist_int(node, "sessionID")))
        walk(node.get("IORegistryEntryChildren", []), path)

    if isinstance(root, dict) and _plist_int(root, "idVendor") is None:
        root = root.get("IORegistryEntryChildren", [])  # the plane's root entry
    walk(root, "IOUSB:")
    return devices


def read_ioreg_usb_devices(command: Sequence[str] = IOREG_COMMAND,
                           timeout: Optional[float] = None) -> list[UsbDevice]:
    """The USB devices present on macOS, from *command*'s plist output
    (*timeout* seconds at most; default ``IOREG_TIMEOUT``).

    Returns [] (with a warning on the ``scardio.discovery`` logger) when the
    command is missing, fails, times out or prints something unreadable.
    """
    import subprocess  # here: listing readers on other systems never runs a command
    try:
        done = subprocess.run(list(command), stdin=subprocess.DEVNULL,
                              capture_output=True, check=False,
                              timeout=IOREG_TIMEOUT if timeout is None else timeout)
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("cannot list USB devices with %s: %s", " ".join(command), exc)
        return []
    if done.returncode != 0:
        err = done.stderr.decode("utf-8", "replace").strip()
        log.warning("cannot list USB devices: %s exited with %d%s", " ".join(command),
                    done.returncode, f": {err}" if err else "")
        return []
    try:
        return parse_ioreg_usb(done.stdout)
    except ValueError as exc:
        log.warning("cannot list USB devices: output of %s: %s", " ".join(command), exc)
        return []
