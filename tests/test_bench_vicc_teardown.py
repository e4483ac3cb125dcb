"""The vicc benchmark's teardown waits for what the next benchmark needs,
pcscd reporting its vpcd slot empty, instead of sleeping a fixed time: it
returns once pcscd says so, closes what it opened, and gives up with an
error after its bound.  Runs against a stand-in for scardio.pcsc (no pcscd)."""

from __future__ import annotations

import importlib.util
import struct
import time
import warnings
from pathlib import Path
from types import ModuleType

import pytest

from scardio import State, pcsc

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks"


@pytest.fixture
def vicc_bench(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.syspath_prepend(str(ROOT / "tests"))
    monkeypatch.syspath_prepend(str(BENCH))
    spec = importlib.util.spec_from_file_location("_teardown_test_bench_vicc",
                                                  BENCH / "test_bench_vicc.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pytest.PytestUnknownMarkWarning)
        spec.loader.exec_module(module)
    return module


class FakeDevice:
    """A PC/SC reader whose card is seen for `present_polls` more polls."""

    def __init__(self, present_polls: int) -> None:
        self.left = present_polls
        self.polls = 0
        self.closed = False

    def ioctl(self, code: object, data: bytes, size: int) -> bytes:
        self.polls += 1
        if self.left > 0:
            self.left -= 1
            return struct.pack("<I", State.SWALLOWED)
        return struct.pack("<I", State.ABSENT)

    def close(self) -> None:
        self.closed = True


def _pcscd(monkeypatch: pytest.MonkeyPatch, names: list[str], dev: FakeDevice) -> list[str]:
    opened: list[str] = []

    def open_device(name: str) -> FakeDevice:
        opened.append(name)
        return dev
    monkeypatch.setattr(pcsc, "list_readers", lambda: names)
    monkeypatch.setattr(pcsc, "open_device", open_device)
    return opened


def test_returns_once_pcscd_reports_the_slot_empty(vicc_bench, monkeypatch):
    dev = FakeDevice(present_polls=3)
    opened = _pcscd(monkeypatch, ["other 00 00", "scardio bench vpcd 00 00",
                                  "scardio bench vpcd 00 01"], dev)
    t0 = time.monotonic()
    vicc_bench._wait_pcscd_sees_no_card("scardio bench vpcd", timeout=10.0)
    assert time.monotonic() - t0 < 5.0
    assert opened == ["scardio bench vpcd 00 00"]
    assert dev.polls == 4 and dev.left == 0 and dev.closed


def test_gives_up_after_its_bound(vicc_bench, monkeypatch):
    dev = FakeDevice(present_polls=10**9)
    _pcscd(monkeypatch, ["scardio bench vpcd 00 00"], dev)
    t0 = time.monotonic()
    with pytest.raises(RuntimeError, match="pcscd to report 'scardio bench vpcd 00 00' empty"):
        vicc_bench._wait_pcscd_sees_no_card("scardio bench vpcd", timeout=0.2)
    assert 0.2 <= time.monotonic() - t0 < 5.0
    assert dev.closed


def test_a_reader_pcscd_no_longer_lists_needs_no_wait(vicc_bench, monkeypatch):
    dev = FakeDevice(present_polls=10**9)
    opened = _pcscd(monkeypatch, ["other 00 00"], dev)
    vicc_bench._wait_pcscd_sees_no_card("scardio bench vpcd", timeout=10.0)
    assert opened == [] and dev.polls == 0
