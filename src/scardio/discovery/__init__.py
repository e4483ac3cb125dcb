"""Reader discovery: find the readers a driver can open, without pcscd.

The sources, in the order their readers are listed:

``"bundle"`` (:mod:`~scardio.discovery.bundles`)
    pcsc-lite USB driver bundles ``<drop_dir>/*.bundle/Contents/Info.plist``
    (``CFBundleExecutable``, ``ifdVendorID``, ``ifdProductID``,
    ``ifdFriendlyName``), matched by vendor/product ID against the USB
    devices present: from sysfs (``/sys/bus/usb/devices``) on Linux, from
    the IORegistry (``ioreg``) on macOS.  One reader per USB interface of
    class 0x0B (smart card) or 0xFF (vendor specific); the device name is
    built as pcscd's hotplug builds it (on Linux
    ``usb:VVVV/PPPP:libudev:<bInterfaceNumber>:/dev/bus/usb/BBB/DDD``, on
    macOS the friendly name), and the name is the bundle's friendly name
    plus `` [<interface string>]`` and `` (<serial>)`` as pcscd adds them.
    A bundle whose ``CFBundleName`` is ``CCIDCLASSDRIVER`` is used only
    when no other bundle lists the device (``extra["fallback_library"]``
    names it otherwise).

``"reader.conf"`` (:mod:`~scardio.discovery.reader_conf`)
    Serial and virtual readers declared in ``/etc/reader.conf.d/*`` and
    ``/etc/reader.conf``: ``FRIENDLYNAME``, ``DEVICENAME``, ``LIBPATH``,
    ``CHANNELID`` lines (``#`` comments, values optionally quoted).

``"win32"`` (:mod:`~scardio.discovery._windows`)
    On Windows, in place of the two above: the smart-card reader device
    interfaces, opened by path.

``"sim"`` (:mod:`~scardio.discovery.simulated`)
    ``sim=N`` (or the ``SCARDIO_SIM=N`` environment variable when ``sim`` is
    0) adds N simulated readers, ``scardio Simulated Reader 0`` .. ``N-1``,
    LUN 0 .. N-1, whose library is ``scardio.sim.SIM_LIBRARY``.

``"pcsc"`` (:mod:`~scardio.discovery.resource_manager`)
    With ``pcsc`` (the default), the PC/SC resource manager's readers when
    one is reachable (a listing never fails or hangs for want of one: it
    waits ``pcsc_timeout`` seconds at most, and without a resource manager
    or its client library it costs about a millisecond).  A resource
    manager reader that pairs with a reader found above sets that
    descriptor's ``pcsc_name``, so the reader is listed once with both
    paths; the others are listed last, with ``source == "pcsc"``.  Each
    OS's resource manager names readers its own way, and the pairing
    follows it (:mod:`~scardio.discovery.pairing`): pcsc-lite's
    ``FRIENDLY NN SS`` by friendly name (Linux, FreeBSD); SCardSvr's
    ``VENDOR IFD_TYPE UNIT`` by device instance ID (Windows:
    :mod:`~scardio.discovery._windows`); macOS's ``FRIENDLY``,
    ``FRIENDLY 01``, ``FRIENDLY(2)`` by friendly name
    (:mod:`~scardio.discovery._macos`).  Asking may start a
    socket-activated pcscd: ``pcsc=False`` does not ask.

Each OS's locations and USB enumeration live in one module per OS
(``_linux``, ``_macos``, ``_freebsd``, ``_windows``), chosen once by
``_platform``; the rest of the package never asks which OS it runs on.

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
see :mod:`scardio.holders`); other readers get ``extra["busy"] = False``
(:mod:`~scardio.discovery.busy`).

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

import logging
from typing import Iterable, Optional, Sequence, Union

from .. import errors

from ._platform import current
from .bundles import CCID_CLASS_DRIVER as CCID_CLASS_DRIVER
from .bundles import DropDirs as DropDirs
from .bundles import (DriverBundle, bundle_readers, default_drop_dir, default_drop_dirs,
                      read_bundles)
from .busy import mark_busy
from .descriptor import PathLike as PathLike
from .descriptor import (AmbiguousReaderError, ReaderDescriptor, ReaderNotFoundError,
                         unique_names)
from .reader_conf import DEFAULT_READER_CONF as DEFAULT_READER_CONF
from .reader_conf import read_reader_conf
from . import resource_manager
from .resource_manager import DEFAULT_TIMEOUT as DEFAULT_PCSC_TIMEOUT
from .resource_manager import pair_with_resource_manager, pcsc_style_match
from .simulated import SIM_ENV, SIM_NAME, sim_count, sim_readers
from .usb import USB_CLASS_SMART_CARD as USB_CLASS_SMART_CARD
from .usb import USB_CLASS_VENDOR_SPECIFIC as USB_CLASS_VENDOR_SPECIFIC
from .usb import UsbDevice, UsbInterface

# The per-OS modules' public names, re-exported from here and imported at
# first use: a listing imports only the module of the OS it runs on.
_PER_OS_NAMES = {
    "DEFAULT_SYSFS_ROOT": "_linux", "read_usb_devices": "_linux",
    "IOREG_COMMAND": "_macos", "IOREG_TIMEOUT": "_macos", "parse_ioreg_usb": "_macos",
    "read_ioreg_usb_devices": "_macos", "device_path_readers": "_windows",
}
TYPE_CHECKING = False
if TYPE_CHECKING:
    from ._linux import DEFAULT_SYSFS_ROOT as DEFAULT_SYSFS_ROOT
    from ._linux import read_usb_devices
    from ._macos import IOREG_COMMAND as IOREG_COMMAND
    from ._macos import IOREG_TIMEOUT as IOREG_TIMEOUT
    from ._macos import parse_ioreg_usb, read_ioreg_usb_devices
    from ._windows import device_path_readers as device_path_readers
else:  # type checkers see the imports above, not a catch-all
    def __getattr__(name: str) -> object:
        module = _PER_OS_NAMES.get(name)
        if module is None:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        from importlib import import_module
        value = getattr(import_module(f".{module}", __name__), name)
        globals()[name] = value  # later lookups skip this function
        return value

# Besides __all__, the names imported "as" themselves above stay importable
# from here, as they were before the split.
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

#: The logger every module of the package writes to.
log = logging.getLogger(__name__)


def list_readers(sim: int = 0, *, drop_dir: Optional[DropDirs] = None,
                 reader_conf_dirs: Optional[Iterable[PathLike]] = None,
                 sysfs_root: Optional[PathLike] = None,
                 include_unavailable: bool = False,
                 check_busy: bool = False, pcsc: bool = True,
                 pcsc_timeout: float = DEFAULT_PCSC_TIMEOUT) -> list[ReaderDescriptor]:
    """Every reader found: USB readers with a bundle driver, reader.conf
    readers (on Windows the device interfaces instead), then *sim* simulated
    readers (``SCARDIO_SIM`` when *sim* is 0), then, with *pcsc*, the
    resource manager's readers that pair with none of those (a pairing one
    sets the direct reader's ``pcsc_name``: see the module docstring).

    *drop_dir* (one directory or several), *reader_conf_dirs* (files or
    directories) and *sysfs_root* override the system locations (for tests;
    a *sysfs_root* reads USB devices from sysfs on any platform).
    *check_busy* marks the readers another process holds (see the module
    docstring).  *pcsc_timeout* bounds the wait for the resource manager.
    Raises ValueError only for a negative *sim*, a negative *pcsc_timeout*
    or a malformed ``SCARDIO_SIM``; problems in the files read, and a
    resource manager that is absent or does not answer, are logged and the
    affected entries skipped.
    """
    if not pcsc_timeout >= 0:
        raise ValueError(f"pcsc_timeout must be >= 0 seconds, got {pcsc_timeout!r}")
    count = sim_count(sim)
    question: Union[resource_manager.Question, errors.ScardioError, None] = None
    if pcsc:
        try:
            question = resource_manager.ask()  # answered while the files are read
        except errors.ScardioError as exc:
            question = exc
    here = current()
    readers: list[ReaderDescriptor] = []
    if here.os_readers is not None:
        readers += here.os_readers()
    else:
        if sysfs_root is not None:
            from ._linux import read_usb_devices as read_sysfs
            usb = read_sysfs(sysfs_root)
        else:
            usb = here.usb_devices()
        readers += bundle_readers(read_bundles(drop_dir), usb,
                                  include_unavailable=include_unavailable)
        readers += read_reader_conf(reader_conf_dirs,
                                    include_unavailable=include_unavailable)
    readers += sim_readers(count)
    if question is not None:
        readers = unique_names(readers)  # pairing reads the friendly names it keeps
        try:
            if isinstance(question, errors.ScardioError):
                raise question
            names = question.answer(pcsc_timeout)
        except errors.ScardioError as exc:
            log.debug("not listing the PC/SC resource manager's readers: %s", exc)
        else:
            readers = pair_with_resource_manager(readers, names)
    if check_busy:
        readers = mark_busy(readers)
    return unique_names(readers)


def find_reader(name_or_index: Union[str, int],
                readers: Optional[Sequence[ReaderDescriptor]] = None) -> ReaderDescriptor:
    """Pick one reader from *readers* (default: :func:`list_readers`).

    An ``int`` is an index.  A string matches, in order: a reader name
    exactly; an index when it is all digits; a name case-insensitively; a
    name in this OS's resource manager scheme (pcsc-lite's ``"FRIENDLY NN
    SS"``, macOS's ``"FRIENDLY 01"``: the direct reader it names when the
    resource manager does not list it; see
    :func:`~scardio.discovery.resource_manager.pcsc_style_match`); a unique
    case-insensitive substring of a name.  A reader's names are its
    ``name`` and its ``pcsc_name``.  Raises :class:`ReaderNotFoundError` or
    :class:`AmbiguousReaderError` (a subclass), whose messages list the
    candidates.
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

    def names_of(r: ReaderDescriptor) -> tuple[str, ...]:
        return (r.name,) if r.pcsc_name is None else (r.name, r.pcsc_name)

    query = name_or_index
    exact = [r for r in pool if query in names_of(r)]
    if len(exact) == 1:
        return exact[0]
    if len(exact) > 1:
        raise AmbiguousReaderError(
            f"{len(exact)} readers are named {query!r}: {listing(exact)}; use an index",
            query, [r.name for r in exact])
    if query.strip().isdigit():
        return find_reader(int(query.strip()), pool)
    folded = query.casefold()
    same = [r for r in pool if any(n.casefold() == folded for n in names_of(r))]
    if len(same) == 1:
        return same[0]
    if not same:
        styled = pcsc_style_match(query, pool)
        if styled is not None:
            return styled
    partial = same or [r for r in pool if any(folded in n.casefold() for n in names_of(r))]
    if len(partial) == 1:
        return partial[0]
    if partial:
        raise AmbiguousReaderError(
            f"{query!r} matches {len(partial)} readers: {listing(partial)}; "
            "give more of the name or an index", query, [r.name for r in partial])
    raise ReaderNotFoundError(f"no reader matches {query!r} ({listing(pool)})",
                              query, names)
