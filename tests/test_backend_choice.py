"""Choosing the path to a reader, without a resource manager: the rule that
pairs the resource manager's readers with the ones found directly, lookup
by either name, the bounded listing, open_reader(backend=...)'s choices and
errors, and the CLI's --backend.  (Against the real pcscd:
test_backend_select.py.)"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
from typing import Any

import pytest

import scardio
from scardio import aio, errors
from scardio.discovery import ReaderDescriptor, ReaderNotFoundError, find_reader, list_readers
from scardio.discovery import resource_manager as rm
from scardio.discovery.descriptor import unique_names
from scardio.reader import open_backend_device

VPCD = ReaderDescriptor("Virtual PCD", "reader.conf", "/lib/vpcd.so", "/dev/null:0x8C7B", 0,
                        {"available": True})
CCID = "/lib/libccid.so"


def usb(name: str, bus: int) -> ReaderDescriptor:
    return ReaderDescriptor(name, "bundle", CCID,
                            f"usb:1234/5678:libudev:0:/dev/bus/usb/{bus:03d}/002", 0,
                            {"available": True})


def by_name(readers: list[ReaderDescriptor]) -> dict[str, ReaderDescriptor]:
    return {r.name: r for r in readers}


# -- the pairing rule ---------------------------------------------------------

def test_split_pcsc_name() -> None:
    assert rm.split_pcsc_name("Virtual PCD 00 01") == ("Virtual PCD", 0, 1)
    assert rm.split_pcsc_name("Gemalto [CCID] (123) 1A 00") == ("Gemalto [CCID] (123)", 0x1A, 0)
    assert rm.split_pcsc_name("Identiv uTrust 3700 F CL Reader 0") is None
    assert rm.split_pcsc_name(" 00 00") is None


def test_a_unique_friendly_name_pairs_whatever_the_number() -> None:
    reader = usb("Yubico YubiKey [CCID] (0001)", 1)
    out = rm.pair_with_resource_manager(
        [VPCD, reader], ["Virtual PCD 00 00", "Virtual PCD 00 01",
                         "Yubico YubiKey [CCID] (0001) 01 00"])
    got = by_name(out)
    assert got["Virtual PCD"].pcsc_name == "Virtual PCD 00 00"
    assert got["Virtual PCD"].extra["pcsc_match"] == "name"
    assert got["Virtual PCD"].backends == ("direct", "pcsc")
    # pcscd numbered it 01 (another reader of the same driver came first).
    assert got["Yubico YubiKey [CCID] (0001)"].pcsc_name == "Yubico YubiKey [CCID] (0001) 01 00"
    # The second slot: only the resource manager has it, listed last.
    assert out[-1].name == "Virtual PCD 00 01" and out[-1].source == "pcsc"
    assert out[-1].backends == ("pcsc",) and out[-1].auto_backend == "pcsc"
    assert out[-1].library == "" and out[-1].device_name == out[-1].pcsc_name
    assert len(out) == 3


def test_identical_readers_pair_by_order_and_say_so() -> None:
    direct = unique_names([usb("Generic Reader", 1), usb("Generic Reader", 2)])
    assert [d.name for d in direct] == ["Generic Reader", "Generic Reader #2"]
    out = rm.pair_with_resource_manager(direct, ["Generic Reader 01 00", "Generic Reader 00 00"])
    assert [(d.name, d.pcsc_name, d.extra["pcsc_match"]) for d in out] == [
        ("Generic Reader", "Generic Reader 00 00", "order"),
        ("Generic Reader #2", "Generic Reader 01 00", "order")]


def test_what_does_not_pair_stays_apart() -> None:
    out = rm.pair_with_resource_manager(
        [VPCD, usb("Other", 1)], ["Identiv uTrust 3700 F CL Reader 0", "Other 00 01"])
    assert [(d.name, d.source, d.pcsc_name) for d in out] == [
        ("Virtual PCD", "reader.conf", None), ("Other", "bundle", None),
        ("Identiv uTrust 3700 F CL Reader 0", "pcsc", "Identiv uTrust 3700 F CL Reader 0"),
        ("Other 00 01", "pcsc", "Other 00 01")]
    # Nothing from the resource manager: the direct list unchanged.
    assert rm.pair_with_resource_manager([VPCD], []) == [VPCD]


def test_auto_backend_follows_busy_and_paths() -> None:
    paired = rm.pair_with_resource_manager([VPCD], ["Virtual PCD 00 00"])[0]
    assert paired.auto_backend == "direct"  # not known to be busy
    busy = ReaderDescriptor(paired.name, paired.source, paired.library, paired.device_name,
                            0, {**paired.extra, "busy": True}, pcsc_name=paired.pcsc_name)
    assert busy.auto_backend == "pcsc"
    lonely = ReaderDescriptor("x", "reader.conf", "/l", "/d", 0, {"busy": True})
    assert lonely.backends == ("direct",) and lonely.auto_backend == "direct"


# -- lookup by either name ---------------------------------------------------

def test_find_reader_by_pcsc_name_or_its_pcsc_lite_form() -> None:
    paired = rm.pair_with_resource_manager([VPCD], ["Virtual PCD 00 00", "Virtual PCD 00 01"])
    assert find_reader("Virtual PCD 00 00", paired) is paired[0]
    assert find_reader("virtual pcd 00 00", paired) is paired[0]
    assert find_reader("Virtual PCD 00 01", paired).source == "pcsc"
    # Without the resource manager: the pcsc-lite form names the direct reader...
    assert find_reader("Virtual PCD 00 00", [VPCD]) is VPCD
    assert find_reader("Virtual PCD 01 00", [VPCD]) is VPCD
    # ...but not another slot (discovery opens slot 0 only).
    with pytest.raises(ReaderNotFoundError):
        find_reader("Virtual PCD 00 01", [VPCD])
    two = unique_names([usb("Generic Reader", 1), usb("Generic Reader", 2)])
    assert find_reader("Generic Reader 01 00", two) is two[1]
    with pytest.raises(ReaderNotFoundError):
        find_reader("Generic Reader 02 00", two)


# -- the listing --------------------------------------------------------------

@pytest.fixture
def no_system(tmp_path: Any) -> dict[str, Any]:
    conf = tmp_path / "reader.conf"
    conf.write_text(f'FRIENDLYNAME "Virtual PCD"\nDEVICENAME /dev/null:0x8C7B\n'
                    f"LIBPATH {sys.executable}\nCHANNELID 0x8C7B\n")
    return {"reader_conf_dirs": [conf], "drop_dir": [tmp_path / "none"],
            "sysfs_root": tmp_path / "none"}


class Answered:
    """Stands in for a question to the resource manager."""

    def __init__(self, outcome: Any) -> None:
        self.outcome = outcome

    def answer(self, timeout: float) -> list[str]:
        if isinstance(self.outcome, BaseException):
            raise self.outcome
        return list(self.outcome)


def test_list_readers_pairs_the_resource_managers(monkeypatch: Any,
                                                  no_system: dict[str, Any]) -> None:
    monkeypatch.setattr(rm, "ask", lambda: Answered(["Virtual PCD 00 00", "Virtual PCD 00 01"]))
    got = list_readers(**no_system)
    assert [(r.name, r.pcsc_name) for r in got] == [("Virtual PCD", "Virtual PCD 00 00"),
                                                    ("Virtual PCD 00 01", "Virtual PCD 00 01")]
    assert [r.pcsc_name for r in list_readers(**no_system, pcsc=False)] == [None]


def test_list_readers_without_resource_manager(monkeypatch: Any,
                                               no_system: dict[str, Any]) -> None:
    monkeypatch.setattr(rm, "ask", lambda: Answered(
        errors.ResourceManagerNotRunningError("not running")))
    assert [(r.name, r.pcsc_name) for r in list_readers(**no_system)] == [("Virtual PCD", None)]
    monkeypatch.setattr(rm, "ask", lambda: Answered(errors.DriverNotFoundError("no library")))
    assert [(r.name, r.pcsc_name) for r in list_readers(**no_system)] == [("Virtual PCD", None)]

    def never() -> Any:
        raise AssertionError("asked the resource manager")
    monkeypatch.setattr(rm, "ask", never)
    assert len(list_readers(**no_system, pcsc=False)) == 1
    with pytest.raises(ValueError, match="pcsc_timeout"):
        list_readers(**no_system, pcsc_timeout=-1)


def test_a_resource_manager_that_does_not_answer_costs_the_timeout_once(
        monkeypatch: Any, no_system: dict[str, Any]) -> None:
    from scardio import _core
    release = threading.Event()
    calls = []

    def hang() -> list[str]:
        calls.append(1)
        release.wait(30)
        return ["Virtual PCD 00 00"]
    monkeypatch.setattr(_core, "list_pcsc_readers", hang)
    try:
        t = time.monotonic()
        first = list_readers(**no_system, pcsc_timeout=0.2)
        first_s = time.monotonic() - t
        t = time.monotonic()
        second = list_readers(**no_system, pcsc_timeout=5)
        second_s = time.monotonic() - t
        assert [r.pcsc_name for r in first] == [None] and [r.pcsc_name for r in second] == [None]
        assert 0.2 <= first_s < 3, first_s
        assert second_s < 2, second_s  # not asked again while the first is pending
        assert len(calls) == 1
        with pytest.raises(errors.TimeoutError, match="still waiting"):
            rm.resource_manager_names(1)
    finally:
        release.set()
    deadline = time.monotonic() + 10
    while rm._pending is not None and rm._pending.pending() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert rm.resource_manager_names(5) == ["Virtual PCD 00 00"]  # answered: asked again


# -- open_reader(backend=...) ---------------------------------------------------

@pytest.mark.parametrize("bad", ["bogus", "", None, "PCSC", 1])
def test_bad_backend_values_name_the_choices(bad: Any) -> None:
    with pytest.raises(ValueError, match="backend must be one of 'auto', 'direct', 'pcsc'"):
        scardio.open_reader(0, sim=1, backend=bad)
    with pytest.raises(ValueError, match="'auto', 'direct', 'pcsc'"):
        asyncio.run(aio.open_reader(0, sim=1, backend=bad))
    desc = list_readers(sim=1, pcsc=False)[-1]
    with pytest.raises(ValueError, match="'auto', 'direct', 'pcsc'"):
        open_backend_device(desc, bad)


def _absent_error() -> errors.ScardioError:
    return errors.ResourceManagerNotRunningError("the PC/SC resource manager is not running")


def _absent(timeout: float = 0) -> list[str]:
    raise _absent_error()


def test_backend_pcsc_without_resource_manager(monkeypatch: Any) -> None:
    monkeypatch.setattr(rm, "resource_manager_names", _absent)
    monkeypatch.setattr(rm, "ask", lambda: Answered(_absent_error()))
    sim = list_readers(sim=1, pcsc=False)[-1]
    with pytest.raises(errors.ResourceManagerNotRunningError):
        scardio.open_reader(sim, backend="pcsc")
    with pytest.raises(errors.ResourceManagerNotRunningError):
        scardio.open_reader("Nothing Like It 00 00", sim=1, backend="pcsc")
    # auto and direct: the simulated reader, directly.
    with scardio.open_reader(sim) as reader:
        assert reader.backend == "direct" and reader.info()["backend"] == "direct"
    with scardio.open_reader(sim.name, sim=1, backend="direct") as reader:
        assert reader.backend == "direct"


def test_backend_direct_on_a_reader_only_pcsc_knows() -> None:
    only = ReaderDescriptor("Virtual PCD 00 01", "pcsc", "", "Virtual PCD 00 01", 0,
                            {"available": True}, pcsc_name="Virtual PCD 00 01")
    with pytest.raises(ReaderNotFoundError, match="no direct path"):
        scardio.open_reader(only, backend="direct")


def _held(*args: Any, **kw: Any) -> Any:
    raise errors.ReaderInUseError("the reader is in use by another process: pcscd (pid 1)")


def test_auto_falls_back_to_pcsc_when_held(monkeypatch: Any) -> None:
    from scardio import reader as reader_mod
    from scardio.sim import open_device as sim_device
    opened: list[str] = []

    def through_pcsc(name: str, **kw: Any) -> Any:
        opened.append(name)
        return sim_device(0x7100)  # stands in for the resource manager's device
    monkeypatch.setattr(reader_mod, "open_device", _held)
    monkeypatch.setattr(reader_mod, "open_pcsc_device", through_pcsc)
    monkeypatch.setattr(rm, "resource_manager_names", lambda timeout=0: ["scardio Simulated "
                                                                         "Reader 0 00 00"])
    sim = list_readers(sim=1, pcsc=False)[-1]
    with scardio.open_reader(sim) as reader:
        assert reader.backend == "pcsc" and opened == ["scardio Simulated Reader 0 00 00"]
        assert reader.backend_reason.startswith("the direct open failed: the reader is in use")
        assert reader.descriptor.pcsc_name == "scardio Simulated Reader 0 00 00"
        assert "pcsc" in repr(reader)
    with pytest.raises(errors.ReaderInUseError):
        scardio.open_reader(sim, backend="direct")


def test_auto_keeps_the_in_use_error_when_pcsc_does_not_have_it(monkeypatch: Any) -> None:
    from scardio import reader as reader_mod
    monkeypatch.setattr(reader_mod, "open_device", _held)
    sim = list_readers(sim=1, pcsc=False)[-1]
    monkeypatch.setattr(rm, "resource_manager_names", _absent)
    with pytest.raises(errors.ReaderInUseError) as info:
        scardio.open_reader(sim)
    assert "pcscd (pid 1)" in str(info.value)
    monkeypatch.setattr(rm, "resource_manager_names", lambda timeout=0: ["Another 00 00"])
    with pytest.raises(errors.ReaderInUseError):
        scardio.open_reader(sim)


# -- the CLI ---------------------------------------------------------------------

def cli(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "scardio", *argv], capture_output=True,
                          text=True, timeout=120)


def test_help_documents_backend() -> None:
    for argv in (["--help"], ["apdu", "--help"], ["list", "--help"]):
        r = cli(*argv)
        assert r.returncode == 0
        text = " ".join(r.stdout.split())
        assert "--backend {auto,direct,pcsc}" in text, argv
        assert "resource manager" in text
    assert "--backend B" in (scardio.cli.__doc__ or "")


def test_bad_backend_option_is_a_usage_error() -> None:
    for argv in (["--backend", "bogus", "list"], ["list", "--backend", "x"]):
        r = cli(*argv)
        assert r.returncode == 2, r
        assert "invalid choice" in r.stderr and "'auto', 'direct', 'pcsc'" in r.stderr


def test_list_json_and_trace_name_the_path() -> None:
    r = cli("--sim", "1", "--backend", "direct", "--json", "list")
    assert r.returncode == 0, r.stderr
    sim = [d for d in json.loads(r.stdout) if d["source"] == "sim"][0]
    assert sim["backends"] == ["direct"] and sim["pcsc_name"] is None
    assert sim["auto_backend"] == "direct"
    r = cli("--sim", "1", "--insert", "--trace", "apdu", "scardio Simulated Reader 0", "80EE000000")
    assert r.returncode == 0, r.stderr
    assert ("[trace] open 'scardio Simulated Reader 0' directly (backend direct, --backend auto)"
            ": the direct open succeeded") in r.stderr
    r = cli("--sim", "1", "--insert", "--trace", "--json", "--backend", "direct", "connect",
            "scardio Simulated Reader 0")
    assert r.returncode == 0, r.stderr
    first = json.loads(r.stderr.splitlines()[0])
    assert first["open"] == {"reader": "scardio Simulated Reader 0", "backend": "direct",
                             "asked": "direct", "pcsc_name": None, "reason": ""}


@pytest.mark.skipif(sys.platform == "win32", reason="SCARDIO_PCSC_LIBRARY is read on POSIX only")
def test_no_pcsc_client_library_lists_and_opens_direct(tmp_path: Any) -> None:
    """Without the resource manager's client library: the listing and auto
    work directly, --backend pcsc says the library is missing."""
    import os
    env = {**os.environ, "SCARDIO_PCSC_LIBRARY": str(tmp_path / "libpcsclite-missing.so.1")}
    env.pop("SCARDIO_SIM", None)

    def run(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "scardio", *argv], capture_output=True,
                              text=True, timeout=120, env=env)
    listed = run("--sim", "1", "--json", "list")
    assert listed.returncode == 0, listed.stderr
    assert all(d["pcsc_name"] is None for d in json.loads(listed.stdout))
    r = run("--sim", "1", "--insert", "apdu", "scardio Simulated Reader 0", "80EE000000")
    assert r.returncode == 0, r.stderr
    r = run("--sim", "1", "--json", "--backend", "pcsc", "info", "scardio Simulated Reader 0")
    assert r.returncode == 1, r
    assert json.loads(r.stderr.splitlines()[-1])["type"] == "DriverNotFoundError"
