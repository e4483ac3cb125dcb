"""What a response's status word (SW1 SW2) means, per ISO/IEC 7816-4.

The standard sorts status words into groups by SW1 (section 5.1.3):

==========  ===============  ============================================
SW1         category         group
==========  ===============  ============================================
90 (00)     normal           success
61          normal           SW2 more bytes available (GET RESPONSE)
62          warning          non-volatile memory unchanged
63          warning          non-volatile memory possibly changed
64          execution error  non-volatile memory unchanged
65          execution error  non-volatile memory changed
66          execution error  security-related issues
67 (00)     checking error   wrong length
68          checking error   functions in CLA not supported
69          checking error   command not allowed
6A          checking error   wrong parameters P1-P2 (with detail in SW2)
6B (00)     checking error   wrong parameters P1-P2
6C          checking error   wrong Le: SW2 bytes available
6D (00)     checking error   instruction code not supported or invalid
6E (00)     checking error   class not supported
6F (00)     checking error   no precise diagnosis
==========  ===============  ============================================

Within a group some SW2 values have a meaning of their own; any other SW2
gets the group's meaning.  For 67, 6B, 6D, 6E, 6F and 90 the standard
defines SW2 00 only and leaves the other values (and every 9X XX other than
90 00) to the card's issuer: those are *proprietary*.  SW1 60 is T=0's NULL
procedure byte, never a status word; any SW1 outside 6X / 9X is unknown.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

__all__ = ["StatusWord", "lookup_status_word", "describe_status_word", "NORMAL",
           "WARNING", "EXECUTION_ERROR", "CHECKING_ERROR", "PROPRIETARY", "UNKNOWN",
           "CATEGORIES"]

NORMAL = "normal processing"
WARNING = "warning"
EXECUTION_ERROR = "execution error"
CHECKING_ERROR = "checking error"
PROPRIETARY = "proprietary"
UNKNOWN = "unknown"
CATEGORIES = (NORMAL, WARNING, EXECUTION_ERROR, CHECKING_ERROR, PROPRIETARY, UNKNOWN)


class StatusWord(NamedTuple):
    """One status word explained.  ``specific`` is true when the standard
    gives this SW2 (or, for 61 / 6C / 63 Cx, this form of SW2) a meaning of
    its own, false for a group-level fallback, proprietary or unknown."""
    sw1: int
    sw2: int
    category: str
    meaning: str
    specific: bool

    @property
    def sw(self) -> int:
        return (self.sw1 << 8) | self.sw2

    def __str__(self) -> str:
        return f"{self.sw1:02X} {self.sw2:02X}: {self.meaning}"


# SW1 -> (category, the group's meaning).
_GROUPS: dict[int, tuple[str, str]] = {
    0x61: (NORMAL, "more data available"),
    0x62: (WARNING, "warning, non-volatile memory unchanged"),
    0x63: (WARNING, "warning, non-volatile memory possibly changed"),
    0x64: (EXECUTION_ERROR, "execution error, non-volatile memory unchanged"),
    0x65: (EXECUTION_ERROR, "execution error, non-volatile memory changed"),
    0x66: (EXECUTION_ERROR, "security-related issue"),
    0x67: (CHECKING_ERROR, "wrong length"),
    0x68: (CHECKING_ERROR, "function in CLA not supported"),
    0x69: (CHECKING_ERROR, "command not allowed"),
    0x6A: (CHECKING_ERROR, "wrong parameters P1-P2"),
    0x6B: (CHECKING_ERROR, "wrong parameters P1-P2"),
    0x6C: (CHECKING_ERROR, "wrong Le field"),
    0x6D: (CHECKING_ERROR, "instruction code not supported or invalid"),
    0x6E: (CHECKING_ERROR, "class not supported"),
    0x6F: (CHECKING_ERROR, "no precise diagnosis"),
    0x90: (NORMAL, "success"),
}

# Groups whose only standard value is SW2 00; the rest is proprietary.
_ONLY_00 = frozenset((0x67, 0x6B, 0x6D, 0x6E, 0x6F, 0x90))

# (SW1, SW2) -> meaning, for the SW2 values the standard names.
_SPECIFIC: dict[tuple[int, int], str] = {
    (0x90, 0x00): "success",
    (0x62, 0x00): "warning, no information given (non-volatile memory unchanged)",
    (0x62, 0x81): "part of the returned data may be corrupted",
    (0x62, 0x82): "end of file or record reached before Ne bytes were read",
    (0x62, 0x83): "selected file deactivated",
    (0x62, 0x84): "file control information not formatted as ISO 7816-4 requires",
    (0x62, 0x85): "selected file in termination state",
    (0x62, 0x86): "no input data available from a sensor on the card",
    (0x63, 0x00): "warning, no information given (non-volatile memory possibly changed)",
    (0x63, 0x81): "file filled up by the last write",
    (0x64, 0x00): "execution error, no information given (non-volatile memory unchanged)",
    (0x64, 0x01): "immediate response required by the card",
    (0x65, 0x00): "execution error, no information given (non-volatile memory changed)",
    (0x65, 0x81): "memory failure",
    (0x67, 0x00): "wrong length",
    (0x68, 0x00): "function in CLA not supported, no information given",
    (0x68, 0x81): "logical channel not supported",
    (0x68, 0x82): "secure messaging not supported",
    (0x68, 0x83): "last command of the chain expected",
    (0x68, 0x84): "command chaining not supported",
    (0x69, 0x00): "command not allowed, no information given",
    (0x69, 0x81): "command incompatible with the file structure",
    (0x69, 0x82): "security status not satisfied",
    (0x69, 0x83): "authentication method blocked",
    (0x69, 0x84): "reference data not usable",
    (0x69, 0x85): "conditions of use not satisfied",
    (0x69, 0x86): "command not allowed (no current EF)",
    (0x69, 0x87): "expected secure messaging data objects missing",
    (0x69, 0x88): "incorrect secure messaging data objects",
    (0x6A, 0x00): "wrong parameters P1-P2, no information given",
    (0x6A, 0x80): "incorrect parameters in the command data field",
    (0x6A, 0x81): "function not supported",
    (0x6A, 0x82): "file or application not found",
    (0x6A, 0x83): "record not found",
    (0x6A, 0x84): "not enough memory space in the file",
    (0x6A, 0x85): "Nc inconsistent with the TLV structure",
    (0x6A, 0x86): "incorrect parameters P1-P2",
    (0x6A, 0x87): "Nc inconsistent with parameters P1-P2",
    (0x6A, 0x88): "referenced data or reference data not found",
    (0x6A, 0x89): "file already exists",
    (0x6A, 0x8A): "DF name already exists",
    (0x6B, 0x00): "wrong parameters P1-P2",
    (0x6D, 0x00): "instruction code not supported or invalid",
    (0x6E, 0x00): "class not supported",
    (0x6F, 0x00): "no precise diagnosis",
}


def _bytes_available(sw2: int) -> str:
    return "256 or more" if sw2 == 0 else str(sw2)


def _parametrised(sw1: int, sw2: int) -> Optional[str]:
    """Meanings that carry a number in SW2."""
    if sw1 == 0x61:
        return f"{_bytes_available(sw2)} bytes available (GET RESPONSE fetches them)"
    if sw1 == 0x6C:
        exact = 256 if sw2 == 0 else sw2
        return f"wrong Le: {exact} bytes available (send again with Le {sw2:02X})"
    if sw1 == 0x63 and sw2 & 0xF0 == 0xC0:
        x = sw2 & 0x0F
        return f"counter {x} (e.g. {x} tries left; the meaning depends on the command)"
    if sw1 in (0x62, 0x64) and 0x02 <= sw2 <= 0x80:
        return f"triggering by the card (SW2 {sw2:02X})"
    return None


def lookup_status_word(sw1: int, sw2: Optional[int] = None) -> StatusWord:
    """Explain a status word, given as SW1 and SW2 or as one 16-bit SW."""
    if sw2 is None:
        if not 0 <= sw1 <= 0xFFFF:
            raise ValueError(f"a status word is 0000..FFFF, got {sw1:#x}")
        sw1, sw2 = sw1 >> 8, sw1 & 0xFF
    for name, v in (("SW1", sw1), ("SW2", sw2)):
        if not 0 <= v <= 0xFF:
            raise ValueError(f"{name} must be a byte (0..255), got {v!r}")
    meaning = _SPECIFIC.get((sw1, sw2))
    if meaning is None:
        meaning = _parametrised(sw1, sw2)
    if meaning is not None:
        return StatusWord(sw1, sw2, _GROUPS[sw1][0], meaning, True)
    group = _GROUPS.get(sw1)
    if group is not None:
        category, text = group
        if sw1 in _ONLY_00:
            return StatusWord(sw1, sw2, PROPRIETARY,
                              f"proprietary (ISO 7816-4 defines only {sw1:02X} 00: "
                              f"{text})", False)
        return StatusWord(sw1, sw2, category,
                          f"{text} (SW2 {sw2:02X}: no specific meaning in ISO 7816-4)",
                          False)
    if sw1 & 0xF0 == 0x90:
        return StatusWord(sw1, sw2, PROPRIETARY,
                          "proprietary (ISO 7816-4 leaves 9X XX other than 90 00 to "
                          "the card's application)", False)
    if sw1 == 0x60:
        return StatusWord(sw1, sw2, UNKNOWN, "unknown status word (60 is the T=0 NULL "
                          "procedure byte, never a status word)", False)
    return StatusWord(sw1, sw2, UNKNOWN, f"unknown status word (SW1 {sw1:02X} is outside "
                      "ISO 7816-4's 6X and 9X groups)", False)


def describe_status_word(sw1: int, sw2: Optional[int] = None) -> str:
    """E.g. ``describe_status_word(0x6A, 0x82)`` -> "6A 82: file or
    application not found"."""
    return str(lookup_status_word(sw1, sw2))
