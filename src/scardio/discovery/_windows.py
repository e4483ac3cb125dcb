r"""Windows: the readers are the OS's smart-card reader device interfaces,
opened by path through the binding; pcsc-lite's sources (driver bundles,
reader.conf) are not read.

Pairing with the Smart Cards for Windows service (SCardSvr): SCardSvr names
a reader ``VENDOR IFD_TYPE UNIT``, from the reader's SCARD_ATTR_VENDOR_NAME
and SCARD_ATTR_VENDOR_IFD_TYPE and its SCARD_ATTR_DEVICE_UNIT in decimal
(``HID Global OMNIKEY 3x21 Smart Card Reader 0``), as the start-up sequence
names it (:attr:`scardio.reader.Reader.name`).  Discovery cannot build that name
for a direct reader: the attributes need an open device, and while SCardSvr
runs it holds every reader (CreateFile fails), and the unit number is the
driver's to choose (it may change when the device is plugged in again).  So
the pairing asks SCardSvr instead: ``SCardGetReaderDeviceInstanceIdW``
(Windows 8 and later) gives the device instance ID of each reader it lists
(``USB\VID_076B&PID_3031\6&2C5B1F4&0&1``), and the reader pairs with the
direct reader whose device interface path names that instance
(``\\?\usb#vid_076b&pid_3031#6&2c5b1f4&0&1#{50dd5230-...}``: the
instance ID with ``#`` for ``\``, after ``\\?\`` and before the interface
GUID, a form Windows keeps but does not document as a contract; compared
case-insensitively), ``pcsc_match == "device"``.  That is exact for
identical readers too.  Where the call is missing or fails for a reader
(before Windows 8; inside a Remote Desktop session, where Microsoft
documents it failing; a reader introduced by name only), that reader is left
unpaired: listed twice, once per path, and opened through PC/SC only by its
resource manager name.  Without the resource manager, a name of this
scheme does not find a direct reader (it is known only once opened:
``Reader.name``).
"""

from __future__ import annotations

import platform
from typing import Any, Callable, Mapping, Optional, Sequence

from .descriptor import ReaderDescriptor
from .pairing import ResourceManagerNaming, paired_with, with_unpaired
from .sources import PlatformSources
from .usb import UsbDevice

__all__ = ["WINDOWS", "device_instance_id", "device_path_readers",
           "pair_with_device_instances", "resource_manager_instance_ids"]

#: SCARD_SCOPE_USER: the context SCardEstablishContext gives a program.
SCARD_SCOPE_USER = 0
#: SCARD_E_INSUFFICIENT_BUFFER, returned with the length needed.
SCARD_E_INSUFFICIENT_BUFFER = 0x80100008
#: MAX_DEVICE_ID_LEN of cfgmgr32.h: the longest device instance ID.
MAX_DEVICE_ID_LEN = 200


def sources() -> PlatformSources:
    """This OS's sources: no bundle directories, and no USB enumeration of
    its own (the device interfaces already are the readers)."""
    return PlatformSources((), platform.system() or "Windows", _no_usb_devices,
                           os_readers=device_path_readers, pcsc_naming=WINDOWS)


def _no_usb_devices() -> list[UsbDevice]:
    return []


def device_instance_id(path: str) -> Optional[str]:
    r"""The device instance ID a device interface path names:
    ``\\?\usb#vid_1#x#{guid}`` (optionally ``\reference`` after the GUID)
    -> ``usb\vid_1\x``; None for a path of another form."""
    body = path[4:] if path[:4] in ("\\\\?\\", "\\\\.\\") else path
    instance, sep, _ = body.rpartition("#{")
    if not sep or instance.count("#") < 2 or "\\" in instance:
        return None
    return instance.replace("#", "\\")


def device_path_readers() -> list[ReaderDescriptor]:
    """Windows: one descriptor per smart-card reader device interface
    (source "win32", device_name the path, ``extra["instance_id"]`` its
    device instance ID).  Named by the start-up sequence when opened;
    until then by the path's device instance part.  Elsewhere the binding
    lists no device paths, so this is empty."""
    try:
        from .._core import list_device_paths
    except ImportError:  # the binding is not built
        return []
    readers = []
    for path in list_device_paths():
        # \\?\root#scardio_sim#0000#{guid} -> "root#scardio_sim#0000"
        short = path.split("\\")[-1].rsplit("#", 1)[0] or path
        extra: dict[str, object] = {"available": True}
        instance = device_instance_id(path)
        if instance is not None:
            extra["instance_id"] = instance
        readers.append(ReaderDescriptor(name=short, source="win32", library="",
                                        device_name=path, extra=extra))
    return readers


def _bind(lib: Any) -> tuple[Callable[..., int], Callable[..., int], Callable[..., int]]:
    """The three winscard functions the lookup calls, typed (SCARDCONTEXT is
    pointer-sized, DWORD and LONG 32 bits)."""
    import ctypes
    context = ctypes.c_size_t
    establish = lib.SCardEstablishContext
    establish.argtypes = [ctypes.c_uint32, ctypes.c_void_p, ctypes.c_void_p,
                          ctypes.POINTER(context)]
    establish.restype = ctypes.c_int32
    instance = lib.SCardGetReaderDeviceInstanceIdW
    instance.argtypes = [context, ctypes.c_wchar_p, ctypes.c_wchar_p,
                         ctypes.POINTER(ctypes.c_uint32)]
    instance.restype = ctypes.c_int32
    release = lib.SCardReleaseContext
    release.argtypes = [context]
    release.restype = ctypes.c_int32
    return establish, instance, release


def instance_ids_from(lib: Any, names: Sequence[str]) -> dict[str, str]:
    """Reader name -> device instance ID, from winscard *lib* (a ctypes
    library, or a model of one), for each of *names* it answers; {} when no
    context can be established."""
    import ctypes
    establish, instance_id, release = _bind(lib)
    context = ctypes.c_size_t(0)
    if establish(SCARD_SCOPE_USER, None, None, ctypes.byref(context)) != 0:
        return {}
    found: dict[str, str] = {}
    try:
        for name in names:
            size = ctypes.c_uint32(MAX_DEVICE_ID_LEN + 1)
            for _ in range(2):  # once more with the length it asks for
                buffer = ctypes.create_unicode_buffer(size.value)
                size = ctypes.c_uint32(len(buffer))
                rc = instance_id(context, name, buffer, ctypes.byref(size)) & 0xFFFFFFFF
                if rc != SCARD_E_INSUFFICIENT_BUFFER or size.value <= len(buffer):
                    break
            if rc == 0 and buffer.value:
                found[name] = buffer.value
    finally:
        release(context)
    return found


def resource_manager_instance_ids(names: Sequence[str]) -> dict[str, str]:
    """Reader name -> device instance ID for each of *names* SCardSvr
    answers (``SCardGetReaderDeviceInstanceIdW``, one context for all);
    {} without winscard.dll or that function (before Windows 8), or
    elsewhere than Windows."""
    if not names:
        return {}
    try:
        import ctypes
        lib = ctypes.WinDLL("winscard")  # type: ignore[attr-defined,unused-ignore]
        getattr(lib, "SCardGetReaderDeviceInstanceIdW")  # AttributeError before Windows 8
    except (ImportError, OSError, AttributeError):
        return {}
    return instance_ids_from(lib, names)


def pair_with_device_instances(
        direct: Sequence[ReaderDescriptor], pcsc_names: Sequence[str],
        instance_ids: Optional[Callable[[Sequence[str]], Mapping[str, str]]] = None,
) -> list[ReaderDescriptor]:
    """The module doc's rule: each of *pcsc_names* whose device instance ID
    (*instance_ids*, default :func:`resource_manager_instance_ids`) is a
    direct reader's ``extra["instance_id"]`` pairs with it; the others are
    appended as ``source == "pcsc"`` descriptors."""
    lookup = resource_manager_instance_ids if instance_ids is None else instance_ids
    wanted = [n for n in pcsc_names if n not in {d.pcsc_name for d in direct}]
    ids = lookup(wanted) if wanted and any(
        isinstance(d.extra.get("instance_id"), str) for d in direct) else {}
    by_instance: dict[str, int] = {}
    for i, d in enumerate(direct):
        instance = d.extra.get("instance_id")
        if d.pcsc_name is None and isinstance(instance, str):
            by_instance.setdefault(instance.casefold(), i)
    out = list(direct)
    paired: set[str] = set()
    for name in wanted:
        instance = ids.get(name)
        i = by_instance.pop(instance.casefold(), -1) if instance else -1
        if i >= 0:
            out[i] = paired_with(out[i], name, "device", WINDOWS.scheme)
            paired.add(name)
    return with_unpaired(out, direct, pcsc_names, paired)


def _no_direct_reader_by_name(query: str, pool: Sequence[ReaderDescriptor]
                              ) -> Optional[ReaderDescriptor]:
    # SCardSvr's names come from attributes of an open device (module doc).
    return None


#: SCardSvr's scheme, ``VENDOR IFD_TYPE UNIT``, paired by device instance.
WINDOWS = ResourceManagerNaming("windows", pair_with_device_instances,
                                _no_direct_reader_by_name)
