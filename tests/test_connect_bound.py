"""The bound on connect() (its timeout) and the hand-off that keeps it
cheap: Device.ioctl_on_lane (one IOCTL on the I/O lane, waited for with
the GIL released, both threads spinning briefly for each other),
Device.lane_apart, and run_sync's choice between one hand-off per IOCTL
and the whole sequence as one job (scardio.runner).  A hung driver releases
the caller at its timeout either way; Ctrl-C and close() from another
thread end the wait; an idle process spins no more after a burst."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import threading
import time
from typing import Any

import pytest

from helpers_reader import sim_reader
from scardio import IOCTL, Disposition, Reader, errors
from scardio._core import STATUS_PENDING
from scardio.reader import TracingDevice
from scardio.sim import EntryPoint, Fault, SimControl, open_device

#: How late past its timeout a call that gives up may return (a loaded CI
#: machine; the bound itself is the timeout).
SLACK = 0.25
U32_VENDOR_NAME = (0x00010100).to_bytes(4, "little")


class Placed:
    """A device whose lane_apart() gives a fixed answer, so that run_sync
    takes the hand-off asked for: one IOCTL per hand-off (True) or the
    whole sequence as one job on the lane (False)."""

    def __init__(self, device: Any, apart: bool) -> None:
        self._device = device
        self._apart = apart

    def __getattr__(self, name: str) -> Any:
        return getattr(self._device, name)

    def lane_apart(self) -> bool:
        return self._apart


def _placed_reader(dev: Any, apart: bool, trace: Any = None) -> Reader:
    placed: Any = Placed(dev, apart)
    if trace is not None:
        placed = TracingDevice(placed, trace)
    return Reader(placed, power_down_timeout=5.0)


# -- Device.ioctl_on_lane ---------------------------------------------------------

def test_ioctl_on_lane_answers_as_ioctl():
    with sim_reader() as (reader, sim):
        sim.insert()
        dev = reader.device
        for code, data, size in ((IOCTL.GET_STATE, b"", 4),
                                 (IOCTL.GET_ATTRIBUTE, U32_VENDOR_NAME, 64),
                                 (IOCTL.GET_ATTRIBUTE, bytearray(U32_VENDOR_NAME), 64)):
            assert dev.ioctl_on_lane(code, data, size, 5.0) == dev.ioctl(code, data, size)
            assert dev.ioctl_on_lane(code, data, size) == dev.ioctl(code, data, size)
        # a driver's error is the same typed error, with its status and IOCTL
        with pytest.raises(errors.ScardioError) as sync:
            dev.ioctl(IOCTL.TRANSMIT, b"x", 16)
        with pytest.raises(errors.ScardioError) as lane:
            dev.ioctl_on_lane(IOCTL.TRANSMIT, b"x", 16, 5.0)
        assert type(lane.value) is type(sync.value)
        assert (lane.value.status, lane.value.ioctl) == (sync.value.status, sync.value.ioctl)
        assert isinstance(dev.lane_apart(), bool)


def test_ioctl_on_lane_checks_its_arguments():
    with sim_reader() as (reader, _sim):
        dev = reader.device
        with pytest.raises(ValueError, match="code"):
            dev.ioctl_on_lane(-1)
        with pytest.raises(ValueError, match="output_size"):
            dev.ioctl_on_lane(IOCTL.GET_STATE, b"", -1)
        with pytest.raises(ValueError, match="timeout"):
            dev.ioctl_on_lane(IOCTL.GET_STATE, b"", 4, -1.0)
        with pytest.raises(TypeError):
            dev.ioctl_on_lane(IOCTL.GET_STATE, "text", 4)
    with pytest.raises(errors.ClosedError):
        dev.ioctl_on_lane(IOCTL.GET_STATE, b"", 4)
    with pytest.raises(errors.ClosedError):
        dev.lane_apart()


def test_ioctl_on_lane_gives_up_on_a_hung_driver_at_its_timeout():
    with sim_reader() as (reader, sim):
        sim.insert()
        dev = reader.device
        sim.fault(EntryPoint.ICC_PRESENCE, Fault.BLOCK)
        try:
            t0 = time.monotonic()
            with pytest.raises(errors.TimeoutError, match="GET_STATE: no answer") as exc:
                dev.ioctl_on_lane(IOCTL.GET_STATE, b"", 4, 0.3)
            took = time.monotonic() - t0
            assert 0.3 <= took < 0.3 + SLACK, took
            assert exc.value.status == STATUS_PENDING
            # the lane is still stuck: the next call waits behind it, bounded too
            with pytest.raises(errors.TimeoutError):
                dev.ioctl_on_lane(IOCTL.GET_STATE, b"", 4, 0.05)
        finally:
            sim.stop()
        deadline = time.monotonic() + 5
        while True:  # the lane drains the given-up calls, then answers again
            try:
                assert len(dev.ioctl_on_lane(IOCTL.GET_STATE, b"", 4, 1.0)) == 4
                break
            except errors.TimeoutError:
                assert time.monotonic() < deadline


def test_ctrl_c_ends_a_wait_in_ioctl_on_lane():
    with sim_reader() as (reader, sim):
        sim.insert()
        dev = reader.device
        sim.fault(EntryPoint.ICC_PRESENCE, Fault.BLOCK)
        main = threading.get_ident()
        timer = threading.Timer(0.2, signal.pthread_kill, (main, signal.SIGINT))
        try:
            t0 = time.monotonic()
            timer.start()
            with pytest.raises(KeyboardInterrupt):
                dev.ioctl_on_lane(IOCTL.GET_STATE, b"", 4)  # no timeout at all
            assert time.monotonic() - t0 < 0.2 + SLACK + 0.1  # within a wait slice
        finally:
            timer.cancel()
            sim.stop()
        assert len(dev.ioctl_on_lane(IOCTL.GET_STATE, b"", 4, 5.0)) == 4


def _run(script: str, timeout: float = 60) -> str:
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(script)],
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_close_from_another_thread_ends_a_wait_in_ioctl_on_lane():
    """In a child: the driver call it abandons stays stuck for good."""
    out = _run("""
        import threading, time
        from scardio import IOCTL, errors
        from scardio.sim import EntryPoint, Fault, SimControl, open_device
        dev = open_device(0x61, close_timeout_ms=200)
        sim = SimControl(dev)
        sim.insert()
        sim.fault(EntryPoint.ICC_PRESENCE, Fault.BLOCK)
        threading.Timer(0.2, dev.close).start()
        t0 = time.monotonic()
        try:
            dev.ioctl_on_lane(IOCTL.GET_STATE, b"", 4)  # no timeout: only close ends it
            print("ANSWERED")
        except errors.ScardioError as exc:
            print("ENDED", type(exc).__name__, round(time.monotonic() - t0, 3))
    """)
    assert out.startswith("ENDED"), out
    assert float(out.split()[2]) < 0.2 + 0.2 + SLACK + 0.5


# -- connect()'s bound, with either hand-off ------------------------------------

@pytest.mark.parametrize("apart", [True, False], ids=["per-ioctl", "whole-sequence"])
def test_bounded_connect_does_what_the_unbounded_one_does(apart):
    seen: list = []
    dev = open_device(0x62)
    try:
        sim = SimControl(dev)
        sim.insert()
        reader = _placed_reader(dev, apart, trace=seen.append)
        card = reader.connect(timeout=5)  # cold: SWALLOWED, COLD_RESET, ...
        cold = (card.connect_actions, card.atr_bytes, card.protocol)
        card.disconnect(Disposition.UNPOWER)
        assert reader.connect(timeout=None).connect_actions == cold[0]
        reader.card.disconnect(Disposition.LEAVE)
        warm = reader.connect(timeout=5)  # reconnect to the card left powered
        assert warm.connect_actions[0] == "SPECIFIC"
        warm.disconnect(Disposition.LEAVE)
        again = reader.connect(timeout=None)
        assert again.connect_actions == warm.connect_actions
        # the bounded IOCTLs are traced like the others
        names = [r.name for r in seen]
        assert names.count("SET_PROTOCOL") == 4 and "POWER" in names
        reader.close()
    finally:
        dev.close()


@pytest.mark.parametrize("apart", [True, False], ids=["per-ioctl", "whole-sequence"])
@pytest.mark.parametrize("entry", ["ICC_PRESENCE", "POWER_ICC"])
def test_a_hung_driver_releases_connect_at_its_timeout_either_way(apart, entry):
    dev = open_device(0x63 if apart else 0x64)
    sim = SimControl(dev)
    reader = _placed_reader(dev, apart)
    try:
        sim.insert()
        reader.connect(timeout=5).disconnect(Disposition.UNPOWER)
        sim.fault(EntryPoint[entry], Fault.BLOCK)
        try:
            t0 = time.monotonic()
            with pytest.raises(errors.TimeoutError, match="no answer from the driver"):
                reader.connect(timeout=0.3)
            took = time.monotonic() - t0
            assert 0.3 <= took < 0.3 + SLACK, took
            assert reader.card is None
        finally:
            sim.stop()
        assert reader.connect(timeout=5).connected
    finally:
        reader.close()
        dev.close()


def test_connect_times_out_before_an_ioctl_starts_past_its_deadline():
    with sim_reader() as (reader, sim):
        sim.insert()
        sim.set_latency(150_000)  # every driver call takes 0.15 s
        try:
            t0 = time.monotonic()
            with pytest.raises(errors.TimeoutError):
                reader.connect(timeout=0.2)  # the second call would start too late
            assert time.monotonic() - t0 < 0.2 + 0.15 + SLACK
        finally:
            sim.set_latency(0)
        assert reader.connect(timeout=5).connected


# -- spinning: bounded, and not on one CPU -----------------------------------------

_BURST = """
    import os, sys, time
    from scardio import Disposition, Reader
    from scardio.sim import SimControl, open_device
    if {pin}:
        os.sched_setaffinity(0, {{min(os.sched_getaffinity(0))}})
    dev = open_device(0x65)
    SimControl(dev).insert()
    reader = Reader(dev, power_down_timeout=None)
    for i in range(3000):
        reader.connect(timeout=10).disconnect(Disposition.UNPOWER if i % 2 else
                                              Disposition.LEAVE)
    print("APART", dev.lane_apart())
    time.sleep(0.2)  # the spinners' budget is tens of microseconds
    c0, t0 = time.process_time(), time.monotonic()
    time.sleep(1.0)
    print("IDLE_CPU", time.process_time() - c0, time.monotonic() - t0)
    reader.close()
"""


@pytest.mark.skipif(not hasattr(__import__("os"), "sched_setaffinity"),
                    reason="needs sched_setaffinity")
@pytest.mark.parametrize("pin", [False, True], ids=["all-cpus", "one-cpu"])
def test_an_idle_process_uses_no_cpu_after_a_burst_of_connects(pin):
    out = _run(_BURST.format(pin=pin))
    fields = dict(line.split(" ", 1) for line in out.splitlines())
    cpu, wall = map(float, fields["IDLE_CPU"].split())
    assert wall >= 1.0
    assert cpu < 0.02, f"{cpu:.4f} s of CPU over an idle second"
    if pin:  # one processor: nothing can spin, so the lane is never "apart"
        assert fields["APART"] == "False"
