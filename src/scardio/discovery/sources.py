"""What a per-OS module of discovery provides: :class:`PlatformSources`.

Each OS has one module (``_linux``, ``_macos``, ``_freebsd``, ``_windows``)
with a ``sources()`` function returning one of these, and a
``device_name`` function where it enumerates USB devices; ``_platform``
picks the module once.  Code outside those modules reads the chosen
sources and never asks which OS it runs on.  How the OS's PC/SC resource
manager names its readers (for pairing them with the direct ones) is part
of the sources too: pcsc-lite's scheme unless the OS has its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

from .descriptor import ReaderDescriptor
from .pairing import PCSC_LITE, ResourceManagerNaming
from .usb import UsbDevice, UsbInterface

__all__ = ["DeviceNamer", "PlatformSources"]

#: Builds the IFD device name of one interface of a USB device, given the
#: friendly name the driver bundle lists for it.
DeviceNamer = Callable[[UsbDevice, UsbInterface, str], str]


@dataclass(frozen=True)
class PlatformSources:
    """Where one OS keeps what discovery reads.

    ``drop_dirs`` are pcscd's driver bundle directories, in search order;
    ``library_dir`` names the ``Contents/<dir>`` of a bundle holding the
    driver library; ``usb_devices`` enumerates the USB devices present.
    ``os_readers``, when set, lists the readers the OS itself knows, read
    in place of the pcsc-lite sources (driver bundles and reader.conf).
    ``pcsc_naming`` is how this OS's resource manager names its readers
    (:data:`~scardio.discovery.pairing.PCSC_LITE` unless given).
    """

    drop_dirs: tuple[str, ...]
    library_dir: str
    usb_devices: Callable[[], list[UsbDevice]]
    os_readers: Optional[Callable[[], list[ReaderDescriptor]]] = None
    pcsc_naming: ResourceManagerNaming = field(default=PCSC_LITE)
