"""The IOCTL contract's numbers as IntEnums: the Windows smart-card reader
IOCTLs, card states, power actions, protocols and attributes of native/scio.h.

The binding exports the C header's values too; tests check they agree.
"""

from __future__ import annotations

import enum

__all__ = ["IOCTL", "State", "Protocol", "Attr", "PowerAction", "Share", "ctl_code",
           "ext_ctl_code",
           "vendor_ctl_win", "vendor_ctl_pcsc", "ioctl_name", "attr_name",
           "power_action_name", "protocol_mask_name", "state_name"]

FILE_DEVICE_SMARTCARD = 0x31


def ctl_code(function: int) -> int:
    """CTL_CODE(FILE_DEVICE_SMARTCARD, function, METHOD_BUFFERED, FILE_ANY_ACCESS)."""
    if not 0 <= function <= 0xFFF:
        raise ValueError(f"IOCTL function number {function} is not in 0..4095")
    return (FILE_DEVICE_SMARTCARD << 16) | (function << 2)


def ext_ctl_code(function: int) -> int:
    """One of scardio's extension IOCTLs (native/scio.h, SCIO_EXT_CTL_CODE):
    a customer device type (0x8031), so that no driver ever sees one; every
    backend answers them itself."""
    if not 0 <= function <= 0xFFF:
        raise ValueError(f"IOCTL function number {function} is not in 0..4095")
    return 0x80310000 | (function << 2)


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
    # scardio's extensions (sharing, transactions, the card's power; see
    # native/scio.h)
    SET_SHARE_MODE = ext_ctl_code(1)
    BEGIN_TRANSACTION = ext_ctl_code(2)
    END_TRANSACTION = ext_ctl_code(3)
    RELEASE_CARD = ext_ctl_code(4)


class State(enum.IntEnum):
    """A reader's card state (GET_STATE); ``description`` says it in words."""
    UNKNOWN = 0
    ABSENT = 1
    PRESENT = 2
    SWALLOWED = 3
    POWERED = 4
    NEGOTIABLE = 5
    SPECIFIC = 6

    @property
    def description(self) -> str:
        return _STATE_DESCRIPTIONS[self]


_STATE_DESCRIPTIONS = {
    State.UNKNOWN: "state unknown (the driver cannot tell)",
    State.ABSENT: "no card",
    State.PRESENT: "card present, not swallowed (not in position for use)",
    State.SWALLOWED: "card present, not powered",
    State.POWERED: "powered, mode not known (no ATR read since the reset)",
    State.NEGOTIABLE: "powered, ATR read, protocol not yet chosen",
    State.SPECIFIC: "powered, protocol set",
}


class Share(enum.IntEnum):
    """SET_SHARE_MODE's values: DEFAULT asks for the mode the device was
    opened with; the answer is EXCLUSIVE or SHARED."""
    DEFAULT = 0
    EXCLUSIVE = 1
    SHARED = 2


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
    """SCARD_ATTR_* tags: SCARD_ATTR_VALUE(class, tag) = class << 16 | tag."""
    VENDOR_NAME = 0x00010100
    VENDOR_IFD_TYPE = 0x00010101
    VENDOR_IFD_VERSION = 0x00010102
    VENDOR_IFD_SERIAL_NO = 0x00010103
    CHANNEL_ID = 0x00020110
    PROTOCOL_TYPES = 0x00030120
    DEFAULT_CLK = 0x00030121
    MAX_CLK = 0x00030122
    DEFAULT_DATA_RATE = 0x00030123
    MAX_DATA_RATE = 0x00030124
    MAX_IFSD = 0x00030125
    SYNC_PROTOCOL_TYPES = 0x00030126
    POWER_MGMT_SUPPORT = 0x00040131
    USER_TO_CARD_AUTH_DEVICE = 0x00050140
    USER_AUTH_INPUT_DEVICE = 0x00050142
    CHARACTERISTICS = 0x00060150
    ESC_RESET = 0x0007A000
    ESC_CANCEL = 0x0007A003
    ESC_AUTHREQUEST = 0x0007A005
    MAXINPUT = 0x0007A007
    CURRENT_PROTOCOL_TYPE = 0x00080201
    CURRENT_CLK = 0x00080202
    CURRENT_F = 0x00080203
    CURRENT_D = 0x00080204
    CURRENT_N = 0x00080205
    CURRENT_W = 0x00080206
    CURRENT_IFSC = 0x00080207
    CURRENT_IFSD = 0x00080208
    CURRENT_BWT = 0x00080209
    CURRENT_CWT = 0x0008020A
    CURRENT_EBC_ENCODING = 0x0008020B
    EXTENDED_BWT = 0x0008020C
    ICC_PRESENCE = 0x00090300
    ICC_INTERFACE_STATUS = 0x00090301
    CURRENT_IO_STATE = 0x00090302
    ATR_STRING = 0x00090303
    ICC_TYPE_PER_ATR = 0x00090304
    DEVICE_UNIT = 0x7FFF0001
    DEVICE_IN_USE = 0x7FFF0002


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


def attr_name(tag: int) -> str:
    """An attribute tag's name (VENDOR_NAME), or its value in hex."""
    try:
        return Attr(tag).name
    except ValueError:
        return f"ATTR(0x{tag:08X})"


def power_action_name(action: int) -> str:
    """POWER's operation (COLD_RESET), or its value."""
    try:
        return PowerAction(action).name
    except ValueError:
        return f"POWER_ACTION({action})"


def state_name(state: int) -> str:
    """A GET_STATE value's name (SWALLOWED), or its value."""
    try:
        return State(state).name
    except ValueError:
        return f"STATE({state})"


_MASK_BITS = (Protocol.T0, Protocol.T1, Protocol.RAW, Protocol.DEFAULT)


def protocol_mask_name(mask: int) -> str:
    """A protocol mask as its flags, "T0|T1" (unknown bits in hex; 0 is "0")."""
    names = [p.name or "" for p in _MASK_BITS if mask & p]
    rest = mask & ~sum(_MASK_BITS)
    if rest:
        names.append(f"0x{rest:X}")
    return "|".join(names) or "0"
