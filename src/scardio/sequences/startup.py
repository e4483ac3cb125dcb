"""The start-up sequence: the GET_ATTRIBUTEs that name a reader."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Optional

from ..constants import IOCTL, Attr
from . import NO_ATTRIBUTE, U32, Request, Steps, u32

__all__ = ["Characteristics", "ReaderAttributes", "startup_steps"]


class Characteristics(enum.IntFlag):
    """SCARD_ATTR_CHARACTERISTICS bits (0: no special mechanism)."""
    SWALLOWS = 0x1
    EJECTS = 0x2
    CONFISCATES = 0x4
    CONTACTLESS = 0x8


@dataclass(frozen=True)
class ReaderAttributes:
    """Decoded start-up attributes; None where the driver has none."""
    vendor_name: Optional[str] = None
    ifd_type: Optional[str] = None
    device_unit: Optional[int] = None
    ifd_version: Optional[str] = None
    characteristics: Optional[int] = None
    unsupported: tuple[str, ...] = ()

    @property
    def characteristics_flags(self) -> list[str]:
        if self.characteristics is None:
            return []
        return [f.name or "" for f in Characteristics if self.characteristics & f]

    def reader_name(self) -> Optional[str]:
        """VENDOR_NAME IFD_TYPE UNIT, as Windows names readers; None
        without a vendor name."""
        if not self.vendor_name:
            return None
        parts = [self.vendor_name]
        if self.ifd_type:
            parts.append(self.ifd_type)
        parts.append(str(self.device_unit or 0))
        return " ".join(parts)

    def as_dict(self) -> dict[str, Any]:
        return {"vendor_name": self.vendor_name, "ifd_type": self.ifd_type,
                "device_unit": self.device_unit, "ifd_version": self.ifd_version,
                "characteristics": self.characteristics,
                "characteristics_flags": self.characteristics_flags,
                "unsupported": list(self.unsupported)}


def _text(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace").strip()


def startup_steps() -> "Steps[ReaderAttributes]":
    """GET_ATTRIBUTE VENDOR_NAME, VENDOR_IFD_TYPE, DEVICE_UNIT (the name),
    VENDOR_IFD_VERSION, then CHARACTERISTICS."""
    got: dict[Attr, Optional[bytes]] = {}
    missing = []
    for attr in (Attr.VENDOR_NAME, Attr.VENDOR_IFD_TYPE, Attr.DEVICE_UNIT,
                 Attr.VENDOR_IFD_VERSION, Attr.CHARACTERISTICS):
        try:
            got[attr] = yield Request(IOCTL.GET_ATTRIBUTE, U32.pack(attr), 256)
        except NO_ATTRIBUTE:
            got[attr] = None
            missing.append(attr.name)
    version = None
    if got[Attr.VENDOR_IFD_VERSION] and len(got[Attr.VENDOR_IFD_VERSION] or b"") >= 4:
        v = u32(got[Attr.VENDOR_IFD_VERSION] or b"", "VENDOR_IFD_VERSION")
        version = f"{v >> 24}.{(v >> 16) & 0xFF}.{v & 0xFFFF}"  # 0xMMmmbbbb
    unit = got[Attr.DEVICE_UNIT]
    chars = got[Attr.CHARACTERISTICS]
    vendor, ifd_type = got[Attr.VENDOR_NAME], got[Attr.VENDOR_IFD_TYPE]
    return ReaderAttributes(
        vendor_name=_text(vendor) if vendor else None,
        ifd_type=_text(ifd_type) if ifd_type else None,
        device_unit=u32(unit, "DEVICE_UNIT") if unit and len(unit) >= 4 else None,
        ifd_version=version,
        characteristics=u32(chars, "CHARACTERISTICS") if chars and len(chars) >= 4 else None,
        unsupported=tuple(missing))
