"""Tests for scardio.discovery with fake sysfs, bundle and reader.conf trees."""

from __future__ import annotations

import logging
import os
import platform
import plistlib
import sys
import types
from pathlib import Path
from typing import Any, Optional

import pytest

import scardio
from scardio import discovery
from scardio.discovery import _macos, _platform, bundles
from scardio.discovery.sources import PlatformSources
from scardio.discovery import (
    AmbiguousReaderError,
    ReaderDescriptor,
    ReaderNotFoundError,
    bundle_readers,
    find_reader,
    list_readers,
    read_bundles,
    read_reader_conf,
    read_usb_devices,
)

PLATFORM_DIR = bundles._bundle_platform_dir()

# Bundles, sysfs and reader.conf are the POSIX sources; list_readers skips them on Windows.
posix_only = pytest.mark.skipif(sys.platform == "win32", reason="POSIX discovery sources")


@pytest.fixture(autouse=True)
def _no_sim_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(discovery.SIM_ENV, raising=False)


# ---------------------------------------------------------------------------
# Fake trees


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


def usb_device(root: Path, sysname: str, vid: str, pid: str, bus: int, dev: int,
               serial: Optional[str] = None,
               interfaces: tuple[tuple[str, Optional[str], Optional[str]], ...] = ()) -> Path:
    """A sysfs device directory; interfaces are (bInterfaceNumber, bInterfaceClass,
    interface string) with None for an absent attribute."""
    d = root / "bus" / "usb" / "devices" / sysname
    write(d / "idVendor", vid + "\n")
    write(d / "idProduct", pid + "\n")
    write(d / "busnum", f"{bus}\n")
    write(d / "devnum", f"{dev}\n")
    if serial is not None:
        write(d / "serial", serial + "\n")
    for number, klass, label in interfaces:
        i = d / f"{sysname}:1.{int(number, 16)}"
        i.mkdir(parents=True)
        write(i / "bInterfaceNumber", number + "\n")
        if klass is not None:
            write(i / "bInterfaceClass", klass + "\n")
        if label is not None:
            write(i / "interface", label + "\n")
    return d


def bundle(drop: Path, name: str, info: Any, *, library: bool = True,
           raw: Optional[bytes] = None) -> Path:
    b = drop / f"{name}.bundle"
    if raw is not None:
        write(b / "Contents" / "Info.plist", raw)
    else:
        write(b / "Contents" / "Info.plist", plistlib.dumps(info))
    if library and isinstance(info, dict) and isinstance(info.get("CFBundleExecutable"), str):
        write(b / "Contents" / PLATFORM_DIR / info["CFBundleExecutable"], b"\x7fELF")
    return b


@pytest.fixture
def sysfs(tmp_path: Path) -> Path:
    root = tmp_path / "sys"
    usb_device(root, "usb1", "1d6b", "0002", 1, 1, interfaces=(("00", "09", None),))
    # a reader with a vendor driver, serial number, CCID interface with a name
    usb_device(root, "1-2", "08e6", "3437", 1, 5, serial="ABC123",
               interfaces=(("00", "0b", "CCID Interface"),))
    # a composite device: HID interface (ignored) + CCID interface 1
    usb_device(root, "1-3", "072f", "90cc", 1, 17,
               interfaces=(("00", "03", None), ("01", "0b", None)))
    # listed by both the vendor bundle and the class driver
    usb_device(root, "1-4", "0a0b", "0001", 1, 22, serial="S1",
               interfaces=(("00", "ff", "Reader S1 slot"),))
    # interface number 0x0a, no class attribute
    usb_device(root, "2-1", "1111", "2222", 2, 3, interfaces=(("0a", None, None),))
    # unknown device
    usb_device(root, "2-2", "1234", "5678", 2, 4, interfaces=(("00", "0b", None),))
    # malformed entries
    usb_device(root, "2-3", "zzzz", "0001", 2, 5)
    write(root / "bus" / "usb" / "devices" / "2-4" / "idVendor", "08e6\n")  # nothing else
    # interface also linked from the devices directory (as in real sysfs)
    link = root / "bus" / "usb" / "devices" / "1-3:1.1"
    link.symlink_to(root / "bus" / "usb" / "devices" / "1-3" / "1-3:1.1")
    return root


@pytest.fixture
def drop(tmp_path: Path) -> Path:
    d = tmp_path / "drivers"
    bundle(d, "vendor", {
        "CFBundleExecutable": "libvendor.so",
        "ifdVendorID": ["0x08E6", "0x0A0B"],
        "ifdProductID": ["0x3437", "0x0001"],
        "ifdFriendlyName": ["Gemalto PC Twin Reader", "Vendor Reader"],
    })
    bundle(d, "ifd-ccid", {
        "CFBundleExecutable": "libccid.so",
        "CFBundleName": "CCIDCLASSDRIVER",
        "ifdVendorID": ["0x072F", "0x0A0B"],
        "ifdProductID": ["0x90CC", "0x0001"],
        "ifdFriendlyName": ["ACS ACR 38U-CCID", "Generic Name"],
    })
    bundle(d, "single", {  # single strings instead of arrays
        "CFBundleExecutable": "libsingle.so",
        "ifdVendorID": "0x1111",
        "ifdProductID": "0x2222",
        "ifdFriendlyName": "Single Reader",
    })
    (d / "README").write_text("not a bundle")
    return d


# ---------------------------------------------------------------------------
# sysfs


def test_read_usb_devices(sysfs: Path) -> None:
    devices = {d.sysname: d for d in read_usb_devices(sysfs)}
    assert set(devices) == {"usb1", "1-2", "1-3", "1-4", "2-1", "2-2"}  # malformed skipped
    d = devices["1-2"]
    assert (d.vendor_id, d.product_id, d.busnum, d.devnum) == (0x08E6, 0x3437, 1, 5)
    assert d.serial == "ABC123"
    assert d.devnode == "/dev/bus/usb/001/005"
    assert [(i.number, i.interface_class, i.name) for i in d.interfaces] == [
        (0, 0x0B, "CCID Interface")]
    assert [i.sysname for i in devices["1-3"].interfaces] == ["1-3:1.0", "1-3:1.1"]
    assert devices["2-1"].interfaces[0].number == 10
    assert devices["2-1"].interfaces[0].interface_class is None


def test_read_usb_devices_missing_sysfs(tmp_path: Path) -> None:
    assert read_usb_devices(tmp_path / "nothing") == []


# ---------------------------------------------------------------------------
# bundles


def test_read_bundles(drop: Path) -> None:
    bundles = {Path(b.path).name: b for b in read_bundles(drop)}
    assert set(bundles) == {"vendor.bundle", "ifd-ccid.bundle", "single.bundle"}
    v = bundles["vendor.bundle"]
    assert v.library == str(drop / "vendor.bundle" / "Contents" / PLATFORM_DIR / "libvendor.so")
    assert v.readers == ((0x08E6, 0x3437, "Gemalto PC Twin Reader"),
                         (0x0A0B, 0x0001, "Vendor Reader"))
    assert not v.is_class_driver
    assert bundles["ifd-ccid.bundle"].is_class_driver
    assert bundles["single.bundle"].readers == ((0x1111, 0x2222, "Single Reader"),)


def test_platform_dir() -> None:
    expected = "MacOS" if sys.platform == "darwin" else platform.system()
    assert PLATFORM_DIR == expected


def test_malformed_bundles_are_skipped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    d = tmp_path / "drivers"
    bundle(d, "garbage", None, raw=b"this is not a plist")
    bundle(d, "array", ["not", "a", "dict"])
    bundle(d, "noexe", {"ifdVendorID": ["0x1"], "ifdProductID": ["0x2"],
                        "ifdFriendlyName": ["x"]})
    bundle(d, "noids", {"CFBundleExecutable": "lib.so", "ifdFriendlyName": ["x"]})
    bundle(d, "mismatch", {"CFBundleExecutable": "lib.so", "ifdVendorID": ["0x1", "0x2"],
                           "ifdProductID": ["0x2", "0x3", "0x4"],
                           "ifdFriendlyName": ["a", "b"]})
    bundle(d, "badhex", {"CFBundleExecutable": "lib.so", "ifdVendorID": ["0xZZ", "0x0002"],
                         "ifdProductID": ["0x1", "0x0003"], "ifdFriendlyName": ["a", "b"]})
    bundle(d, "numbers", {"CFBundleExecutable": "lib.so", "ifdVendorID": [1],
                          "ifdProductID": [2], "ifdFriendlyName": ["a"]})
    (d / "empty.bundle").mkdir()
    with caplog.at_level(logging.WARNING, logger="scardio.discovery"):
        bundles = read_bundles(d)
    assert [Path(b.path).name for b in bundles] == ["badhex.bundle"]
    assert bundles[0].readers == ((0x0002, 0x0003, "b"),)
    text = caplog.text
    assert "garbage.bundle: cannot read" in text
    assert "array.bundle" in text and "not a dictionary" in text
    assert "noexe.bundle: CFBundleExecutable missing" in text
    assert "noids.bundle: ifdVendorID, ifdProductID missing" in text
    assert "mismatch.bundle" in text and "different lengths" in text
    assert "badhex.bundle: ignoring entry 0" in text
    assert "numbers.bundle" in text
    assert "empty.bundle: no Contents/Info.plist" in text


def test_read_bundles_missing_dir(tmp_path: Path) -> None:
    assert read_bundles(tmp_path / "nothing") == []


@posix_only
def test_bundle_readers(sysfs: Path, drop: Path) -> None:
    readers = list_readers(drop_dir=drop, sysfs_root=sysfs, reader_conf_dirs=[])
    by_name = {r.name: r for r in readers}
    assert list(by_name) == [
        "Gemalto PC Twin Reader [CCID Interface] (ABC123)",
        "ACS ACR 38U-CCID",
        "Vendor Reader [Reader S1 slot]",  # serial already in the interface name
        "Single Reader",
    ]
    r = by_name["Gemalto PC Twin Reader [CCID Interface] (ABC123)"]
    assert r.source == "bundle"
    assert r.device_name == "usb:08e6/3437:libudev:0:/dev/bus/usb/001/005"
    assert r.library.endswith(os.path.join("vendor.bundle", "Contents", PLATFORM_DIR,
                                           "libvendor.so"))
    assert r.lun == 0
    assert r.available
    assert r.extra["vendor_id"] == 0x08E6 and r.extra["serial"] == "ABC123"
    assert r.extra["interface_class"] == 0x0B and r.extra["bus"] == 1
    # composite device: only the CCID interface, number 1
    acs = by_name["ACS ACR 38U-CCID"]
    assert acs.device_name == "usb:072f/90cc:libudev:1:/dev/bus/usb/001/017"
    assert acs.extra["class_driver"] is True
    # the vendor driver wins over the class driver, which is kept as fallback
    v = by_name["Vendor Reader [Reader S1 slot]"]
    assert "vendor.bundle" in v.library
    assert "ifd-ccid.bundle" in str(v.extra["fallback_library"])
    # interface number printed in decimal
    assert by_name["Single Reader"].device_name == "usb:1111/2222:libudev:10:/dev/bus/usb/002/003"


@posix_only
def test_bundle_without_library(sysfs: Path, tmp_path: Path,
                                caplog: pytest.LogCaptureFixture) -> None:
    d = tmp_path / "drivers"
    bundle(d, "nolib", {"CFBundleExecutable": "libgone.so", "ifdVendorID": ["0x08E6"],
                        "ifdProductID": ["0x3437"], "ifdFriendlyName": ["Gone"]},
           library=False)
    with caplog.at_level(logging.WARNING, logger="scardio.discovery"):
        assert list_readers(drop_dir=d, sysfs_root=sysfs, reader_conf_dirs=[]) == []
    assert "libgone.so does not exist" in caplog.text
    readers = list_readers(drop_dir=d, sysfs_root=sysfs, reader_conf_dirs=[],
                           include_unavailable=True)
    assert len(readers) == 1 and not readers[0].available
    assert "does not exist" in str(readers[0].extra["problem"])


@posix_only
def test_duplicate_names_made_unique(tmp_path: Path, drop: Path) -> None:
    root = tmp_path / "sys2"
    for n in (1, 2, 3):
        usb_device(root, f"1-{n}", "072f", "90cc", 1, n + 10, interfaces=(("00", "0b", None),))
    names = [r.name for r in list_readers(drop_dir=drop, sysfs_root=root, reader_conf_dirs=[])]
    assert names == ["ACS ACR 38U-CCID", "ACS ACR 38U-CCID #2", "ACS ACR 38U-CCID #3"]


def test_device_without_interfaces_uses_interface_0(tmp_path: Path, drop: Path) -> None:
    root = tmp_path / "sys3"
    usb_device(root, "3-1", "1111", "2222", 3, 9)
    (r,) = bundle_readers(read_bundles(drop), read_usb_devices(root))
    assert r.device_name == "usb:1111/2222:libudev:0:/dev/bus/usb/003/009"


# ---------------------------------------------------------------------------
# reader.conf


@pytest.fixture
def lib(tmp_path: Path) -> Path:
    return write(tmp_path / "lib" / "libfake.so", b"\x7fELF")


def test_reader_conf_entries(tmp_path: Path, lib: Path) -> None:
    d = tmp_path / "reader.conf.d"
    write(d / "one", f"""
# a comment
FRIENDLYNAME   "My Reader"   # trailing comment
DEVICENAME     /dev/null:1
LIBPATH        {lib}
CHANNELID      0x10
""")
    write(d / "two", f"""
LIBPATH {lib}
FRIENDLYNAME 'Single # Quoted'
DEVICENAME /dev/null:2

FRIENDLYNAME Bare
CHANNELID 20
LIBPATH "{lib}"
""")
    readers = read_reader_conf([d])
    assert [r.name for r in readers] == ["My Reader", "Single # Quoted", "Bare"]
    a, b, c = readers
    assert (a.source, a.library, a.device_name, a.lun) == ("reader.conf", str(lib), "/dev/null:1", 0)
    assert a.extra["channel_id"] == 0x10
    assert a.extra["config_file"] == str(d / "one") and a.extra["line"] == 3
    assert b.extra["channel_id"] is None
    assert (c.device_name, c.extra["channel_id"]) == ("", 0x20)  # CHANNELID is hex
    assert all(r.available for r in readers)


def test_reader_conf_file_and_hidden_files(tmp_path: Path, lib: Path) -> None:
    d = tmp_path / "conf"
    write(d / ".hidden", f'FRIENDLYNAME "Hidden"\nDEVICENAME /dev/null\nLIBPATH {lib}\n')
    (d / "subdir").mkdir()
    conf = write(tmp_path / "reader.conf",
                 f'FRIENDLYNAME "From File"\nDEVICENAME /dev/null\nLIBPATH {lib}\n')
    names = [r.name for r in read_reader_conf([d, conf, tmp_path / "missing"])]
    assert names == ["From File"]


@posix_only
def test_reader_conf_missing_library(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    d = tmp_path / "conf"
    write(d / "gone", 'FRIENDLYNAME "Gone"\nDEVICENAME /dev/null:0\nLIBPATH /nonexistent/lib.so\n')
    write(d / "nodev", f'FRIENDLYNAME "No Device"\nDEVICENAME {tmp_path}/ttyX\n'
                       f'LIBPATH {d / "gone"}\n')
    with caplog.at_level(logging.WARNING, logger="scardio.discovery"):
        assert list_readers(drop_dir=tmp_path, sysfs_root=tmp_path, reader_conf_dirs=[d]) == []
    assert "'Gone'" in caplog.text and "/nonexistent/lib.so does not exist" in caplog.text
    assert "ttyX does not exist" in caplog.text
    readers = read_reader_conf([d])  # the low-level reader keeps them, flagged
    assert [(r.name, r.available) for r in readers] == [("Gone", False), ("No Device", False)]


def test_reader_conf_malformed(tmp_path: Path, lib: Path,
                               caplog: pytest.LogCaptureFixture) -> None:
    d = tmp_path / "conf"
    write(d / "bad", f"""
FRIENDLYNAME "Unterminated
DEVICENAME /dev/null
LIBPATH {lib}

FRIENDLYNAME Two Words
DEVICENAME /dev/null
LIBPATH {lib}

FRIENDLYNAME "No Library"
DEVICENAME /dev/null

FRIENDLYNAME "Bad Channel"
CHANNELID xyz
LIBPATH {lib}

FRIENDLYNAME "No Device"
LIBPATH {lib}

FRIENDLYNAME
LIBPATH {lib}
DEVICENAME /dev/null

FRIENDLYNAME "Typo"
DEVICENAME /dev/null
LIBPAHT {lib}

FRIENDLYNAME "Good"
DEVICENAME /dev/null
LIBPATH {lib}
""")
    write(d / "binary", bytes(range(256)) * 4)
    with caplog.at_level(logging.WARNING, logger="scardio.discovery"):
        readers = read_reader_conf([d])
    assert [r.name for r in readers] == ["Good"]
    text = caplog.text
    assert "line 2: unterminated quote" in text
    assert "line 6: FRIENDLYNAME has 2 values (quote values that contain spaces)" in text
    assert "LIBPATH missing" in text
    assert "CHANNELID 'xyz' is not hexadecimal" in text
    assert "DEVICENAME or CHANNELID missing" in text
    assert "FRIENDLYNAME has no value" in text
    assert "unknown keyword 'LIBPAHT'" in text


@posix_only
def test_real_vpcd_entry() -> None:
    path = "/etc/reader.conf.d/vpcd"
    if not os.path.isfile(path):
        pytest.skip(f"{path} is absent (install vsmartcard-vpcd)")
    (r,) = read_reader_conf([path])
    assert r.name == "Virtual PCD"
    assert r.source == "reader.conf"
    assert r.device_name == "/dev/null:0x8C7B"
    assert r.extra["channel_id"] == 0x8C7B
    assert r.library.endswith("libifdvpcd.so")
    assert r.available == os.path.exists(r.library)
    if r.available:
        assert "Virtual PCD" in [x.name for x in list_readers()]


def test_real_ccid_bundle() -> None:
    d = "/usr/lib/pcsc/drivers"
    if not os.path.isdir(os.path.join(d, "ifd-ccid.bundle")):
        pytest.skip("libccid is not installed")
    bundles = {Path(b.path).name: b for b in read_bundles(d)}
    ccid = bundles["ifd-ccid.bundle"]
    assert ccid.is_class_driver
    assert len(ccid.readers) > 100
    assert ccid.library.endswith(os.path.join("Contents", PLATFORM_DIR, "libccid.so"))


# ---------------------------------------------------------------------------
# simulated readers


@pytest.fixture
def fake_sim(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    lib = write(tmp_path / "libscardio_sim.so", b"\x7fELF")
    mod = types.ModuleType("scardio.sim")
    mod.SIM_LIBRARY = str(lib)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "scardio.sim", mod)
    monkeypatch.setattr(scardio, "sim", mod, raising=False)
    return str(lib)


@pytest.fixture
def no_binding(monkeypatch: pytest.MonkeyPatch) -> None:
    # scardio.sim imports the binding: without it, the import fails
    monkeypatch.setitem(sys.modules, "scardio.sim", None)
    monkeypatch.delattr(scardio, "sim", raising=False)


def _only_sim(**kw: object) -> list[ReaderDescriptor]:
    empty = "/nonexistent-scardio-test"
    return list_readers(drop_dir=empty, sysfs_root=empty, reader_conf_dirs=[], **kw)  # type: ignore[arg-type]


def test_sim_readers(fake_sim: str) -> None:
    readers = _only_sim(sim=3)
    assert [r.name for r in readers] == [f"scardio Simulated Reader {i}" for i in range(3)]
    assert [r.lun for r in readers] == [0, 1, 2]
    assert all(r.source == "sim" and r.library == fake_sim and r.available for r in readers)
    assert readers[1].device_name == "sim:1"


def test_sim_env(fake_sim: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCARDIO_SIM", "2")
    assert len(_only_sim()) == 2
    assert len(_only_sim(sim=1)) == 1  # the argument wins
    monkeypatch.setenv("SCARDIO_SIM", "")
    assert _only_sim() == []
    monkeypatch.setenv("SCARDIO_SIM", "two")
    with pytest.raises(ValueError, match="SCARDIO_SIM must be a non-negative integer, got 'two'"):
        _only_sim()
    monkeypatch.setenv("SCARDIO_SIM", "-1")
    with pytest.raises(ValueError, match="SCARDIO_SIM"):
        _only_sim()


def test_sim_negative() -> None:
    with pytest.raises(ValueError, match="sim must be >= 0"):
        _only_sim(sim=-1)


def test_sim_without_binding(no_binding: None) -> None:
    (r,) = _only_sim(sim=1)
    assert r.library == ""
    assert not r.available
    assert "not built" in str(r.extra["problem"])


@posix_only
def test_sim_after_other_readers(fake_sim: str, tmp_path: Path, lib: Path) -> None:
    d = tmp_path / "conf"
    write(d / "x", f'FRIENDLYNAME "Conf"\nDEVICENAME /dev/null\nLIBPATH {lib}\n')
    readers = list_readers(1, drop_dir=tmp_path, sysfs_root=tmp_path, reader_conf_dirs=[d])
    assert [r.source for r in readers] == ["reader.conf", "sim"]


# ---------------------------------------------------------------------------
# descriptors and find_reader


def _pool() -> list[ReaderDescriptor]:
    return [
        ReaderDescriptor("Virtual PCD", "reader.conf", "/l/vpcd.so", "/dev/null:0x8C7B"),
        ReaderDescriptor("scardio Simulated Reader 0", "sim", "/l/sim.so", "sim:0", 0),
        ReaderDescriptor("scardio Simulated Reader 1", "sim", "/l/sim.so", "sim:1", 1),
        ReaderDescriptor("Gemalto PC Twin Reader (ABC)", "bundle", "/l/ccid.so", "usb:..."),
    ]


def test_descriptor_is_frozen_and_hashable() -> None:
    r = ReaderDescriptor("n", "sim", "/l", "d", 0, {"available": True})
    with pytest.raises(AttributeError):
        r.name = "m"  # type: ignore[misc]
    with pytest.raises(TypeError):
        r.extra["x"] = 1  # type: ignore[index]
    assert hash(r) == hash(ReaderDescriptor("n", "sim", "/l", "d", 0))
    assert str(r) == "n"
    assert ReaderDescriptor("n", "sim", "/l", "d").available  # default when unknown


def test_find_by_index_and_digits() -> None:
    pool = _pool()
    assert find_reader(2, pool) is pool[2]
    assert find_reader("1", pool) is pool[1]
    with pytest.raises(ReaderNotFoundError, match=r"no reader with index 4 \(4 reader\(s\): "
                                                  r"0: 'Virtual PCD'; 1: "):
        find_reader(4, pool)
    with pytest.raises(ReaderNotFoundError):
        find_reader(-1, pool)
    with pytest.raises(TypeError):
        find_reader(True, pool)


def test_find_by_name() -> None:
    pool = _pool()
    assert find_reader("Virtual PCD", pool) is pool[0]
    assert find_reader("virtual pcd", pool) is pool[0]
    assert find_reader("gemalto", pool) is pool[3]
    assert find_reader("reader 1", pool) is pool[2]


def test_find_ambiguous() -> None:
    pool = _pool()
    with pytest.raises(AmbiguousReaderError) as exc:
        find_reader("simulated", pool)
    message = str(exc.value)
    assert "'simulated' matches 2 readers" in message
    assert "1: 'scardio Simulated Reader 0'; 2: 'scardio Simulated Reader 1'" in message
    assert exc.value.candidates == ["scardio Simulated Reader 0", "scardio Simulated Reader 1"]
    assert isinstance(exc.value, ReaderNotFoundError) and isinstance(exc.value, LookupError)


def test_find_duplicate_exact_names() -> None:
    pool = _pool() + [ReaderDescriptor("Virtual PCD", "reader.conf", "/l/other.so", "x")]
    with pytest.raises(AmbiguousReaderError, match=r"2 readers are named 'Virtual PCD': "
                                                   r"0: 'Virtual PCD'; 4: 'Virtual PCD'"):
        find_reader("Virtual PCD", pool)


def test_find_case_insensitive_exact_beats_substring() -> None:
    pool = [ReaderDescriptor("Reader", "sim", "", ""),
            ReaderDescriptor("Reader Two", "sim", "", "")]
    assert find_reader("reader", pool) is pool[0]


def test_find_not_found() -> None:
    with pytest.raises(ReaderNotFoundError, match=r"no reader matches 'omnikey' \(0: 'Virtual PCD';") as exc:
        find_reader("omnikey", _pool())
    assert exc.value.query == "omnikey"
    assert len(exc.value.candidates) == 4
    with pytest.raises(ReaderNotFoundError, match="no readers found"):
        find_reader("x", [])


# ---------------------------------------------------------------------------
# macOS: USB devices from the IORegistry, both drop directories

IOREG_FIXTURE = Path(__file__).parent / "data" / "ioreg-usb-ccid.plist"
posix_shell = pytest.mark.skipif(sys.platform == "win32", reason="fake ioreg is a sh script")


def test_parse_ioreg_fixture() -> None:
    devices = discovery.parse_ioreg_usb(IOREG_FIXTURE.read_bytes())
    assert [(d.vendor_id, d.product_id) for d in devices] == [
        (0x05AC, 0x8007), (0x05E3, 0x0610), (0x08E6, 0x3437), (0x046D, 0xC31C)]
    reader = devices[2]
    assert reader.source == "ioreg"
    assert reader.sysname == "USB SmartCard Reader@14120000"
    assert reader.path == ("IOUSB:/AppleUSBXHCI Root Hub Simulation@14000000/"
                           "USB2.0 Hub@14100000/USB SmartCard Reader@14120000")
    assert reader.location_id == 0x14120000 and reader.busnum == 0x14
    assert reader.devnum == 3 and reader.session_id == 1301992551
    assert reader.serial == "5A7C0F12" and reader.product_name == "USB SmartCard Reader"
    assert reader.interfaces == ()
    assert devices[3].serial is None


@pytest.mark.parametrize("data", [b"", b"not xml", b"<plist><dict><key>a</key></plist>"])
def test_parse_ioreg_rejects_garbage(data: bytes) -> None:
    with pytest.raises(ValueError, match="not a plist"):
        discovery.parse_ioreg_usb(data)


def test_parse_ioreg_skips_entries_without_ids() -> None:
    tree = {"IORegistryEntryName": "Root", "IORegistryEntryChildren": [
        {"IORegistryEntryName": "no ids", "idVendor": "08e6", "IORegistryEntryChildren": [
            {"IORegistryEntryName": "r", "idVendor": 1, "idProduct": 2}]},
        {"IORegistryEntryName": "bool ids", "idVendor": True, "idProduct": 2},
        "not a dict"]}
    devices = discovery.parse_ioreg_usb(plistlib.dumps(tree))
    assert [(d.sysname, d.vendor_id, d.product_id) for d in devices] == [("r", 1, 2)]


def fake_ioreg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, script: str) -> None:
    """Put an `ioreg` running *script* (sh) first on PATH."""
    bindir = tmp_path / "bin"
    exe = write(bindir / "ioreg", "#!/bin/sh\n" + script + "\n")
    exe.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}")


@pytest.fixture
def macos(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> tuple[Path, Path]:
    """This process discovers as on macOS, with the two drop directories in
    tmp_path (local first, then the system one)."""
    real = _platform.sources_for("darwin")
    local, system = tmp_path / "local-drivers", tmp_path / "system-drivers"
    monkeypatch.setattr(_platform, "PLATFORM", PlatformSources(
        (str(local), str(system)), real.library_dir, real.usb_devices))
    return local, system


def mac_bundle(drop: Path, name: str, vid: str, pid: str, friendly: str) -> Path:
    b = bundle(drop, name, {"CFBundleExecutable": f"lib{name}.dylib", "ifdVendorID": [vid],
                            "ifdProductID": [pid], "ifdFriendlyName": [friendly]},
               library=False)
    write(b / "Contents" / "MacOS" / f"lib{name}.dylib", b"\xcf\xfa\xed\xfe")
    return b


def test_macos_platform_sources() -> None:
    mac = _platform.sources_for("darwin")
    assert mac.drop_dirs == ("/usr/local/libexec/SmartCardServices/drivers",
                             "/usr/libexec/SmartCardServices/drivers")
    assert mac.library_dir == "MacOS"
    assert mac.usb_devices is discovery.read_ioreg_usb_devices
    linux = _platform.sources_for("linux")
    assert linux.drop_dirs == ("/usr/lib/pcsc/drivers",)
    assert linux.usb_devices is discovery.read_usb_devices


def test_default_drop_dir_is_the_first_of_the_list(macos: tuple[Path, Path]) -> None:
    local, system = macos
    assert discovery.default_drop_dirs() == (str(local), str(system))
    assert discovery.default_drop_dir() == str(local)  # the old API still answers


@posix_shell
def test_macos_list_readers_from_ioreg(macos: tuple[Path, Path], tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    local, system = macos
    fake_ioreg(tmp_path, monkeypatch,
               f'[ "$*" = "-p IOUSB -l -a" ] || exit 9\ncat "{IOREG_FIXTURE}"')
    mac_bundle(system, "ifd-ccid", "0x08E6", "0x3437", "Gemalto PC Twin Reader")
    mac_bundle(system, "kbd", "0x1234", "0x0001", "Not This One")  # not plugged in
    readers = list_readers(reader_conf_dirs=[])
    assert [r.name for r in readers] == ["Gemalto PC Twin Reader (5A7C0F12)"]
    (r,) = readers
    # pcsc-lite's macOS hotplug passes the friendly name; CCID built for
    # macOS matches the device argument against its ifdFriendlyName list.
    assert r.device_name == "Gemalto PC Twin Reader"
    assert r.library == str(system / "ifd-ccid.bundle" / "Contents" / "MacOS"
                            / "libifd-ccid.dylib")
    assert r.extra["location_id"] == 0x14120000
    assert r.extra["ioreg"] == ("IOUSB:/AppleUSBXHCI Root Hub Simulation@14000000/"
                                "USB2.0 Hub@14100000/USB SmartCard Reader@14120000")
    assert r.available

    # A driver in the local directory lists the same reader: it comes first.
    mac_bundle(local, "vendor", "0x08E6", "0x3437", "Gemalto Twin (vendor driver)")
    (r,) = list_readers(reader_conf_dirs=[])
    assert r.device_name == "Gemalto Twin (vendor driver)"
    assert r.extra["bundle"] == str(local / "vendor.bundle")


@posix_shell
@pytest.mark.parametrize("script, message", [
    ("echo 'ioreg: no such plane' >&2; exit 3", "exited with 3: ioreg: no such plane"),
    ("echo garbage", "not a plist"),
    ("exec sleep 5", "timed out"),
])
def test_macos_ioreg_failure(macos: tuple[Path, Path], tmp_path: Path,
                             monkeypatch: pytest.MonkeyPatch,
                             caplog: pytest.LogCaptureFixture, script: str,
                             message: str) -> None:
    local, _ = macos
    fake_ioreg(tmp_path, monkeypatch, script)
    mac_bundle(local, "ifd-ccid", "0x08E6", "0x3437", "Gemalto PC Twin Reader")
    monkeypatch.setattr(_macos, "IOREG_TIMEOUT", 0.5)
    with caplog.at_level(logging.WARNING, logger="scardio.discovery"):
        assert list_readers(reader_conf_dirs=[]) == []
    assert message in caplog.text


@posix_only
def test_macos_ioreg_absent(macos: tuple[Path, Path], tmp_path: Path,
                            monkeypatch: pytest.MonkeyPatch,
                            caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with caplog.at_level(logging.WARNING, logger="scardio.discovery"):
        assert discovery.read_ioreg_usb_devices() == []
        assert list_readers(1, reader_conf_dirs=[])[0].source == "sim"
    assert "cannot list USB devices with ioreg -p IOUSB -l -a" in caplog.text


# ---------------------------------------------------------------------------
# The package: one front, one module per OS, chosen in one place

PER_OS_MODULES = {"_linux", "_macos", "_freebsd", "_windows"}
SELECTION_POINT = "_platform"


def _package_sources() -> dict[str, str]:
    """Module name -> source text of every module of scardio.discovery."""
    found = {}
    for folder in discovery.__path__:
        for entry in sorted(os.listdir(folder)):
            if entry.endswith(".py"):
                found[entry[:-3]] = Path(folder, entry).read_text(encoding="utf-8")
    return found


def _names_the_platform(source: str) -> bool:
    """The module asks which OS it runs on (sys.platform, os.name, or the
    platform module), in code or in words."""
    import ast
    if "sys.platform" in source:
        return True
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and (
                (node.value.id, node.attr) in {("sys", "platform"), ("os", "name")}):
            return True
        if isinstance(node, ast.Import) and any(a.name == "platform" for a in node.names):
            return True
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (
                node.module == "platform"
                or (node.module == "sys" and any(a.name == "platform" for a in node.names))):
            return True
    return False


def test_the_platform_check_can_fail() -> None:
    assert _names_the_platform("import sys\nif sys.platform == 'x':\n    pass\n")
    assert _names_the_platform("from sys import platform as p\n")
    assert _names_the_platform("import os\nwindows = os.name == 'nt'\n")
    assert _names_the_platform('"""Reads sys.platform."""\n')
    assert not _names_the_platform("import os\nx = os.path.join('a', 'b')\n")


def test_only_the_per_os_modules_and_the_selection_point_name_the_platform() -> None:
    sources = _package_sources()
    assert PER_OS_MODULES | {SELECTION_POINT, "__init__"} <= set(sources)
    naming = {name for name, text in sources.items() if _names_the_platform(text)}
    assert naming <= PER_OS_MODULES | {SELECTION_POINT}, naming
    assert "sys.platform" in sources[SELECTION_POINT]
    others = [name for name in PER_OS_MODULES | {SELECTION_POINT}
              if "sys.platform" in sources[name] and name != SELECTION_POINT]
    assert others == [], f"{others} read sys.platform: the choice is made in {SELECTION_POINT}"


def test_generic_modules_import_no_per_os_module() -> None:
    """Only the selection point picks a per-OS module; the front imports
    them only to re-export their public functions."""
    import ast
    for name, text in _package_sources().items():
        if name in PER_OS_MODULES | {SELECTION_POINT, "__init__"}:
            continue
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                assert node.module not in PER_OS_MODULES, f"{name} imports {node.module}"


def test_the_front_exports_what_the_module_exported() -> None:
    """Every public name of scardio.discovery from before it became a package."""
    before = ["AmbiguousReaderError", "DriverBundle", "ReaderDescriptor",
              "ReaderNotFoundError", "UsbDevice", "UsbInterface", "bundle_readers",
              "default_drop_dir", "default_drop_dirs", "find_reader", "list_readers",
              "parse_ioreg_usb", "read_bundles", "read_ioreg_usb_devices",
              "read_reader_conf", "read_usb_devices", "sim_readers", "SIM_ENV", "SIM_NAME"]
    assert discovery.__all__ == before
    also = ["CCID_CLASS_DRIVER", "DEFAULT_READER_CONF", "DEFAULT_SYSFS_ROOT", "DropDirs",
            "IOREG_COMMAND", "IOREG_TIMEOUT", "PathLike", "USB_CLASS_SMART_CARD",
            "USB_CLASS_VENDOR_SPECIFIC", "device_path_readers", "log"]
    missing = [n for n in before + also if not hasattr(discovery, n)]
    assert missing == []
    assert discovery.IOREG_COMMAND == ("ioreg", "-p", "IOUSB", "-l", "-a")
    assert discovery.DEFAULT_READER_CONF == ("/etc/reader.conf.d", "/etc/reader.conf")
    assert discovery.log is logging.getLogger("scardio.discovery") is bundles.log


def test_per_os_selection() -> None:
    assert _platform.sources_for(sys.platform) == _platform.PLATFORM
    assert _platform.sources_for("freebsd14").drop_dirs == ("/usr/local/lib/pcsc/drivers",)
    assert _platform.sources_for("openbsd7").drop_dirs == ("/usr/lib/pcsc/drivers",)
    for name in ("linux", "darwin", "freebsd14"):
        assert _platform.sources_for(name).os_readers is None
    win = _platform.sources_for("win32")
    assert win.os_readers is discovery.device_path_readers
    assert win.drop_dirs == () and win.usb_devices() == []


def test_os_readers_replace_the_pcsclite_sources(fake_sim: str, sysfs: Path, drop: Path,
                                                 tmp_path: Path, lib: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """As on Windows: the readers the OS lists, then the simulated ones;
    bundles and reader.conf are not read even when given (the same
    arguments find both elsewhere: test_bundle_readers, test_sim_after_other_readers)."""
    conf = write(tmp_path / "conf" / "x",
                 f'FRIENDLYNAME "Conf"\nDEVICENAME /dev/null\nLIBPATH {lib}\n')
    device = ReaderDescriptor("root#scardio_sim#0000", "win32", "",
                              r"\\?\root#scardio_sim#0000#{guid}", extra={"available": True})
    win = _platform.sources_for("win32")
    monkeypatch.setattr(_platform, "PLATFORM", PlatformSources(
        win.drop_dirs, win.library_dir, win.usb_devices, os_readers=lambda: [device]))
    readers = list_readers(1, drop_dir=drop, sysfs_root=sysfs, reader_conf_dirs=[conf.parent])
    assert [(r.name, r.source) for r in readers] == [
        ("root#scardio_sim#0000", "win32"), ("scardio Simulated Reader 0", "sim")]


def test_default_drop_dir_where_there_is_none_says_so(monkeypatch) -> None:
    monkeypatch.setattr(_platform, "PLATFORM", _platform.sources_for("win32"))
    assert discovery.default_drop_dirs() == ()
    with pytest.raises(LookupError, match="no pcsc-lite driver bundle directory"):
        discovery.default_drop_dir()


# ---------------------------------------------------------------------------
# Oversized configuration files (a sparse 1 GiB file costs no disk)

GIB = 1 << 30


def _limited_memory() -> None:
    import resource
    limit = 768 << 20  # far below the 1 GiB file: reading it whole fails
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def _sparse(path: Path, size: int = GIB) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.truncate(size)
    return path


@posix_only
def test_huge_reader_conf_is_skipped_by_the_cli(tmp_path: Path, lib: Path) -> None:
    import subprocess
    big = _sparse(tmp_path / "huge.conf")
    good = write(tmp_path / "good.conf",
                 f'FRIENDLYNAME "Small"\nDEVICENAME /dev/null\nLIBPATH {lib}\n')
    env = dict(os.environ)
    env.pop(discovery.SIM_ENV, None)
    proc = subprocess.run([sys.executable, "-m", "scardio", "list", "--reader-conf", str(big),
                           "--reader-conf", str(good)], capture_output=True, text=True,
                          timeout=60, preexec_fn=_limited_memory, env=env)
    assert "MemoryError" not in proc.stderr
    assert f"skipping reader configuration {big}" in proc.stderr
    assert "more than the 1048576 bytes" in proc.stderr
    assert "Small" in proc.stdout, (proc.stdout, proc.stderr)


@posix_only
def test_huge_info_plist_is_skipped(tmp_path: Path) -> None:
    import subprocess
    d = tmp_path / "drivers"
    _sparse(d / "huge.bundle" / "Contents" / "Info.plist")
    bundle(d, "small", {"CFBundleExecutable": "lib.so", "ifdVendorID": ["0x1"],
                        "ifdProductID": ["0x2"], "ifdFriendlyName": ["x"]})
    code = ("import logging, sys; logging.basicConfig(stream=sys.stdout)\n"
            "from scardio.discovery import read_bundles\n"
            f"print([b.path for b in read_bundles({str(d)!r})])\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, preexec_fn=_limited_memory)
    assert proc.returncode == 0, proc.stderr
    assert "skipping driver bundle" in proc.stdout and "huge.bundle" in proc.stdout
    assert "more than the 1048576 bytes" in proc.stdout
    assert "small.bundle" in proc.stdout and "huge.bundle']" not in proc.stdout


def test_config_bound_is_exact(tmp_path: Path) -> None:
    from scardio.discovery import limits
    at = write(tmp_path / "at", b"x" * limits.MAX_CONFIG_BYTES)
    assert len(limits.read_bounded(str(at))) == limits.MAX_CONFIG_BYTES
    over = write(tmp_path / "over", b"x" * (limits.MAX_CONFIG_BYTES + 1))
    with pytest.raises(limits.ConfigTooLargeError, match="over"):
        limits.read_bounded(str(over))
