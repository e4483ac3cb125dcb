"""Reader discovery: find the readers a driver can open, without pcscd.

On POSIX three sources are read, in this order; on Windows the reader device
interfaces (``"win32"``, from ``device_path_readers()``) take the place of
the first two:

``"bundle"``
    pcsc-lite USB driver bundles ``<drop_dir>/*.bundle/Contents/Info.plist``
    (``CFBundleExecutable``, ``ifdVendorID``, ``ifdProductID``,
    ``ifdFriendlyName``), matched by vendor/product ID against the USB devices
    present in sysfs (``/sys/bus/usb/devices``).  One reader per USB
    interface of class 0x0B (smart card) or 0xFF (vendor specific); the
    device name is built as pcscd's libudev hotplug builds it,
    ``usb:VVVV/PPPP:libudev:<bInterfaceNumber>:/dev/bus/usb/BBB/DDD``, and
    the name is the bundle's friendly name plus `` [<interface string>]``
    and `` (<serial>)`` as pcscd adds them.  A bundle whose ``CFBundleName``
    is ``CCIDCLASSDRIVER`` is used only when no other bundle lists the device
    (``extra["fallback_library"]`` names it otherwise).

``"reader.conf"``
    Serial and virtual readers declared in ``/etc/reader.conf.d/*`` and
    ``/etc/reader.conf``: ``FRIENDLYNAME``, ``DEVICENAME``, ``LIBPATH``,
    ``CHANNELID`` lines (``#`` comments, values optionally quoted).

``"sim"``
    ``sim=N`` (or the ``SCARDIO_SIM=N`` environment variable when ``sim`` is
    0) adds N simulated readers, ``scardio Simulated Reader 0`` .. ``N-1``,
    LUN 0 .. N-1, whose library is ``scardio.sim.SIM_LIBRARY``.

Availability: a bundle or reader.conf entry whose driver library does not
exist (or whose reader.conf DEVICENAME is a missing path without ``:``, which
pcscd rejects too) is left out and logged, unless ``include_unavailable`` is
true; then it is returned with ``extra["available"] = False`` and
``extra["problem"]`` saying why.  Simulated readers are always returned
(they were asked for); their ``extra["available"]`` is False when the
binding is not built.  Malformed files never raise: the faulty file, bundle
or entry is skipped and a warning goes to the ``scardio.discovery`` logger.

In use: with ``check_busy``, each reader another process holds (pcscd, most
often) gets ``extra["busy"] = True``, ``extra["busy_summary"]`` ("held by
pcscd (pid 812)") and ``extra["holders"]`` (``pid``, ``name``, ``resource``
of each holder found; empty when other users' processes cannot be read, and
then ``extra["likely_holders"]`` names a running pcscd).
It is found from /proc and /sys, without loading any driver (Linux only:
see :mod:`scardio.holders`); other readers get ``extra["busy"] = False``.

Names are made unique: a second reader with the same name gets `` #2``
appended, a third `` #3``, and so on.

Known limitations: readers are discovered once (no hotplug); devices are
matched by vendor/product ID only, as pcscd's libudev backend does (a generic
CCID reader that no bundle lists is not found); a multi-slot driver shows one
reader at LUN 0 (the slot count is only known once the driver is loaded);
on macOS two identical readers share one device name (the friendly name),
so which is opened first is the driver's choice, as under pcscd there.
"""

from __future__ import annotations

import importlib
import logging
import os
import platform
import plistlib
import re
import subprocess
import sys
import xml.parsers.expat
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Callable, Iterable, Mapping, Optional, Sequence, Union

__all__ = [
    "AmbiguousReaderError",
    "DriverBundle",
    "ReaderDescriptor",
    "ReaderNotFoundError",
    "UsbDevice",
    "UsbInterface",
    "bundle_readers",
    "default_drop_dir",
    "default_drop_dirs",
    "find_reader",
    "list_readers",
    "parse_ioreg_usb",
    "read_bundles",
    "read_ioreg_usb_devices",
    "read_reader_conf",
    "read_usb_devices",
    "sim_readers",
    "SIM_ENV",
    "SIM_NAME",
]

log = logging.getLogger(__name__)

#: Environment variable giving the number of simulated readers.
SIM_ENV = "SCARDIO_SIM"
#: Name pattern of the simulated readers.
SIM_NAME = "scardio Simulated Reader {}"

DEFAULT_READER_CONF: tuple[str, ...] = ("/etc/reader.conf.d", "/etc/reader.conf")
DEFAULT_SYSFS_ROOT = "/sys"
#: The macOS command listing the USB plane of the IORegistry as a plist.
IOREG_COMMAND: tuple[str, ...] = ("ioreg", "-p", "IOUSB", "-l", "-a")
IOREG_TIMEOUT = 10.0
CCID_CLASS_DRIVER = "CCIDCLASSDRIVER"
USB_CLASS_SMART_CARD = 0x0B
USB_CLASS_VENDOR_SPECIFIC = 0xFF
_READER_INTERFACE_CLASSES = (USB_CLASS_SMART_CARD, USB_CLASS_VENDOR_SPECIFIC)

PathLike = Union[str, "os.PathLike[str]"]


# --------------------------------------------------------------------------
# Public types


@dataclass(frozen=True)
class ReaderDescriptor:
    """Everything needed to open a reader, and to show it to a person.

    ``source`` is "bundle", "reader.conf", "win32" or "sim";
    ``library`` the driver path; ``device_name`` and ``lun`` the arguments
    of ``IFDHCreateChannelByName``; ``extra`` a read-only mapping of
    source-specific details (always holding ``"available"``).  ``extra``
    takes no part in equality or hashing.
    """

    name: str
    source: str
    library: str
    device_name: str
    lun: int = 0
    extra: Mapping[str, object] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "extra", MappingProxyType(dict(self.extra)))

    @property
    def available(self) -> bool:
        return bool(self.extra.get("available", True))

    @property
    def busy(self) -> bool:
        """Held by another process, as far as ``list_readers(check_busy=True)``
        found (False when not checked)."""
        return bool(self.extra.get("busy", False))

    def __str__(self) -> str:
        return self.name


class ReaderNotFoundError(LookupError):
    """No reader matches.  ``query`` is what was asked for, ``candidates``
    the reader names that were available."""

    def __init__(self, message: str, query: Union[str, int],
                 candidates: Sequence[str]) -> None:
        super().__init__(message)
        self.query = query
        self.candidates = list(candidates)

    def __str__(self) -> str:
        return str(self.args[0])


class AmbiguousReaderError(ReaderNotFoundError):
    """More than one reader matches; ``candidates`` holds the matching names."""


@dataclass(frozen=True)
class UsbInterface:
    """One interface of a :class:`UsbDevice` (sysfs only)."""

    sysname: str  # e.g. "1-2:1.0"
    number: int
    interface_class: Optional[int]
    name: Optional[str]  # the interface string descriptor, if any


@dataclass(frozen=True)
class UsbDevice:
    """A USB device present, as enumerated by ``source``.

    ``source`` is ``"sysfs"`` (Linux: ``path`` is the sysfs directory) or
    ``"ioreg"`` (macOS: ``path`` is the IORegistry path in the USB plane,
    ``location_id`` the port location, ``session_id`` this attachment's
    session, ``interfaces`` empty because the USB plane lists devices only).
    """

    sysname: str  # e.g. "1-2"; on macOS "<name>@<locationID>"
    path: str
    vendor_id: int
    product_id: int
    busnum: int
    devnum: int
    serial: Optional[str]
    interfaces: tuple[UsbInterface, ...]
    source: str = "sysfs"
    product_name: Optional[str] = None
    location_id: Optional[int] = None
    session_id: Optional[int] = None

    @property
    def devnode(self) -> str:
        """The usbfs node udev creates for the device (Linux)."""
        return f"/dev/bus/usb/{self.busnum:03d}/{self.devnum:03d}"


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


# --------------------------------------------------------------------------
# Helpers


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


def _ascii_only(text: str) -> str:
    """pcscd replaces the non-ASCII characters of interface strings by '.'."""
    return "".join(c if ord(c) < 128 else "." for c in text)


def _bundle_platform_dir() -> str:
    """``Contents/<dir>`` holding a bundle's library: pcsc-lite uses the uname
    system name (``Linux``, ``FreeBSD``...), macOS uses ``MacOS``."""
    return _PLATFORM.library_dir


def default_drop_dirs() -> tuple[str, ...]:
    """pcscd's bundle directories on this platform, searched in this order."""
    return _PLATFORM.drop_dirs


def default_drop_dir() -> str:
    """The first of :func:`default_drop_dirs` (kept for callers that take one)."""
    return _PLATFORM.drop_dirs[0]


# --------------------------------------------------------------------------
# USB devices from sysfs


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


# --------------------------------------------------------------------------
# USB devices from the macOS IORegistry


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


# --------------------------------------------------------------------------
# The platform's sources, chosen once


def _libudev_device_name(dev: UsbDevice, intf: UsbInterface, friendly: str) -> str:
    return (f"usb:{dev.vendor_id:04x}/{dev.product_id:04x}:libudev:"
            f"{intf.number}:{dev.devnode}")


def _friendly_device_name(dev: UsbDevice, intf: UsbInterface, friendly: str) -> str:
    return friendly


#: How the IFD device name is built, by the enumeration that found the device.
_DEVICE_NAMERS: Mapping[str, Callable[[UsbDevice, UsbInterface, str], str]] = {
    "sysfs": _libudev_device_name,
    "ioreg": _friendly_device_name,
}


@dataclass(frozen=True)
class _PlatformSources:
    drop_dirs: tuple[str, ...]
    library_dir: str
    usb_devices: Callable[[], list[UsbDevice]]


def _platform_sources(name: str) -> _PlatformSources:
    if name == "darwin":
        return _PlatformSources(("/usr/local/libexec/SmartCardServices/drivers",
                                 "/usr/libexec/SmartCardServices/drivers"),
                                "MacOS", read_ioreg_usb_devices)
    system = platform.system() or "Linux"
    if name.startswith("freebsd"):
        return _PlatformSources(("/usr/local/lib/pcsc/drivers",), system, read_usb_devices)
    return _PlatformSources(("/usr/lib/pcsc/drivers",), system, read_usb_devices)


_PLATFORM = _platform_sources(sys.platform)


# --------------------------------------------------------------------------
# Driver bundles


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
        with open(plist_path, "rb") as f:
            info = plistlib.load(f)
    except FileNotFoundError:
        log.warning("skipping driver bundle %s: no Contents/Info.plist", bundle)
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


DropDirs = Union[PathLike, Sequence[PathLike]]


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
                      or i.interface_class in _READER_INTERFACE_CLASSES]
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
            device_name = _DEVICE_NAMERS[dev.source](dev, intf, friendly)
            available = os.path.exists(bundle.library)
            extra: dict[str, object] = {
                "available": available,
                "bundle": bundle.path,
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


# --------------------------------------------------------------------------
# reader.conf

_KEYS = ("FRIENDLYNAME", "DEVICENAME", "LIBPATH", "CHANNELID")
_TOKEN = re.compile(r"""\s*(?:(\#.*)|"([^"]*)"|'([^']*)'|(["'].*)|([^\s"'#]+))""")


def _tokens(line: str) -> list[str]:
    """Split a reader.conf line into tokens; raise ValueError when malformed."""
    out: list[str] = []
    pos = 0
    line = line.rstrip("\r\n")
    while pos < len(line):
        m = _TOKEN.match(line, pos)
        if m is None or m.end() == pos:
            break  # only trailing whitespace left
        comment, dq, sq, unterminated, bare = m.groups()
        if comment is not None:
            break
        if unterminated is not None:
            raise ValueError(f"unterminated quote: {unterminated}")
        out.append(dq if dq is not None else sq if sq is not None else bare)
        pos = m.end()
    return out


class _Entry:
    def __init__(self, path: str, line: int) -> None:
        self.path = path
        self.line = line
        self.values: dict[str, str] = {}
        self.problems: list[str] = []


def _parse_reader_conf(text: str, path: str) -> list[_Entry]:
    entries: list[_Entry] = []
    current: Optional[_Entry] = None
    for number, line in enumerate(text.splitlines(), 1):
        problem: Optional[str] = None
        try:
            tokens = _tokens(line)
        except ValueError as exc:
            problem = f"line {number}: {exc}"
            tokens = line.split()[:1]
        if not tokens:
            continue
        key = tokens[0].upper()
        if key not in _KEYS:
            log.warning("%s:%d: ignoring unknown keyword %r (expected one of %s)",
                        path, number, tokens[0], ", ".join(_KEYS))
            continue
        # A keyword already set in the current entry starts the next one.
        if current is None or key in current.values:
            current = _Entry(path, number)
            entries.append(current)
        if problem is None and len(tokens) != 2:
            what = "no value" if len(tokens) == 1 else (
                f"{len(tokens) - 1} values (quote values that contain spaces)")
            problem = f"line {number}: {key} has {what}"
        if problem is not None:
            current.problems.append(problem)
            current.values[key] = ""
        else:
            current.values[key] = tokens[1]
    return entries


def _entry_descriptor(entry: _Entry) -> tuple[Optional[ReaderDescriptor], list[str]]:
    """A descriptor for *entry* (None when it cannot describe a reader) and
    the reasons it is unavailable or invalid."""
    v = entry.values
    problems = list(entry.problems)
    for key in ("FRIENDLYNAME", "LIBPATH"):
        if not v.get(key):
            problems.append(f"{key} missing")
    if "DEVICENAME" not in v and "CHANNELID" not in v:
        problems.append("DEVICENAME or CHANNELID missing")
    channel: Optional[int] = None
    if v.get("CHANNELID"):
        try:
            # pcscd reads CHANNELID as hexadecimal, with or without 0x
            channel = int(v["CHANNELID"], 16)
        except ValueError:
            problems.append(f"CHANNELID {v['CHANNELID']!r} is not hexadecimal")
    if problems:
        return None, problems
    library = v["LIBPATH"]
    device = v.get("DEVICENAME", "")
    unavailable = []
    if not os.path.exists(library):
        unavailable.append(f"driver library {library} does not exist")
    if device and ":" not in device and not os.path.exists(device):
        unavailable.append(f"device {device} does not exist "
                           "(use DEVICENAME /dev/null if the driver ignores it)")
    extra: dict[str, object] = {
        "available": not unavailable,
        "config_file": entry.path,
        "line": entry.line,
        "channel_id": channel,
    }
    if unavailable:
        extra["problem"] = "; ".join(unavailable)
    return ReaderDescriptor(v["FRIENDLYNAME"], "reader.conf", library, device, 0, extra), []


def read_reader_conf(paths: Optional[Iterable[PathLike]] = None, *,
                     include_unavailable: bool = True) -> list[ReaderDescriptor]:
    """Readers declared in reader.conf files.  Each of *paths* (default
    ``/etc/reader.conf.d`` and ``/etc/reader.conf``) is a file or a directory
    whose regular, non-hidden files are read in name order; missing paths
    are ignored.  Malformed entries are skipped with a warning.  Unavailable
    entries (missing library or device) are returned with
    ``extra["available"] = False`` unless *include_unavailable* is false.
    """
    files: list[str] = []
    for p in DEFAULT_READER_CONF if paths is None else paths:
        p = os.fspath(p)
        if os.path.isdir(p):
            try:
                names = sorted(os.listdir(p))
            except OSError as exc:
                log.warning("cannot list %s: %s", p, exc)
                continue
            files.extend(os.path.join(p, n) for n in names
                         if not n.startswith(".") and os.path.isfile(os.path.join(p, n)))
        elif os.path.isfile(p):
            files.append(p)
    readers = []
    for path in files:
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                text = f.read()
        except OSError as exc:
            log.warning("cannot read reader configuration %s: %s", path, exc)
            continue
        for entry in _parse_reader_conf(text, path):
            desc, problems = _entry_descriptor(entry)
            if desc is None:
                log.warning("skipping reader entry at %s:%d: %s", path, entry.line,
                            "; ".join(problems))
                continue
            if not desc.available and not include_unavailable:
                log.warning("skipping reader %r (%s:%d): %s", desc.name, path,
                            entry.line, desc.extra["problem"])
                continue
            readers.append(desc)
    return readers


# --------------------------------------------------------------------------
# Simulated readers


def _sim_library() -> Optional[str]:
    """The simulated driver's path (scardio.sim), or None when the binding is
    not built (imported lazily: discovery works without it)."""
    try:
        sim = importlib.import_module(__name__.rpartition(".")[0] + ".sim")
    except ImportError:
        return None
    library = getattr(sim, "SIM_LIBRARY", None)
    return library if isinstance(library, str) else None


def _sim_count(sim: int) -> int:
    if sim < 0:
        raise ValueError(f"sim must be >= 0, got {sim}")
    if sim:
        return sim
    value = os.environ.get(SIM_ENV, "").strip()
    if not value:
        return 0
    try:
        count = int(value, 10)
    except ValueError:
        count = -1
    if count < 0:
        raise ValueError(f"{SIM_ENV} must be a non-negative integer, got {value!r}")
    return count


def sim_readers(count: int) -> list[ReaderDescriptor]:
    """*count* simulated reader descriptors (LUN 0 .. count-1)."""
    library = _sim_library()
    readers = []
    for i in range(count):
        extra: dict[str, object] = {"available": bool(library) and os.path.exists(library or "")}
        if not library:
            extra["problem"] = "the scardio._core binding is not built"
        elif not extra["available"]:
            extra["problem"] = f"simulated driver {library} does not exist"
        readers.append(ReaderDescriptor(SIM_NAME.format(i), "sim", library or "",
                                        f"sim:{i}", i, extra))
    return readers


# --------------------------------------------------------------------------
# Front


def _unique_names(readers: list[ReaderDescriptor]) -> list[ReaderDescriptor]:
    seen: dict[str, int] = {}
    taken = {r.name for r in readers}
    out = []
    for r in readers:
        n = seen.get(r.name, 0) + 1
        seen[r.name] = n
        if n > 1:
            new = f"{r.name} #{n}"
            while new in taken:
                n += 1
                new = f"{r.name} #{n}"
            seen[r.name] = n
            taken.add(new)
            r = ReaderDescriptor(new, r.source, r.library, r.device_name, r.lun, r.extra)
        out.append(r)
    return out


def list_readers(sim: int = 0, *, drop_dir: Optional[DropDirs] = None,
                 reader_conf_dirs: Optional[Iterable[PathLike]] = None,
                 sysfs_root: Optional[PathLike] = None,
                 include_unavailable: bool = False,
                 check_busy: bool = False) -> list[ReaderDescriptor]:
    """Every reader found: USB readers with a bundle driver, reader.conf
    readers, then *sim* simulated readers (``SCARDIO_SIM`` when *sim* is 0).

    *drop_dir* (one directory or several), *reader_conf_dirs* (files or
    directories) and *sysfs_root* override the system locations (for tests;
    a *sysfs_root* reads USB devices from sysfs on any platform).
    *check_busy* marks the readers another process holds (see the module
    docstring).  Raises ValueError only for a negative *sim* or a malformed
    ``SCARDIO_SIM``; problems in the files read are logged and the affected
    entries skipped.
    """
    count = _sim_count(sim)
    readers: list[ReaderDescriptor] = []
    if sys.platform != "win32":
        usb = (read_usb_devices(sysfs_root) if sysfs_root is not None
               else _PLATFORM.usb_devices())
        readers += bundle_readers(read_bundles(drop_dir), usb,
                                  include_unavailable=include_unavailable)
        readers += read_reader_conf(reader_conf_dirs,
                                    include_unavailable=include_unavailable)
    else:
        readers += device_path_readers()
    readers += sim_readers(count)
    if check_busy:
        readers = _mark_busy(readers)
    return _unique_names(readers)


def _mark_busy(readers: list[ReaderDescriptor]) -> list[ReaderDescriptor]:
    from .holders import check_readers
    usages = check_readers([(r.library, r.device_name, r.lun) for r in readers])
    marked = []
    for r, usage in zip(readers, usages):
        extra: dict[str, object] = {**r.extra, "busy": usage.busy}
        if usage.busy:
            extra["busy_summary"] = usage.summary()
            extra["holders"] = [h.as_dict() for h in usage.holders]
            if usage.suspects:
                extra["likely_holders"] = [h.as_dict() for h in usage.suspects]
        marked.append(ReaderDescriptor(r.name, r.source, r.library, r.device_name,
                                       r.lun, extra))
    return marked


def device_path_readers() -> list[ReaderDescriptor]:
    """Windows: one descriptor per smart-card reader device interface
    (source "win32", device_name the path).  Named by the start-up sequence
    when opened; until then by the path's device instance part."""
    try:
        from ._core import list_device_paths
    except ImportError:  # the binding is not built
        return []
    readers = []
    for path in list_device_paths():
        # \\?\root#scardio_sim#0000#{guid} -> "root#scardio_sim#0000"
        short = path.split("\\")[-1].rsplit("#", 1)[0] or path
        readers.append(ReaderDescriptor(name=short, source="win32", library="",
                                        device_name=path, extra={"available": True}))
    return readers


def find_reader(name_or_index: Union[str, int],
                readers: Optional[Sequence[ReaderDescriptor]] = None) -> ReaderDescriptor:
    """Pick one reader from *readers* (default: :func:`list_readers`).

    An ``int`` is an index.  A string matches, in order: a reader name
    exactly; an index when it is all digits; a name case-insensitively; a
    unique case-insensitive substring of a name.  Raises
    :class:`ReaderNotFoundError` or :class:`AmbiguousReaderError` (a
    subclass), whose messages list the candidates.
    """
    pool = list(list_readers() if readers is None else readers)
    names = [r.name for r in pool]
    position = {id(r): i for i, r in enumerate(pool)}

    def listing(items: Sequence[ReaderDescriptor]) -> str:
        if not items:
            return "no readers found"
        return "; ".join(f"{position[id(r)]}: {r.name!r}" for r in items)

    if isinstance(name_or_index, bool) or not isinstance(name_or_index, (int, str)):
        raise TypeError("find_reader() needs a reader name (str) or index (int), "
                        f"not {type(name_or_index).__name__}")
    if isinstance(name_or_index, int):
        if 0 <= name_or_index < len(pool):
            return pool[name_or_index]
        raise ReaderNotFoundError(
            f"no reader with index {name_or_index} ({len(pool)} reader(s): "
            f"{listing(pool)})", name_or_index, names)

    query = name_or_index
    exact = [r for r in pool if r.name == query]
    if len(exact) == 1:
        return exact[0]
    if len(exact) > 1:
        raise AmbiguousReaderError(
            f"{len(exact)} readers are named {query!r}: {listing(exact)}; use an index",
            query, [r.name for r in exact])
    if query.strip().isdigit():
        return find_reader(int(query.strip()), pool)
    folded = query.casefold()
    same = [r for r in pool if r.name.casefold() == folded]
    if len(same) == 1:
        return same[0]
    partial = same or [r for r in pool if folded in r.name.casefold()]
    if len(partial) == 1:
        return partial[0]
    if partial:
        raise AmbiguousReaderError(
            f"{query!r} matches {len(partial)} readers: {listing(partial)}; "
            "give more of the name or an index", query, [r.name for r in partial])
    raise ReaderNotFoundError(f"no reader matches {query!r} ({listing(pool)})",
                              query, names)
