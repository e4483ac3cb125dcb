"""``backend="auto"`` on a reader the resource manager lists and another
process is known to hold: opened through PC/SC without loading its driver
(whose failed open is wasted work and, for some drivers, noise on stderr),
the reason saying who holds it; the direct open is still tried when PC/SC
fails, or when nothing is known to hold the reader.  Without a resource
manager: the PC/SC open is a simulated device.  (Against the real pcscd:
test_backend_select.py.)"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

import scardio
from scardio import errors, holders
from scardio import reader as reader_mod
from scardio.discovery import list_readers
from scardio.sim import open_device as sim_device

PCSC_NAME = "scardio Simulated Reader 0 00 00"


def _paired(**extra: object) -> Any:
    sim = list_readers(sim=1, pcsc=False)[-1]
    return replace(sim, pcsc_name=PCSC_NAME, extra={**sim.extra, **extra})


@pytest.fixture
def paths(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    """Records each path's opens: direct ones fail as held, PC/SC ones
    give a simulated device."""
    tried: dict[str, list[str]] = {"direct": [], "pcsc": []}

    def direct(desc: Any) -> Any:
        tried["direct"].append(desc.name)
        raise errors.ReaderInUseError("the reader is in use by another process: pcscd (pid 1)")

    def through_pcsc(name: str, **kw: Any) -> Any:
        tried["pcsc"].append(name)
        return sim_device(0x7200 + len(tried["pcsc"]))
    monkeypatch.setattr(reader_mod, "open_device", direct)
    monkeypatch.setattr(reader_mod, "open_pcsc_device", through_pcsc)
    return tried


def test_busy_in_the_listing_goes_to_pcsc_without_the_direct_open(paths):
    desc = _paired(busy=True, busy_summary="held by pcscd (pid 812)")
    with scardio.open_reader(desc) as reader:
        assert reader.backend == "pcsc"
        assert reader.backend_reason == ("the reader is held by pcscd (pid 812): the direct "
                                         "open was not tried")
    assert paths == {"direct": [], "pcsc": [PCSC_NAME]}


def test_not_checked_asks_the_kernel_now(paths, monkeypatch):
    asked: list[Any] = []

    def check_readers(readers: Any, **kw: Any) -> list[holders.Usage]:
        asked.append((list(readers), kw))
        return [holders.Usage((holders.Resource("tcp", port=35963),), held=True)]
    monkeypatch.setattr(holders, "check_readers", check_readers)
    desc = _paired()
    opened = reader_mod.open_backend_device(desc, "auto")
    try:
        assert opened.backend == "pcsc" and opened.descriptor.pcsc_name == PCSC_NAME
        assert opened.reason == ("TCP port 35963 is taken and the resource manager lists the "
                                 "reader: the direct open was not tried")
    finally:
        opened.device.close()
    # whether it is taken, not by whom (that would read every process's name)
    assert asked == [([(desc.library, desc.device_name, desc.lun)], {"find_holders": False})]
    assert paths["direct"] == []


def test_free_reader_goes_direct_first(paths, monkeypatch):
    monkeypatch.setattr(holders, "check_readers",
                        lambda readers, **kw: [holders.Usage(held=False)])
    for desc in (_paired(), _paired(busy=False)):
        with scardio.open_reader(desc) as reader:
            # the direct open was tried, found the reader held, then PC/SC
            assert reader.backend == "pcsc"
            assert reader.backend_reason.startswith("the direct open failed: the reader is "
                                                    "in use")
    assert paths["direct"] == ["scardio Simulated Reader 0"] * 2


def test_unpaired_reader_is_not_looked_up(paths, monkeypatch):
    def check_readers(readers: Any, **kw: Any) -> list[holders.Usage]:
        raise AssertionError("looked up a reader the resource manager does not list")
    monkeypatch.setattr(holders, "check_readers", check_readers)
    monkeypatch.setattr(reader_mod, "_open_pcsc", lambda desc: (_ for _ in ()).throw(
        errors.ResourceManagerNotRunningError("not running")))
    desc = replace(_paired(), pcsc_name=None)
    with pytest.raises(errors.ReaderInUseError):
        reader_mod.open_backend_device(desc, "auto")
    assert paths["direct"] == ["scardio Simulated Reader 0"]


def test_pcsc_failing_on_a_held_reader_still_tries_direct(paths, monkeypatch):
    def no_pcsc(name: str, **kw: Any) -> Any:
        paths["pcsc"].append(name)
        raise errors.ResourceManagerNotRunningError("the PC/SC resource manager is not running")
    monkeypatch.setattr(reader_mod, "open_pcsc_device", no_pcsc)
    desc = _paired(busy=True, busy_summary="held by pcscd (pid 812)")
    with pytest.raises(errors.ResourceManagerNotRunningError) as info:
        reader_mod.open_backend_device(desc, "auto")
    # as before: the resource manager's failure, chained to the direct one
    assert isinstance(info.value.__cause__, errors.ReaderInUseError)
    assert paths == {"direct": ["scardio Simulated Reader 0"], "pcsc": [PCSC_NAME] * 2}
