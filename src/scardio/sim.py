"""Steer the simulated reader driver through its vendor controls.

The simulated reader is a real IFD-handler driver shipped inside the package
(``scardio._core.SIM_LIBRARY``); these helpers send it the controls described
in native/sim/sim_protocol.h through an open :class:`scardio.Device`.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from typing import Optional, Union

from ._core import SIM, SIM_LIBRARY, Device
from .constants import State, vendor_ctl_pcsc

__all__ = ["SIM_LIBRARY", "EntryPoint", "Fault", "SimCounters", "SimControl",
           "ATR_T1", "ATR_T0"]

ATR_T1 = bytes.fromhex("3BF81300008131FE457363617264696F31B0")
ATR_T0 = bytes.fromhex("3B680000" "73636172" "64696F30")


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
    RETURN = SIM["FAULT_RETURN"]
    REMOVE_CARD = SIM["FAULT_REMOVE_CARD"]
    BLOCK = SIM["FAULT_BLOCK"]
    OVERLONG_LENGTH = SIM["FAULT_OVERLONG_LENGTH"]
    LONG_ATR = SIM["FAULT_LONG_ATR"]


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

    def insert(self, atr: Optional[bytes] = None, *, t0: bool = False) -> None:
        """Insert a card: the default T=1 card, the T=0 card, or one with
        the given ATR (2..33 bytes)."""
        if atr is not None:
            if t0:
                raise ValueError("give either atr or t0, not both")
            if not 2 <= len(atr) <= 33:
                raise ValueError(f"an ATR has 2..33 bytes, got {len(atr)}")
            self._send(SIM["CTL_INSERT"], bytes(atr))
        else:
            self._send(SIM["CTL_INSERT"], bytes([SIM["CARD_T0"] if t0 else SIM["CARD_T1"]]))

    def remove(self) -> None:
        self._send(SIM["CTL_REMOVE"])

    def set_latency(self, microseconds: int) -> None:
        """Add this delay to every driver call of the reader."""
        self._send(SIM["CTL_SET_LATENCY"], struct.pack("<I", microseconds))

    def fault(self, entry: Union[EntryPoint, int], kind: Union[Fault, int],
              value: int = 0) -> None:
        """Arm a fault for the next call of `entry`."""
        self._send(SIM["CTL_FAULT"], struct.pack("<III", int(entry), int(kind), value))

    def stop(self) -> None:
        """Release calls held by a BLOCK fault and disarm every fault."""
        self._send(SIM["CTL_STOP"])

    def force_state(self, state: Optional[Union[State, int]]) -> None:
        """Make the next GET_STATE report `state` (None: stop forcing)."""
        self._send(SIM["CTL_FORCE_STATE"],
                   struct.pack("<I", 0xFFFFFFFF if state is None else int(state)))

    def reset_counters(self) -> None:
        self._send(SIM["CTL_RESET_COUNTERS"])

    def counters(self) -> SimCounters:
        n = SIM["COUNTER_COUNT"]
        raw = self._send(SIM["CTL_COUNTERS"], b"", 4 * n)
        if len(raw) != 4 * n:
            raise ValueError(f"counters: expected {4 * n} bytes, got {len(raw)}")
        v = struct.unpack(f"<{n}I", raw)
        eps = SIM["EP_COUNT"]
        return SimCounters(
            calls={EntryPoint(i): v[i] for i in range(eps)},
            power_ups=v[eps], resets=v[eps + 1], power_downs=v[eps + 2],
            powered=bool(v[eps + 3]), present=bool(v[eps + 4]),
            insertions=v[eps + 5], removals=v[eps + 6], protocol=v[eps + 7],
            latency_us=v[eps + 8])
