"""pcsc-lite USB driver bundles, and the USB readers they serve.

A bundle is ``<drop_dir>/*.bundle/Contents/Info.plist``
(``CFBundleExecutable``, ``ifdVendorID``, ``ifdProductID``,
``ifdFriendlyName``) beside its driver library; its readers are the USB
devices present whose vendor/product ID it lists, named as pcscd names
them.
"""

from __future__ import annotations

import logging
import os
import plistlib
from dataclasses import dataclass
from typing import Mapping, Optional, Sequence, Union

from ._platform import DEVICE_NAMERS, current
from .descriptor import PathLike, ReaderDescriptor
from .limits import ConfigTooLargeError, read_bounded
from .usb import READER_INTERFACE_CLASSES, UsbDevice, UsbInterface

__all__ = ["DriverBundle", "bundle_readers", "default_drop_dir", "default_drop_dirs",
           "read_bundles"]

# The package's logger: users configure the one name "scardio.discovery".
log = logging.getLogger(__package__)

CCID_CLASS_DRIVER = "CCIDCLASSDRIVER"

DropDirs = Union[PathLike, Sequence[PathLike]]


@dataclass(frozen=True)
class DriverBundle:
    """One pcsc-lite driver bundle and the readers its Info.plist lists."""

    path: str
    library: str
    bundle_name: Optional[str]
    #: (vendor ID, product ID, friendly name) for every listed reader.
    readers: tuple[tuple[int, int, str], ...]

    @property
    def is_class_driver(self) -> bool:
        return self.bundle_name == CCID_CLASS_DRIVER


def _ascii_only(text: str) -> str:
    """pcscd replaces the non-ASCII characters of interface strings by '.'."""
    return "".join(c if ord(c) < 128 else "." for c in text)


def _bundle_platform_dir() -> str:
    """``Contents/<dir>`` holding a bundle's library: pcsc-lite uses the uname
    system name (``Linux``, ``FreeBSD``...), macOS uses ``MacOS``."""
    return current().library_dir


def default_drop_dirs() -> tuple[str, ...]:
    """pcscd's bundle directories on this platform, searched in this order
    (none on Windows)."""
    return current().drop_dirs


def default_drop_dir() -> str:
    """The first of :func:`default_drop_dirs` (kept for callers that take one).
    Raises :class:`LookupError` where the platform has no bundle directory
    (Windows, where readers are device interfaces)."""
    dirs = current().drop_dirs
    if not dirs:
        raise LookupError("this platform has no pcsc-lite driver bundle directory; "
                          "its readers are found by list_readers()")
    return dirs[0]


def _plist_list(info: Mapping[str, object], key: str) -> Optional[list[str]]:
    value = info.get(key)
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    return None


def _read_bundle(bundle: str) -> Optional[DriverBundle]:
    plist_path = os.path.join(bundle, "Contents", "Info.plist")
    try:
        info = plistlib.loads(read_bounded(plist_path))
    except FileNotFoundError:
        log.warning("skipping driver bundle %s: no Contents/Info.plist", bundle)
        return None
    except ConfigTooLargeError as exc:
        log.warning("skipping driver bundle %s: %s", bundle, exc)
        return None
    except (OSError, ValueError, plistlib.InvalidFileException) as exc:
        log.warning("skipping driver bundle %s: cannot read %s: %s", bundle, plist_path, exc)
        return None
    if not isinstance(info, dict):
        log.warning("skipping driver bundle %s: %s is not a dictionary", bundle, plist_path)
        return None
    exe = info.get("CFBundleExecutable")
    if not isinstance(exe, str) or not exe or "/" in exe:
        log.warning("skipping driver bundle %s: CFBundleExecutable missing or invalid "
                    "in %s", bundle, plist_path)
        return None
    lists = {key: _plist_list(info, key)
             for key in ("ifdVendorID", "ifdProductID", "ifdFriendlyName")}
    missing = [key for key, value in lists.items() if not value]
    if missing:
        log.warning("skipping driver bundle %s: %s missing or not strings in %s",
                    bundle, ", ".join(missing), plist_path)
        return None
    vids, pids, names = lists["ifdVendorID"], lists["ifdProductID"], lists["ifdFriendlyName"]
    assert vids is not None and pids is not None and names is not None
    count = max(len(vids), len(pids), len(names))
    # A single string stands for every entry; other length mismatches are errors.
    if any(len(v) not in (1, count) for v in (vids, pids, names)):
        log.warning("skipping driver bundle %s: ifdVendorID (%d), ifdProductID (%d) and "
                    "ifdFriendlyName (%d) have different lengths in %s", bundle,
                    len(vids), len(pids), len(names), plist_path)
        return None
    readers = []
    for i in range(count):
        vid_s = vids[i if len(vids) > 1 else 0]
        pid_s = pids[i if len(pids) > 1 else 0]
        name = names[i if len(names) > 1 else 0]
        try:
            vid, pid = int(vid_s, 16), int(pid_s, 16)
        except ValueError:
            log.warning("driver bundle %s: ignoring entry %d: vendor/product ID "
                        "%r/%r is not hexadecimal", bundle, i, vid_s, pid_s)
            continue
        readers.append((vid, pid, name))
    bundle_name = info.get("CFBundleName")
    library = os.path.join(bundle, "Contents", _bundle_platform_dir(), exe)
    return DriverBundle(bundle, library,
                        bundle_name if isinstance(bundle_name, str) else None,
                        tuple(readers))


def _drop_dirs(drop_dir: Optional[DropDirs]) -> list[str]:
    if drop_dir is None:
        return list(default_drop_dirs())
    if isinstance(drop_dir, (str, os.PathLike)):
        return [os.fspath(drop_dir)]
    return [os.fspath(d) for d in drop_dir]


def read_bundles(drop_dir: Optional[DropDirs] = None) -> list[DriverBundle]:
    """The driver bundles in *drop_dir* (a directory or a sequence of them;
    default: :func:`default_drop_dirs`), directory by directory, each in name
    order.  Unreadable bundles are skipped with a warning."""
    bundles = []
    for root in _drop_dirs(drop_dir):
        try:
            names = sorted(os.listdir(root))
        except OSError:
            continue
        for name in names:
            path = os.path.join(root, name)
            if name.endswith(".bundle") and os.path.isdir(path):
                bundle = _read_bundle(path)
                if bundle is not None:
                    bundles.append(bundle)
    return bundles


def bundle_readers(bundles: Sequence[DriverBundle], devices: Sequence[UsbDevice], *,
                   include_unavailable: bool = False) -> list[ReaderDescriptor]:
    """Match USB *devices* against the readers listed by *bundles*."""
    table: dict[tuple[int, int], list[tuple[DriverBundle, str]]] = {}
    for bundle in bundles:
        for vid, pid, name in bundle.readers:
            table.setdefault((vid, pid), []).append((bundle, name))
    readers = []
    for dev in devices:
        matches = table.get((dev.vendor_id, dev.product_id))
        if not matches:
            continue
        specific = [m for m in matches if not m[0].is_class_driver]
        generic = [m for m in matches if m[0].is_class_driver]
        bundle, friendly = (specific or generic)[0]
        fallback = generic[0][0].library if specific and generic else None
        interfaces = [i for i in dev.interfaces
                      if i.interface_class is None
                      or i.interface_class in READER_INTERFACE_CLASSES]
        if not dev.interfaces:
            interfaces = [UsbInterface(dev.sysname, 0, None, None)]
        if not interfaces:
            log.info("USB device %04x:%04x at %s is listed by %s but has no smart-card "
                     "or vendor-specific interface", dev.vendor_id, dev.product_id,
                     dev.devnode, bundle.path)
        for intf in interfaces:
            name = friendly
            if intf.name:
                name += f" [{_ascii_only(intf.name)}]"
            if dev.serial and not (intf.name and dev.serial in intf.name):
                name += f" ({dev.serial})"
            device_name = DEVICE_NAMERS[dev.source](dev, intf, friendly)
            available = os.path.exists(bundle.library)
            extra: dict[str, object] = {
                "available": available,
                "bundle": bundle.path,
                "driver_friendly_name": friendly,  # without pcscd's additions
                "vendor_id": dev.vendor_id,
                "product_id": dev.product_id,
                "bus": dev.busnum,
                "address": dev.devnum,
                "interface": intf.number,
                "interface_class": intf.interface_class,
                "serial": dev.serial,
                dev.source: dev.path,  # "sysfs" or "ioreg"
                "location_id": dev.location_id,
                "class_driver": bundle.is_class_driver,
            }
            if fallback:
                extra["fallback_library"] = fallback
            if not available:
                extra["problem"] = f"driver library {bundle.library} does not exist"
                if not include_unavailable:
                    log.warning("skipping USB reader %r: %s", name, extra["problem"])
                    continue
            readers.append(ReaderDescriptor(name, "bundle", bundle.library,
                                            device_name, 0, extra))
    return readers

