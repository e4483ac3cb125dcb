"""macOS: USB devices from the IORegistry (``ioreg``), named by the
friendly name as pcsc-lite's macOS hotplug names them, and the two driver
bundle directories of macOS's PC/SC stack.

Two identical readers share one device name (the friendly name), so which
is opened first is the driver's choice, as under pcscd there.

Pairing with macOS's own PC/SC stack (CryptoTokenKit's reader daemon, which
replaced pcscd in macOS 10.10): it names a reader by the friendly name alone,
with none of pcsc-lite's ``NN SS`` and none of the ``[interface]`` and
``(serial)`` parts pcscd adds (``Yubico YubiKey OTP+FIDO+CCID``).  What is
known of the rest comes from names users have reported, not from a
specification, and was not run here:

- a second reader of the same friendly name is listed with a two-digit
  number, ``FRIENDLY 01`` (the first has none), in the order the readers
  arrived; the number is read as decimal (the same below ten either way);
- each slot of a reader with several is listed as ``FRIENDLY(n)``, n
  counting slots from 1 (``Virtual PCD(1)``, ``Virtual PCD(2)``); where a
  number and a slot meet, both orders are read;
- the friendly name is the driver bundle's ``ifdFriendlyName`` for the
  device; a reader.conf reader whose bundle lists none is named by its
  DEVICENAME.

So a resource manager reader pairs with a direct reader when the name (or
the name without those suffixes: the name as a whole is tried first, so a
friendly name that ends in digits still pairs) is slot 0 and equals the
direct reader's bundle friendly name, its listed name, or, for a reader.conf
reader, its FRIENDLYNAME or DEVICENAME.  Unique on both sides, it pairs
by name (``pcsc_match == "name"``); several identical readers pair by order
(``"order"``: the k-th direct reader with the k-th lowest number, a guess,
since the arrival order is not visible here).  The same readings find a direct reader by such a name when
the resource manager does not list it.
"""

from __future__ import annotations

import logging
import plistlib
import re
import xml.parsers.expat
from typing import Mapping, Optional, Sequence

from .descriptor import ReaderDescriptor
from .pairing import (NameReading, ResourceManagerNaming, pair_by_name,
                      style_match_by_name)
from .sources import PlatformSources
from .usb import UsbDevice, UsbInterface

__all__ = ["MACOS", "ctk_name_readings", "ctk_names_of", "parse_ioreg_usb",
           "read_ioreg_usb_devices"]

# The package's logger: users configure the one name "scardio.discovery".
log = logging.getLogger(__package__)

#: The command listing the USB plane of the IORegistry as a plist.
IOREG_COMMAND: tuple[str, ...] = ("ioreg", "-p", "IOUSB", "-l", "-a")
IOREG_TIMEOUT = 10.0
DROP_DIRS: tuple[str, ...] = ("/usr/local/libexec/SmartCardServices/drivers",
                              "/usr/libexec/SmartCardServices/drivers")


def sources() -> PlatformSources:
    """This OS's sources: macOS bundles keep their library in ``Contents/MacOS``."""
    return PlatformSources(DROP_DIRS, "MacOS", read_ioreg_usb_devices, pcsc_naming=MACOS)


# FRIENDLY, then optionally (slot) and " NN" in either order.
_CTK_SUFFIXES = re.compile(r"^(.*?\S)(?:\((\d+)\))?(?: (\d\d))?(?:\((\d+)\))?$")


def ctk_name_readings(name: str) -> list[NameReading]:
    """The ways to read a reader name of macOS's PC/SC stack (module doc):
    the whole name (one slot, the first of its kind), then, when it ends in
    ``(n)`` and/or `` NN``, the name without them."""
    readings: list[NameReading] = [(name, 0, 0)]
    m = _CTK_SUFFIXES.match(name)
    if m is not None:
        friendly, slot_before, number, slot_after = m.groups()
        if (slot_before or number or slot_after) and not (slot_before and slot_after):
            slot = int(slot_before or slot_after or "1") - 1
            if slot >= 0:
                readings.append((friendly, int(number or "0"), slot))
    return readings


def ctk_names_of(desc: ReaderDescriptor) -> list[str]:
    """The friendly names macOS's PC/SC stack may list *desc* under (module
    doc), most likely first."""
    names = []
    driver = desc.extra.get("driver_friendly_name")
    if isinstance(driver, str):
        names.append(driver)
    names.append(desc.friendly_name)
    if desc.source == "reader.conf":
        names.append(desc.device_name)
    return list(dict.fromkeys(names))


def _ctk_pair(direct: Sequence[ReaderDescriptor],
              pcsc_names: Sequence[str]) -> list[ReaderDescriptor]:
    return pair_by_name(direct, pcsc_names, scheme="macos", readings=ctk_name_readings,
                        keys=ctk_names_of)


def _ctk_style_match(query: str, pool: Sequence[ReaderDescriptor]
                     ) -> Optional[ReaderDescriptor]:
    return style_match_by_name(query, pool, readings=ctk_name_readings, keys=ctk_names_of)


#: The scheme of macOS's PC/SC stack, ``FRIENDLY``, ``FRIENDLY 01``,
#: ``FRIENDLY(2)`` (module doc).
MACOS = ResourceManagerNaming("macos", _ctk_pair, _ctk_style_match)


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
