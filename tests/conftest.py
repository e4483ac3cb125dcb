"""Shared fixtures: simulated readers and the vpcd driver with a test card."""

from __future__ import annotations

import itertools
import os
import socket
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)  # tests/vpcd_card.py and helpers

VPCD_LIBRARY = "/usr/lib/pcsc/drivers/serial/libifdvpcd.so"

_luns = itertools.count(0x100)


@pytest.fixture
def sim_device():
    """A simulated reader on a LUN no other test uses, with no card."""
    from scardio.sim import open_device
    dev = open_device(next(_luns))
    try:
        yield dev
    finally:
        dev.close()


@pytest.fixture
def sim(sim_device):
    from scardio.sim import SimControl
    return SimControl(sim_device)


def free_port() -> int:
    """A TCP port that is free on all interfaces right now."""
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


@pytest.fixture
def vpcd():
    """(device, card): Debian's vpcd driver opened through the IFD backend
    on a private port, and a stdlib virtual card that can be inserted."""
    if not os.path.exists(VPCD_LIBRARY):
        pytest.skip(f"vsmartcard-vpcd is not installed ({VPCD_LIBRARY})")
    from scardio import Device
    from vpcd_card import VirtualCard
    port = free_port()
    dev = Device.open_ifd(VPCD_LIBRARY, f"/dev/null:{port:#x}", 0)
    card = VirtualCard(port=port)
    try:
        yield dev, card
    finally:
        card.close()
        dev.close()


@pytest.fixture(params=["sync", "async"])
def styled(request):
    """A scenario driver for the blocking front ends or the asyncio ones
    (tests/helpers_styles.py): the same test runs in both styles."""
    from helpers_styles import AsyncStyled, Styled
    driver = Styled() if request.param == "sync" else AsyncStyled()
    try:
        yield driver
    finally:
        driver.close()


#: Set (to anything) to run the tests on the model of Windows waiting
#: (tests/fake_win32.py): simulated devices without a descriptor whose
#: waitable() is a modelled event.  tests/test_waiting_windows.py runs the
#: Monitor and aio suites so.
WIN32_MODEL = "SCARDIO_TEST_WIN32_MODEL"


@pytest.fixture(autouse=True)
def _win32_model(monkeypatch):
    if not os.environ.get(WIN32_MODEL):
        yield
        return
    import scardio.reader
    import scardio.sim
    from scardio import waiting
    from fake_win32 import FakeHandles, FakeWindowsDevice
    api = FakeHandles()
    monkeypatch.setattr(waiting, "handle_api", lambda: api)
    for module in (scardio.sim, scardio.reader):
        def opened(*args, _open=module.open_device, **kwargs):
            return FakeWindowsDevice(_open(*args, **kwargs), api)
        monkeypatch.setattr(module, "open_device", opened)
    yield
