"""Out-of-range integer arguments of the binding raise ValueError whose
message names the argument and its range (never OverflowError), before any
driver is loaded; the edges of each range are accepted."""

from __future__ import annotations

import itertools
import math

import pytest

import scardio.sim
from scardio import IOCTL, Device, _core, errors
from scardio.sim import SIM_LIBRARY

DWORD = "0..4294967295"
_luns = itertools.count(0x7E00)


@pytest.mark.parametrize("call, name, value", [
    (lambda: scardio.sim.open_device(-1), "lun", "-1"),
    (lambda: scardio.sim.open_device(2**32), "lun", "4294967296"),
    (lambda: scardio.sim.open_device(2**80), "lun", str(2**80)),
    (lambda: scardio.sim.open_device(next(_luns), poll_interval_ms=-5), "poll_interval_ms", "-5"),
    (lambda: scardio.sim.open_device(next(_luns), close_timeout_ms=-1), "close_timeout_ms", "-1"),
    (lambda: scardio.sim.open_device(next(_luns), close_timeout_ms=2**32), "close_timeout_ms",
     "4294967296"),
    (lambda: Device.open_ifd(SIM_LIBRARY, "x", 2**32), "lun", "4294967296"),
    (lambda: Device.open_ifd(SIM_LIBRARY, "x", -1), "lun", "-1"),
    (lambda: Device.open_ifd(SIM_LIBRARY, "x", 0, poll_interval_ms=2**32),
     "poll_interval_ms", "4294967296"),
    (lambda: _core.status_name(-1), "status", "-1"),
])
def test_open_arguments_out_of_range(call, name, value):
    with pytest.raises(ValueError) as info:
        call()
    assert type(info.value) is ValueError
    assert str(info.value) == f"{name} must be in {DWORD} (0xFFFFFFFF), got {value}"


@pytest.fixture
def dev():
    d = scardio.sim.open_device(next(_luns))
    yield d
    d.close()


@pytest.mark.parametrize("bad", [-1, 2**32, 2**64, -(2**70)])
def test_ioctl_and_submit_codes_out_of_range(dev, bad):
    for call in (dev.ioctl, dev.submit):
        with pytest.raises(ValueError, match=rf"^code must be in {DWORD} .*got {bad}$"):
            call(bad, b"", 4)
    assert len(dev.ioctl(IOCTL.GET_STATE, b"", 4)) == 4  # still usable


@pytest.mark.parametrize("bad", [-1, -(2**70), 2**63, 2**100])
def test_output_sizes_out_of_range(dev, bad):
    for call in (dev.ioctl, dev.submit):
        with pytest.raises(ValueError, match=rf"^output_size must be >= 0 .*got {bad}$"):
            call(IOCTL.GET_STATE, b"", bad)


@pytest.mark.parametrize("bad", [-0.001, -1, -math.inf, math.nan])
def test_harvest_timeouts_out_of_range(dev, bad):
    with pytest.raises(ValueError, match="timeout must be seconds >= 0, inf or None"):
        dev.harvest(bad)


def test_the_edges_of_the_ranges_work(dev):
    assert _core.MAX_DWORD == 0xFFFFFFFF
    for lun in (0xFFFFFFFF, 0x7DFF):
        with scardio.sim.open_device(lun, poll_interval_ms=0xFFFFFFFF, close_timeout_ms=1) as d:
            assert d.lun == lun and len(d.ioctl(IOCTL.GET_STATE, b"", 4)) == 4
    with pytest.raises(errors.InvalidRequestError):  # a DWORD code the driver does not know
        dev.ioctl(0xFFFFFFFF, b"", 4)
    assert dev.ioctl(IOCTL.GET_STATE, b"", 2**62)  # huge sizes are cut to MAX_OUTPUT
    assert dev.harvest(0) == [] and dev.harvest(0.001) == []
    op = dev.submit(IOCTL.GET_STATE, b"", 4)
    op.wait(5)


def test_non_integers_stay_type_errors(dev):
    for bad in (1.0, "1", None):
        with pytest.raises(TypeError):
            scardio.sim.open_device(bad)
        with pytest.raises(TypeError):
            dev.ioctl(bad, b"", 4)
        with pytest.raises(TypeError):
            dev.ioctl(IOCTL.GET_STATE, b"", bad)


def test_integer_likes_are_accepted(dev):
    class Index:
        def __init__(self, v):
            self.v = v

        def __index__(self):
            return self.v
    assert len(dev.ioctl(Index(int(IOCTL.GET_STATE)), b"", Index(4))) == 4
    with pytest.raises(ValueError, match="code must be in"):
        dev.ioctl(Index(-1), b"", 4)
