"""Pairing the resource manager's readers with the direct ones on the
platforms that cannot run here, on models: SCardSvr's names and device
instance IDs (Windows), macOS's PC/SC stack names (CryptoTokenKit), and
the lookup by those names (find_reader, open_reader(backend="auto"),
Reader.names).  The platform is faked as test_discovery.py fakes it:
``_platform.PLATFORM`` replaced by that OS's sources.  pcsc-lite's scheme
is tested in test_backend_choice.py (models) and test_backend_select.py
(the real pcscd)."""

from __future__ import annotations

import ctypes
import sys
from typing import Any, Callable, Optional, Sequence

import pytest

import scardio
from scardio import errors
from scardio import reader as reader_mod
from scardio.discovery import (ReaderDescriptor, ReaderNotFoundError, UsbDevice, _macos,
                               _platform, _windows, find_reader, list_readers)
from scardio.discovery import resource_manager as rm
from scardio.discovery.descriptor import unique_names
from scardio.discovery.sources import PlatformSources

GUID = "{50dd5230-ba8a-11d1-bf5d-0000f805f530}"


@pytest.fixture(autouse=True)
def _no_sim_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SCARDIO_SIM", raising=False)


class Answered:
    """Stands in for a question to the resource manager."""

    def __init__(self, names: Sequence[str]) -> None:
        self.names = list(names)

    def answer(self, timeout: float) -> list[str]:
        return list(self.names)


def held(by: str) -> Callable[..., Any]:
    def open_device(*args: Any, **kw: Any) -> Any:
        raise errors.ReaderInUseError(f"the reader is in use by another process: {by}")
    return open_device


def sim_device(*args: Any, **kw: Any) -> Any:
    from scardio.sim import open_device
    return open_device(0x7200)  # stands in for the reader, whichever path opens it


# -- the schemes follow the platform ---------------------------------------------

def test_each_platform_has_its_scheme() -> None:
    assert _platform.sources_for("win32").pcsc_naming is _windows.WINDOWS
    assert _platform.sources_for("darwin").pcsc_naming is _macos.MACOS
    for name in ("linux", "freebsd14", "openbsd7"):
        assert _platform.sources_for(name).pcsc_naming is rm.PCSC_LITE
    assert [n.scheme for n in (_windows.WINDOWS, _macos.MACOS, rm.PCSC_LITE)] == [
        "windows", "macos", "pcsc-lite"]


def test_pairing_uses_the_current_platforms_scheme(monkeypatch: pytest.MonkeyPatch) -> None:
    vpcd = ReaderDescriptor("Virtual PCD", "reader.conf", "/l", "/dev/null:0x8C7B")
    mac = _platform.sources_for("darwin")
    assert rm.pair_with_resource_manager([vpcd], ["Virtual PCD(1)"],
                                         naming=rm.PCSC_LITE)[0].pcsc_name is None
    monkeypatch.setattr(_platform, "PLATFORM", mac)
    (paired,) = rm.pair_with_resource_manager([vpcd], ["Virtual PCD(1)"])
    assert paired.pcsc_name == "Virtual PCD(1)" and paired.extra["pcsc_scheme"] == "macos"
    # pcsc-lite's names are not macOS's.
    assert rm.pair_with_resource_manager([vpcd], ["Virtual PCD 00 00"])[1].source == "pcsc"
    assert rm.pcsc_style_match("Virtual PCD(1)", [vpcd]) is vpcd
    assert rm.pcsc_style_match("Virtual PCD 00 00", [vpcd]) is None


# -- Windows: SCardSvr -------------------------------------------------------------

SCR = "SCM Microsystems Inc. SCR33x USB Smart Card Reader"


def win_reader(instance_path: str) -> ReaderDescriptor:
    path = rf"\\?\{instance_path}#{GUID}"
    short = path.split("\\")[-1].rsplit("#", 1)[0]
    return ReaderDescriptor(short, "win32", "", path,
                            extra={"available": True,
                                   "instance_id": _windows.device_instance_id(path)})


def test_device_instance_id_of_an_interface_path() -> None:
    assert _windows.device_instance_id(
        rf"\\?\usb#vid_04e6&pid_5116#21120706119#{GUID}") == r"usb\vid_04e6&pid_5116\21120706119"
    assert _windows.device_instance_id(
        rf"\\?\root#scardio_sim#0000#{GUID}\ref") == r"root\scardio_sim\0000"
    assert _windows.device_instance_id(
        rf"\\?\usb#vid_1&pid_2&mi_01#7&1b2c&0&0001#{GUID}") == r"usb\vid_1&pid_2&mi_01\7&1b2c&0&0001"
    for bad in ("", "root#x", rf"\\?\root#x#{GUID}", r"\\?\a#b#c"):
        assert _windows.device_instance_id(bad) is None, bad


def test_device_path_readers_record_the_instance_id(monkeypatch: pytest.MonkeyPatch) -> None:
    from scardio import _core
    paths = [rf"\\?\usb#vid_04e6&pid_5116#21120706119#{GUID}", r"\\?\odd"]
    monkeypatch.setattr(_core, "list_device_paths", lambda: paths)
    usb, odd = _windows.device_path_readers()
    assert (usb.name, usb.device_name) == ("usb#vid_04e6&pid_5116#21120706119", paths[0])
    assert usb.extra["instance_id"] == r"usb\vid_04e6&pid_5116\21120706119"
    assert "instance_id" not in odd.extra and odd.source == "win32"


def test_windows_pairs_by_device_instance_even_for_identical_readers() -> None:
    first = win_reader("usb#vid_04e6&pid_5116#000001")
    second = win_reader("usb#vid_04e6&pid_5116#000002")
    alone = win_reader("root#scardio_sim#0000")
    names = [f"{SCR} 0", f"{SCR} 1", "Windows Hello for Business 1"]
    # SCardSvr answers in its own case, and numbered the second one first.
    ids = {f"{SCR} 0": r"USB\VID_04E6&PID_5116\000002",
           f"{SCR} 1": r"USB\VID_04E6&PID_5116\000001",
           "Windows Hello for Business 1": r"ROOT\SMARTCARDREADER\0000"}
    asked: list[list[str]] = []

    def lookup(wanted: Sequence[str]) -> dict[str, str]:
        asked.append(list(wanted))
        return ids
    out = _windows.pair_with_device_instances([first, second, alone], names, lookup)
    assert asked == [names]
    assert [(d.name, d.pcsc_name) for d in out] == [
        (first.name, f"{SCR} 1"), (second.name, f"{SCR} 0"), (alone.name, None),
        ("Windows Hello for Business 1", "Windows Hello for Business 1")]
    assert out[0].extra["pcsc_match"] == "device" and out[0].extra["pcsc_scheme"] == "windows"
    assert out[0].backends == ("direct", "pcsc") and out[2].backends == ("direct",)
    assert out[3].source == "pcsc" and out[3].backends == ("pcsc",)


def test_windows_without_instance_ids_pairs_nothing() -> None:
    """Before Windows 8 (or when the call fails): listed once per path."""
    reader = win_reader("usb#vid_04e6&pid_5116#000001")
    out = _windows.pair_with_device_instances([reader], [f"{SCR} 0"], lambda names: {})
    assert [(d.source, d.pcsc_name) for d in out] == [("win32", None), ("pcsc", f"{SCR} 0")]
    # A reader without an instance ID does not make SCardSvr be asked.
    bare = ReaderDescriptor("x", "win32", "", "x")
    out = _windows.pair_with_device_instances([bare], [f"{SCR} 0"], lambda names: 1 / 0)
    assert [d.source for d in out] == ["win32", "pcsc"]


class FakeWinscard:
    """A model of winscard.dll's three functions, as ctypes calls them."""

    def __init__(self, ids: dict[str, str], establish_rc: int = 0) -> None:
        self.ids = ids
        self.establish_rc = establish_rc
        self.released: list[int] = []
        self.calls: list[tuple[str, int]] = []
        self.SCardEstablishContext = self._function(self._establish)
        self.SCardGetReaderDeviceInstanceIdW = self._function(self._instance)
        self.SCardReleaseContext = self._function(self._release)

    @staticmethod
    def _function(body: Callable[..., int]) -> Any:
        class Function:  # takes argtypes/restype as a ctypes function does
            def __call__(self, *args: Any) -> int:
                return body(*args)
        return Function()

    def _establish(self, scope: int, r1: Any, r2: Any, context: Any) -> int:
        assert scope == _windows.SCARD_SCOPE_USER and r1 is None and r2 is None
        context._obj.value = 0xC0FFEE
        return self.establish_rc

    def _instance(self, context: Any, name: str, buffer: Any, size: Any) -> int:
        assert context.value == 0xC0FFEE
        self.calls.append((name, size._obj.value))
        found = self.ids.get(name)
        if found is None:
            return ctypes.c_int32(0x8010002E).value  # SCARD_E_NO_READERS_AVAILABLE
        if len(found) + 1 > size._obj.value:
            size._obj.value = len(found) + 1
            return ctypes.c_int32(_windows.SCARD_E_INSUFFICIENT_BUFFER).value
        buffer.value = found
        size._obj.value = len(found) + 1
        return 0

    def _release(self, context: Any) -> int:
        self.released.append(context.value)
        return 0


def test_instance_ids_from_winscard_model() -> None:
    long_id = "USB\\VID_1&PID_2\\" + "9" * 250  # longer than the first buffer
    lib = FakeWinscard({"A 0": r"USB\VID_1&PID_2\X", "Long 0": long_id})
    assert _windows.instance_ids_from(lib, ["A 0", "Gone 0", "Long 0"]) == {
        "A 0": r"USB\VID_1&PID_2\X", "Long 0": long_id}
    assert lib.released == [0xC0FFEE]
    first = _windows.MAX_DEVICE_ID_LEN + 1
    assert lib.calls == [("A 0", first), ("Gone 0", first), ("Long 0", first),
                         ("Long 0", len(long_id) + 1)]
    # The ABI the calls are typed with: pointer-sized context, 32-bit DWORD/LONG.
    assert lib.SCardEstablishContext.restype is ctypes.c_int32
    assert lib.SCardGetReaderDeviceInstanceIdW.argtypes[0] is ctypes.c_size_t
    assert lib.SCardReleaseContext.argtypes == [ctypes.c_size_t]
    # No service: no context, nothing asked, nothing to release.
    down = FakeWinscard({"A 0": "x"}, establish_rc=ctypes.c_int32(0x8010001D).value)
    assert _windows.instance_ids_from(down, ["A 0"]) == {}
    assert down.calls == [] and down.released == []


@pytest.mark.skipif(sys.platform == "win32", reason="asks the real SCardSvr there")
def test_no_winscard_here_means_no_instance_ids() -> None:
    assert _windows.resource_manager_instance_ids([f"{SCR} 0"]) == {}
    assert _windows.resource_manager_instance_ids([]) == {}


@pytest.fixture
def windows(monkeypatch: pytest.MonkeyPatch) -> list[ReaderDescriptor]:
    """This process discovers as on Windows: one reader device interface,
    which SCardSvr lists (with a second reader of its own) and holds."""
    device = win_reader("usb#vid_04e6&pid_5116#21120706119")
    win = _platform.sources_for("win32")
    monkeypatch.setattr(_platform, "PLATFORM", PlatformSources(
        win.drop_dirs, win.library_dir, win.usb_devices, os_readers=lambda: [device],
        pcsc_naming=win.pcsc_naming))
    names = [f"{SCR} 0", "Windows Hello for Business 1"]
    monkeypatch.setattr(rm, "ask", lambda: Answered(names))
    monkeypatch.setattr(rm, "resource_manager_names", lambda timeout=0: names)
    monkeypatch.setattr(_windows, "resource_manager_instance_ids", lambda wanted: {
        f"{SCR} 0": r"USB\VID_04E6&PID_5116\21120706119"})
    return [device]


def test_windows_list_readers_lists_a_held_reader_once(windows: list[ReaderDescriptor]
                                                       ) -> None:
    readers = list_readers()
    assert [(r.name, r.source, r.pcsc_name) for r in readers] == [
        ("usb#vid_04e6&pid_5116#21120706119", "win32", f"{SCR} 0"),
        ("Windows Hello for Business 1", "pcsc", "Windows Hello for Business 1")]
    assert find_reader(f"{SCR} 0", readers) is readers[0]
    assert find_reader(f"{SCR.lower()} 0", readers) is readers[0]
    # Without the resource manager, SCardSvr's name does not name a direct reader.
    with pytest.raises(ReaderNotFoundError):
        find_reader(f"{SCR} 0", windows)


def test_windows_open_reader_auto_by_scardsvr_name(windows: list[ReaderDescriptor],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[str] = []

    def through_pcsc(name: str, **kw: Any) -> Any:
        opened.append(name)
        return sim_device()
    monkeypatch.setattr(reader_mod, "open_device", held("SCardSvr"))
    monkeypatch.setattr(reader_mod, "open_pcsc_device", through_pcsc)
    with scardio.open_reader(f"{SCR} 0") as reader:
        assert reader.backend == "pcsc" and opened == [f"{SCR} 0"]
        assert reader.backend_reason.startswith("the direct open failed")
        assert f"{SCR} 0" in reader.names
        assert "usb#vid_04e6&pid_5116#21120706119" in reader.names
    # SCardSvr stopped: the same name, found in its listing, goes direct.
    monkeypatch.setattr(reader_mod, "open_device", sim_device)
    with scardio.open_reader(f"{SCR} 0") as reader:
        assert reader.backend == "direct" and opened == [f"{SCR} 0"]
        assert reader.descriptor.pcsc_name == f"{SCR} 0" and f"{SCR} 0" in reader.names


# -- macOS: CryptoTokenKit's PC/SC -------------------------------------------------

TWIN = "Gemalto PC Twin Reader"


def mac_usb(friendly: str, serial: Optional[str]) -> ReaderDescriptor:
    name = friendly + (f" ({serial})" if serial else "")
    return ReaderDescriptor(name, "bundle", "/b/libccid.dylib", friendly,
                            extra={"available": True, "driver_friendly_name": friendly,
                                   "serial": serial})


VPCD = ReaderDescriptor("Virtual PCD", "reader.conf", "/b/ifd-vpcd.bundle", "/dev/null:0x8C7B",
                        extra={"available": True})


@pytest.mark.parametrize("name, readings", [
    ("Yubico YubiKey OTP+FIDO+CCID", [("Yubico YubiKey OTP+FIDO+CCID", 0, 0)]),
    ("Yubico YubiKey OTP+FIDO+CCID 01", [("Yubico YubiKey OTP+FIDO+CCID 01", 0, 0),
                                         ("Yubico YubiKey OTP+FIDO+CCID", 1, 0)]),
    ("Virtual PCD(1)", [("Virtual PCD(1)", 0, 0), ("Virtual PCD", 0, 0)]),
    ("Virtual PCD(2)", [("Virtual PCD(2)", 0, 0), ("Virtual PCD", 0, 1)]),
    ("Twin 02(1)", [("Twin 02(1)", 0, 0), ("Twin", 2, 0)]),
    ("Twin(1) 02", [("Twin(1) 02", 0, 0), ("Twin", 2, 0)]),
    ("Twin(0)", [("Twin(0)", 0, 0)]),
    ("Twin(1) 02(2)", [("Twin(1) 02(2)", 0, 0)]),
    ("ACR 38", [("ACR 38", 0, 0), ("ACR", 38, 0)]),
])
def test_ctk_name_readings(name: str, readings: list[tuple[str, int, int]]) -> None:
    assert _macos.ctk_name_readings(name) == readings


def test_macos_pairs_by_the_bundle_friendly_name() -> None:
    yubikey = mac_usb("Yubico YubiKey OTP+FIDO+CCID", "0001")
    out = _macos.MACOS.pair([yubikey, VPCD], [
        "Yubico YubiKey OTP+FIDO+CCID", "Virtual PCD(1)", "Virtual PCD(2)"])
    assert [(d.name, d.source, d.pcsc_name) for d in out] == [
        ("Yubico YubiKey OTP+FIDO+CCID (0001)", "bundle", "Yubico YubiKey OTP+FIDO+CCID"),
        ("Virtual PCD", "reader.conf", "Virtual PCD(1)"),
        ("Virtual PCD(2)", "pcsc", "Virtual PCD(2)")]  # the second slot: PC/SC only
    assert [d.extra.get("pcsc_match") for d in out[:2]] == ["name", "name"]


def test_macos_names_a_reader_conf_reader_without_friendly_name_by_its_device() -> None:
    out = _macos.MACOS.pair([VPCD], ["/dev/null:0x8C7B(1)", "/dev/null:0x8C7B(2)"])
    assert [(d.source, d.pcsc_name) for d in out] == [
        ("reader.conf", "/dev/null:0x8C7B(1)"), ("pcsc", "/dev/null:0x8C7B(2)")]


def test_macos_identical_readers_pair_by_number_order() -> None:
    direct = [mac_usb(TWIN, "B"), mac_usb(TWIN, "A")]
    out = _macos.MACOS.pair(direct, [f"{TWIN} 01", TWIN])
    assert [(d.name, d.pcsc_name, d.extra["pcsc_match"]) for d in out] == [
        (f"{TWIN} (B)", TWIN, "order"), (f"{TWIN} (A)", f"{TWIN} 01", "order")]
    # No serial numbers: unique_names tells them apart, pairing still works.
    plain = unique_names([mac_usb(TWIN, None), mac_usb(TWIN, None)])
    out = _macos.MACOS.pair(plain, [TWIN, f"{TWIN} 01"])
    assert [(d.name, d.pcsc_name) for d in out] == [(TWIN, TWIN), (f"{TWIN} #2", f"{TWIN} 01")]


def test_macos_lookup_without_the_resource_manager(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_platform, "PLATFORM", _platform.sources_for("darwin"))
    pool = [mac_usb(TWIN, "B"), mac_usb(TWIN, "A"), VPCD]
    assert find_reader(f"{TWIN} 01", pool) is pool[1]
    assert find_reader(f"{TWIN}(1) 01", pool) is pool[1]
    assert find_reader(TWIN.upper(), pool) is pool[0]
    assert find_reader("Virtual PCD(1)", pool) is pool[2]
    for other in (f"{TWIN} 02", "Virtual PCD(2)", "Virtual PCD 00 00"):
        with pytest.raises(ReaderNotFoundError):
            find_reader(other, pool)


@pytest.fixture
def macos(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    """This process discovers as on macOS: two identical USB readers (one
    bundle in the local drop directory lists them), which the system's
    PC/SC stack lists and holds."""
    bundle = tmp_path / "drivers" / "ifd-ccid.bundle" / "Contents"
    (bundle / "MacOS").mkdir(parents=True)
    (bundle / "MacOS" / "libccid.dylib").write_bytes(b"\xcf\xfa\xed\xfe")
    (bundle / "Info.plist").write_text(
        "<?xml version='1.0'?><plist version='1.0'><dict>"
        "<key>CFBundleExecutable</key><string>libccid.dylib</string>"
        "<key>ifdVendorID</key><array><string>0x08E6</string></array>"
        "<key>ifdProductID</key><array><string>0x3437</string></array>"
        f"<key>ifdFriendlyName</key><array><string>{TWIN}</string></array>"
        "</dict></plist>")
    devices = [UsbDevice(f"Twin@{loc:x}", f"IOUSB:/Twin@{loc:x}", 0x08E6, 0x3437, 0x14, n,
                         serial, (), "ioreg", TWIN, loc)
               for n, (loc, serial) in enumerate([(0x14100000, "5A7C"), (0x14200000, "9B01")])]
    mac = _platform.sources_for("darwin")
    monkeypatch.setattr(_platform, "PLATFORM", PlatformSources(
        (str(tmp_path / "drivers"),), mac.library_dir, lambda: devices,
        pcsc_naming=mac.pcsc_naming))
    names = [TWIN, f"{TWIN} 01"]
    monkeypatch.setattr(rm, "ask", lambda: Answered(names))
    monkeypatch.setattr(rm, "resource_manager_names", lambda timeout=0: names)


def test_macos_list_readers_lists_held_readers_once(macos: None) -> None:
    readers = list_readers(reader_conf_dirs=[])
    assert [(r.name, r.device_name, r.pcsc_name) for r in readers] == [
        (f"{TWIN} (5A7C)", TWIN, TWIN), (f"{TWIN} (9B01)", TWIN, f"{TWIN} 01")]
    assert all(r.extra["pcsc_scheme"] == "macos" for r in readers)


def test_macos_open_reader_auto_by_its_ctk_name(macos: None,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[str] = []

    def through_pcsc(name: str, **kw: Any) -> Any:
        opened.append(name)
        return sim_device()
    monkeypatch.setattr(reader_mod, "open_device", held("com.apple.ifdreader"))
    monkeypatch.setattr(reader_mod, "open_pcsc_device", through_pcsc)
    with scardio.open_reader(f"{TWIN} 01", reader_conf_dirs=[]) as reader:
        assert reader.backend == "pcsc" and opened == [f"{TWIN} 01"]
        assert reader.descriptor.name == f"{TWIN} (9B01)"
        assert {f"{TWIN} 01", f"{TWIN} (9B01)"} <= set(reader.names)
    monkeypatch.setattr(reader_mod, "open_device", sim_device)
    with scardio.open_reader(TWIN, reader_conf_dirs=[]) as reader:
        assert reader.backend == "direct" and reader.descriptor.name == f"{TWIN} (5A7C)"
        assert TWIN in reader.names
