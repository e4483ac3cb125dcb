"""The IOCTL contract's numbers as IntEnums: the Windows smart-card reader
IOCTLs, card states, power actions, protocols and attributes of native/scio.h.

The binding exports the C header's values too; tests check they agree.
"""

from __future__ import annotations

import enum

__all__ = ["IOCTL", "State", "Protocol", "Attr", "PowerAction", "ctl_code",
           "vendor_ctl_win", "vendor_ctl_pcsc", "ioctl_name"]

FILE_DEVICE_SMARTCARD = 0x31


def ctl_code(function: int) -> int:
    """CTL_CODE(FILE_DEVICE_SMARTCARD, function, METHOD_BUFFERED, FILE_ANY_ACCESS)."""
    if not 0 <= function <= 0xFFF:
        raise ValueError(f"IOCTL function number {function} is not in 0..4095")
    return (FILE_DEVICE_SMARTCARD << 16) | (function << 2)


def vendor_ctl_win(n: int) -> int:
    """Windows SCARD_CTL_CODE(n) (n >= 2048)."""
    if not 2048 <= n <= 0xFFF:
        raise ValueError(f"vendor function {n} is not in 2048..4095")
    return ctl_code(n)


def vendor_ctl_pcsc(n: int) -> int:
    """pcsc-lite SCARD_CTL_CODE(n) = 0x42000000 + n."""
    if not 0 <= n <= 0xFFFFFF:
        raise ValueError(f"vendor function {n} is out of range")
    return 0x42000000 + n


class IOCTL(enum.IntEnum):
    POWER = ctl_code(1)
    GET_ATTRIBUTE = ctl_code(2)
    SET_ATTRIBUTE = ctl_code(3)
    CONFISCATE = ctl_code(4)
    TRANSMIT = ctl_code(5)
    EJECT = ctl_code(6)
    SWALLOW = ctl_code(7)
    IS_PRESENT = ctl_code(10)
    IS_ABSENT = ctl_code(11)
    SET_PROTOCOL = ctl_code(12)
    GET_STATE = ctl_code(14)
    GET_LAST_ERROR = ctl_code(15)


class State(enum.IntEnum):
    UNKNOWN = 0
    ABSENT = 1
    PRESENT = 2
    SWALLOWED = 3
    POWERED = 4
    NEGOTIABLE = 5
    SPECIFIC = 6


class PowerAction(enum.IntEnum):
    POWER_DOWN = 0
    COLD_RESET = 1
    WARM_RESET = 2


class Protocol(enum.IntFlag):
    OPTIMAL = 0
    T0 = 0x1
    T1 = 0x2
    RAW = 0x10000
    DEFAULT = 0x80000000


class Attr(enum.IntEnum):
    VENDOR_NAME = 0x00010100
    VENDOR_IFD_TYPE = 0x00010101
    VENDOR_IFD_VERSION = 0x00010102
    VENDOR_IFD_SERIAL_NO = 0x00010103
    CHANNEL_ID = 0x00020110
    CHARACTERISTICS = 0x00060150
    CURRENT_PROTOCOL_TYPE = 0x00080201
    ATR_STRING = 0x00090303
    DEVICE_UNIT = 0x7FFF0001


def ioctl_name(code: int) -> str:
    """A readable name for an IOCTL code (standard, vendor or unknown)."""
    try:
        return IOCTL(code).name
    except ValueError:
        pass
    if code & 0xFF000000 == 0x42000000:
        return f"VENDOR_PCSC({code - 0x42000000})"
    if code & 0xFFFF0003 == 0x00310000 and (code >> 2) & 0xFFF >= 2048:
        return f"VENDOR({(code >> 2) & 0xFFF})"
    return f"IOCTL(0x{code:08X})"
