"""Shared helpers for the reader-layer tests (Reader, Card, Monitor, aio, CLI).

Simulated readers here use LUNs from 0x200 up, away from conftest's range,
so tests never share a reader.  Every wait has a timeout: no test can hang.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import socket
import subprocess
import sys
import threading
from typing import Any, Callable, Iterator, Optional

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))

def _package_root() -> str:
    """Where the scardio under test was imported from (the installed package,
    or src/ in a development tree), so subprocesses use the same one."""
    import scardio
    return os.path.dirname(os.path.dirname(os.path.abspath(scardio.__file__)))


SRC = _package_root()
if HERE not in sys.path:
    sys.path.insert(0, HERE)

VPCD_LIBRARY = "/usr/lib/pcsc/drivers/serial/libifdvpcd.so"

_luns = itertools.count(0x200)


def next_lun() -> int:
    return next(_luns)


@contextlib.contextmanager
def sim_reader(power_down_timeout: Optional[float] = 5.0,
               trace: Optional[Callable[[Any], None]] = None,
               polling: bool = True) -> Iterator[tuple[Any, Any]]:
    """(reader, SimControl) on a fresh simulated LUN with no card; with
    ``polling=False`` its driver offers no polling function."""
    from scardio.discovery import ReaderDescriptor
    from scardio.reader import Reader, TracingDevice
    from scardio.sim import SIM_LIBRARY, SimControl, open_device
    lun = next_lun()
    dev: Any = open_device(lun, polling=polling)
    if trace is not None:
        dev = TracingDevice(dev, trace)
    desc = ReaderDescriptor(f"scardio Simulated Reader {lun}", "sim", SIM_LIBRARY,
                            f"sim:{lun}", lun, {"available": True})
    reader = Reader(dev, desc, power_down_timeout=power_down_timeout)
    sim = SimControl(dev)
    try:
        yield reader, sim
    finally:
        if not reader.closed:
            try:
                sim.stop()
            except Exception:
                pass
        reader.close()


@contextlib.contextmanager
def sim_readers(n: int = 1, *, polling: bool = True, event_counts: bool = True,
                event_generation: bool = True,
                poll_interval_ms: int = 0) -> Iterator[list[tuple[Any, Any]]]:
    """n (Reader, SimControl) pairs on fresh simulated LUNs with no card
    (the options are scardio.sim.open_device's)."""
    from scardio.reader import Reader
    from scardio.sim import SimControl, open_device
    out = []
    try:
        for _ in range(n):
            dev = open_device(next_lun(), polling=polling, event_counts=event_counts,
                              event_generation=event_generation,
                              poll_interval_ms=poll_interval_ms)
            out.append((Reader(dev, power_down_timeout=None), SimControl(dev)))
        yield out
    finally:
        for reader, sim in out:
            with contextlib.suppress(Exception):
                sim.stop()
            reader.close()


class Recorder:
    """Collects ReaderEvents / CardEvents; wait_for() with a timeout."""

    def __init__(self) -> None:
        self.events: list[Any] = []
        self._cond = threading.Condition()

    def __call__(self, ev: Any) -> None:
        with self._cond:
            self.events.append(ev)
            self._cond.notify_all()

    def kinds(self) -> list[str]:
        with self._cond:
            return [e.kind for e in self.events]

    def wait_for(self, kind: str, timeout: float = 5.0, n: int = 1) -> Any:
        with self._cond:
            ok = self._cond.wait_for(
                lambda: sum(e.kind == kind for e in self.events) >= n, timeout)
            assert ok, f"no {kind!r} (#{n}) within {timeout} s; got {self.kinds()}"
            return [e for e in self.events if e.kind == kind][n - 1]


def run_cli(*args: str, env: Optional[dict[str, str]] = None,
            timeout: float = 30.0) -> subprocess.CompletedProcess:
    """`python -m scardio ARGS` in a subprocess (bounded)."""
    e = dict(os.environ)
    e["PYTHONPATH"] = SRC + (os.pathsep + e["PYTHONPATH"] if e.get("PYTHONPATH") else "")
    e.pop("SCARDIO_SIM", None)
    if env:
        e.update(env)
    return subprocess.run([sys.executable, "-m", "scardio", *args], capture_output=True,
                          text=True, timeout=timeout, env=e)


def free_port_pair() -> int:
    """A port p with p and p+1 free (vpcd listens on port + slot)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("", 0))
            p = s.getsockname()[1]
        try:
            with socket.socket() as s2:
                s2.bind(("", p + 1))
            return p
        except OSError:
            continue
    pytest.skip("no free pair of TCP ports")
    raise AssertionError  # unreachable


def require_vpcd() -> Any:
    """The vpcd_card module, or skip when vpcd or the test card is missing."""
    if not os.path.exists(VPCD_LIBRARY):
        pytest.skip(f"vsmartcard-vpcd is not installed ({VPCD_LIBRARY})")
    try:
        import vpcd_card
    except ImportError:
        pytest.skip("tests/vpcd_card.py is missing")
    return vpcd_card
