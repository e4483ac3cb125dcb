"""Steer the simulated reader driver through its vendor controls.

The simulated reader is a real IFD-handler driver shipped inside the package
(:data:`SIM_LIBRARY`; :func:`open_device` opens one of its readers); these
helpers send it the controls described in native/sim/sim_protocol.h through
an open :class:`scardio.Device`.  The
numbers below are that header's (tests/test_sim_protocol.py checks they
agree); the core and the binding know nothing of them.

A reader of this process can also hold a card written in Python
(:class:`VirtualCard`, inserted with ``SimControl.insert(card=...)``; see
docs/virtual-cards.md): the reader reaches it through its external-card
extension (native/sim/ext_card.h), not through a control.
"""

from __future__ import annotations

import enum
import os
import struct
from dataclasses import dataclass
from typing import Optional, Union

from .._core import Device
from ..constants import vendor_ctl_pcsc
from .virtual_card import CardMute, VirtualCard
from .replay import ReplayCard, ReplayMismatch

__all__ = ["SIM_LIBRARY", "open_device", "Control", "CardKind", "EntryPoint", "Fault", "Counter",
           "COUNTER_COUNT", "SimCounters", "SimControl", "ATR_T1", "ATR_T0", "AID",
           "EF_SIZE", "VENDOR_NAME", "IFD_TYPE", "CLA_PROPRIETARY", "INS_ECHO", "VirtualCard",
           "CardMute", "ReplayCard", "ReplayMismatch"]

#: The simulated reader driver, built with the package and shipped beside it.
SIM_LIBRARY = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                           "libscardio_sim.dll" if os.name == "nt" else "libscardio_sim.so")


def open_device(lun: int = 0, *, poll_interval_ms: int = 0,
                close_timeout_ms: int = 0, polling: bool = True,
                event_counts: bool = True, event_generation: bool = True) -> Device:
    """Open reader `lun` of the simulated reader driver (it starts with no
    card; steer it with :class:`SimControl`).  With ``polling=False`` the
    reader offers no polling function, like drivers that can only be asked
    whether a card is in (the core then asks every `poll_interval_ms`); with
    ``event_counts=False`` it does not count card events (scardio's IFD
    extension), like most third-party drivers; with ``event_generation=False``
    it counts them but offers no library-wide card-event generation (the
    extension a host reads once per poll interval for all readers)."""
    options = [o for o, off in (("nopoll", not polling), ("noevents", not event_counts),
                                ("nogeneration", not event_generation)) if off]
    name = f"sim:{lun}?{','.join(options)}" if options else f"sim:{lun}"
    return Device.open_ifd(SIM_LIBRARY, name, lun, poll_interval_ms=poll_interval_ms,
                           close_timeout_ms=close_timeout_ms)


ATR_T1 = bytes.fromhex("3BF81300008131FE457363617264696F31B0")
ATR_T0 = bytes.fromhex("3B680000" "73636172" "64696F30")
AID = bytes.fromhex("F07363617264696F")  # the card's application
EF_SIZE = 4096                           # bytes in each of the card's EFs
VENDOR_NAME = "scardio"
IFD_TYPE = "Simulated Reader"
CLA_PROPRIETARY = 0x80                   # with INS_ECHO: the ECHO command
INS_ECHO = 0xEE


class Control(enum.IntEnum):
    """Vendor control function numbers n (code 0x42000000 + n)."""
    INSERT = 3500
    REMOVE = 3501
    SET_LATENCY = 3502
    FAULT = 3503
    STOP = 3504
    COUNTERS = 3505
    RESET_COUNTERS = 3507


class CardKind(enum.IntEnum):
    """The one-byte input of Control.INSERT."""
    T1 = 0
    T0 = 1


class EntryPoint(enum.IntEnum):
    """IFDH entry points, for faults and call counters."""
    CREATE_CHANNEL = 0
    CLOSE_CHANNEL = 1
    GET_CAPABILITIES = 2
    SET_CAPABILITIES = 3
    SET_PROTOCOL = 4
    POWER_ICC = 5
    TRANSMIT = 6
    ICC_PRESENCE = 7
    CONTROL = 8
    POLLING = 9


class Fault(enum.IntEnum):
    NONE = 0
    RETURN = 1
    REMOVE_CARD = 2
    BLOCK = 3
    OVERLONG_LENGTH = 4
    LONG_ATR = 5


class Counter(enum.IntEnum):
    """Index of each u32 in the output of Control.COUNTERS, after one call
    count per EntryPoint."""
    POWER_UPS = len(EntryPoint) + 0
    RESETS = len(EntryPoint) + 1
    POWER_DOWNS = len(EntryPoint) + 2
    POWERED = len(EntryPoint) + 3
    PRESENT = len(EntryPoint) + 4
    INSERTIONS = len(EntryPoint) + 5
    REMOVALS = len(EntryPoint) + 6
    PROTOCOL = len(EntryPoint) + 7
    LATENCY_US = len(EntryPoint) + 8


COUNTER_COUNT = len(EntryPoint) + len(Counter)


@dataclass(frozen=True)
class SimCounters:
    calls: dict[EntryPoint, int]
    power_ups: int
    resets: int
    power_downs: int
    powered: bool
    present: bool
    insertions: int
    removals: int
    protocol: int
    latency_us: int


def _ctl(n: int) -> int:
    return vendor_ctl_pcsc(n)


class SimControl:
    """Vendor controls of one simulated reader (one LUN)."""

    def __init__(self, device: Device) -> None:
        self.device = device

    def _send(self, n: int, data: bytes = b"", output_size: int = 0) -> bytes:
        return self.device.ioctl(_ctl(n), data, output_size)

    def insert(self, atr: Optional[bytes] = None, *, t0: bool = False,
               card: Optional[VirtualCard] = None) -> None:
        """Insert a card: the default T=1 card, the T=0 card, one with the
        given ATR (2..33 bytes), or `card`, a :class:`VirtualCard` whose
        code answers (its ATR is checked by :func:`scardio.atr.parse_atr`
        here: an :class:`~scardio.atr.ATRError` names what is wrong).  A
        card inserted over another swaps it; the reader keeps a
        VirtualCard until it is removed, swapped or the device closed."""
        if card is not None:
            if atr is not None or t0:
                raise ValueError("give card alone, without atr or t0")
            if self.device.closed:
                from ..errors import ClosedError
                raise ClosedError("insert(card=...): the device is closed")
            from ._host import insert_card
            insert_card(self.device.library, self.device.lun, card)
        elif atr is not None:
            if t0:
                raise ValueError("give either atr or t0, not both")
            if not 2 <= len(atr) <= 33:
                raise ValueError(f"an ATR has 2..33 bytes, got {len(atr)}")
            self._send(Control.INSERT, bytes(atr))
        else:
            self._send(Control.INSERT, bytes([CardKind.T0 if t0 else CardKind.T1]))

    def remove(self) -> None:
        self._send(Control.REMOVE)

    def set_latency(self, microseconds: int) -> None:
        """Add this delay to every driver call of the reader."""
        self._send(Control.SET_LATENCY, struct.pack("<I", microseconds))

    def fault(self, entry: Union[EntryPoint, int], kind: Union[Fault, int],
              value: int = 0) -> None:
        """Arm a fault for the next call of `entry`."""
        self._send(Control.FAULT, struct.pack("<III", int(entry), int(kind), value))

    def stop(self) -> None:
        """Release calls held by a BLOCK fault and disarm every fault."""
        self._send(Control.STOP)

    def reset_counters(self) -> None:
        self._send(Control.RESET_COUNTERS)

    def counters(self) -> SimCounters:
        n = COUNTER_COUNT
        raw = self._send(Control.COUNTERS, b"", 4 * n)
        if len(raw) != 4 * n:
            raise ValueError(f"counters: expected {4 * n} bytes, got {len(raw)}")
        v = struct.unpack(f"<{n}I", raw)
        return SimCounters(
            calls={ep: v[ep] for ep in EntryPoint},
            power_ups=v[Counter.POWER_UPS], resets=v[Counter.RESETS],
            power_downs=v[Counter.POWER_DOWNS], powered=bool(v[Counter.POWERED]),
            present=bool(v[Counter.PRESENT]), insertions=v[Counter.INSERTIONS],
            removals=v[Counter.REMOVALS], protocol=v[Counter.PROTOCOL],
            latency_us=v[Counter.LATENCY_US])
