"""The competing paths, each on one reader of the same driver, with one op
vocabulary:

  state          GET_STATE (pcscd: SCardStatus, the nearest analogue;
                 ctypes: IFDHICCPresence; C floor: the driver calls GET_STATE
                 makes on the sim, IFDHICCPresence + IFDHGetCapabilities)
  tx5 / tx261 / tx4k   TRANSMIT of the APDUs in apdus.py
  connect        power-up + protocol + power-down of the card
                 (scardio Device: POWER cold, SET_PROTOCOL, POWER down;
                 reader API: connect() + disconnect(UNPOWER); pcscd:
                 SCardConnect + SCardDisconnect(SCARD_UNPOWER_CARD))
  connect_leave  connect + disconnect leaving the card powered (reader API
                 LEAVE, pcscd SCARD_LEAVE_CARD): what applications usually do
"""

from __future__ import annotations

import struct
from functools import partial
from typing import Callable, Dict, List

from apdus import APDUS, TRANSMIT_IN, TRANSMIT_OUT
from harness import FuncPath, Path

U32 = struct.Struct("<I")


def _sim_insert(dev) -> None:
    from scardio.sim import SimControl
    SimControl(dev).insert()


def device_connect(dev) -> None:
    from scardio import IOCTL
    dev.ioctl(IOCTL.POWER, U32.pack(1), 33)
    dev.ioctl(IOCTL.SET_PROTOCOL, U32.pack(3), 4)


class DevicePath(FuncPath):
    """scardio.Device.ioctl, synchronous."""

    def __init__(self, dev, name: str = "scardio Device.ioctl"):
        from scardio import IOCTL
        ioctl = dev.ioctl
        gs, tx, pw, sp = IOCTL.GET_STATE, IOCTL.TRANSMIT, IOCTL.POWER, IOCTL.SET_PROTOCOL
        cold, down, mask = U32.pack(1), U32.pack(0), U32.pack(3)
        # functools.partial: the call a user's loop would make, without an
        # extra Python frame (the ctypes path gets the same treatment).
        ops: Dict[str, Callable[[], object]] = {"state": partial(ioctl, gs, b"", 4)}
        for k in APDUS:
            ops[k] = partial(ioctl, tx, TRANSMIT_IN[k], TRANSMIT_OUT[k])

        def connect() -> None:
            ioctl(pw, cold, 33)
            ioctl(sp, mask, 4)
            ioctl(pw, down, 0)
        ops["connect"] = connect
        super().__init__(name, ops)
        self.dev = dev


class ReaderPath(FuncPath):
    """scardio's reader API: Reader.state(), Card.transmit(), connect()."""

    def __init__(self, reader, name: str = "scardio reader API"):
        from scardio import Disposition
        self.reader = reader
        self.card = reader.connect()
        ops: Dict[str, Callable[[], object]] = {"state": reader.state}
        for k, apdu in APDUS.items():
            ops[k] = partial(self.card.transmit, apdu)

        def cycle(disp) -> Callable[[], None]:
            def f() -> None:
                if self.card is not None and self.card.connected:
                    self.card.disconnect(Disposition.LEAVE)
                self.card = None
                c = reader.connect()
                c.disconnect(disp)
            return f
        ops["connect"] = cycle(Disposition.UNPOWER)
        ops["connect_leave"] = cycle(Disposition.LEAVE)
        super().__init__(name, ops)


class CtypesPath(FuncPath):
    def __init__(self, channel, name: str = "ctypes binding"):
        self.channel = channel
        ops: Dict[str, Callable[[], object]] = {"state": channel.present}
        for k, apdu in APDUS.items():
            ops[k] = partial(channel.transmit, apdu)

        def connect() -> None:
            channel.connect()
            channel.disconnect()
        ops["connect"] = connect
        super().__init__(name, ops)


class CFloorPath(Path):
    def __init__(self, floor, name: str = "C floor"):
        self.floor = floor
        self.name = name

    def run(self, op: str, count: int) -> int:
        return self.floor.run(op, count)


class PyscardPath(Path):
    OPS = {"state": "status", "tx5": "tx5", "tx261": "tx261", "tx4k": "tx4k",
           "connect": "connect_unpower", "connect_leave": "connect_leave"}

    def __init__(self, worker, name: str = "pcscd+pyscard"):
        self.worker = worker
        self.name = name
        self.holding = True  # the worker's standing shared connection

    def run(self, op: str, count: int) -> int:
        if op.startswith("connect") and self.holding:
            self.worker.call("disconnect")  # so that UNPOWER really powers down
            self.holding = False
        return self.worker.run(self.OPS[op], count)


def calibrate(path: Path, op: str, target_ns: float, lo: int = 5, hi: int = 200000) -> int:
    """Batch size so that one batch of `op` on `path` takes about target_ns."""
    n = lo
    while True:
        t = path.run(op, n)
        if t >= target_ns / 4 or n >= hi:
            per = max(t / n, 1.0)
            return int(max(lo, min(hi, target_ns / per)))
        n *= 4


def batch_sizes(paths: List[Path], op: str, target_ns: float) -> Dict[str, int]:
    return {p.name: calibrate(p, op, target_ns) for p in paths}


def open_sim_device(lun: int, connect: bool = True):
    from scardio.sim import open_device
    dev = open_device(lun)
    try:
        _sim_insert(dev)
        if connect:
            device_connect(dev)
    except BaseException:
        dev.close()
        raise
    return dev


def open_sim_reader(lun: int, **kw):
    """A Reader over a simulated reader with a card in (default options,
    i.e. the default power-down timer, unless given)."""
    from scardio import Reader
    from scardio.sim import open_device
    dev = open_device(lun)
    try:
        _sim_insert(dev)
        return Reader(dev, **kw)
    except BaseException:
        dev.close()
        raise


def open_sim_ctypes(lun: int):
    from scardio.sim import SIM_LIBRARY
    import ctypes_ifd
    ch = ctypes_ifd.IfdChannel(SIM_LIBRARY, f"sim:{lun}", lun)
    try:
        ch.control(0x42000000 + 3500)
        ch.connect()
    except BaseException:
        ch.close()
        raise
    return ch


def open_sim_floor(lun: int):
    from scardio.sim import SIM_LIBRARY
    import cfloor
    f = cfloor.CFloor(SIM_LIBRARY, f"sim:{lun}", lun)
    try:
        if f.ctl(3500) or f.power():
            raise RuntimeError("C floor: could not insert / power the simulated card")
    except BaseException:
        f.close()
        raise
    return f
