"""Helpers shared by the benchmark modules (kept out of conftest.py so that
nothing imports a module named "conftest", which tests/ also has)."""

from __future__ import annotations

import itertools
import socket

SIM_PCSCD_NAME = "scardio bench sim"
VPCD_PCSCD_NAME = "scardio bench vpcd"
SERVED_PCSCD_NAME = "scardio bench served card"
SERVED_NOSPIN_PCSCD_NAME = "scardio bench served nospin"

# LUNs of the simulated reader used by this process (the C floor and pcscd
# run in other processes, whose simulated readers are separate).
_luns = itertools.count(0x5000)


def next_lun() -> int:
    return next(_luns)


def free_port() -> int:
    """A free TCP port p with p + 1 free too (vpcd slot 1 listens there)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("", 0))
            p = s.getsockname()[1]
        if p >= 65535:
            continue
        with socket.socket() as s2:
            try:
                s2.bind(("", p + 1))
            except OSError:
                continue
        return p
    raise RuntimeError("no free port pair")
