"""The USB devices an OS enumerates, as pcsc-lite's driver bundles are
matched against them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

__all__ = ["UsbDevice", "UsbInterface"]

USB_CLASS_SMART_CARD = 0x0B
USB_CLASS_VENDOR_SPECIFIC = 0xFF
#: The interface classes pcscd offers to a driver that lists the device.
READER_INTERFACE_CLASSES = (USB_CLASS_SMART_CARD, USB_CLASS_VENDOR_SPECIFIC)


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
