"""Opening something that is not a usable driver gives a clear, typed error
and leaks nothing."""

from __future__ import annotations

import os
import re
import socket
import sys
from pathlib import Path

import pytest

from scardio import Device, errors
from scardio import _core

from conftest import VPCD_LIBRARY, free_port


def test_missing_library(tmp_path):
    path = tmp_path / "nope.so"
    with pytest.raises(errors.DriverNotFoundError) as info:
        Device.open_ifd(str(path), "x")
    assert str(path) in str(info.value)
    assert isinstance(info.value, OSError)


def test_file_that_is_not_a_library(tmp_path):
    path = tmp_path / "driver.so"
    path.write_text("this is not an ELF file\n")
    with pytest.raises(errors.NotADriverError) as info:
        Device.open_ifd(str(path), "x")
    assert "not a loadable driver library" in str(info.value)


def test_directory_is_not_a_driver(tmp_path):
    with pytest.raises(errors.NotADriverError):
        Device.open_ifd(str(tmp_path), "x")


def test_library_without_ifdh_symbols():
    # The binding itself is a shared library that exports no IFDH entry points.
    with pytest.raises(errors.MissingEntryPointError) as info:
        Device.open_ifd(_core.__file__, "x")
    assert "IFDHCreateChannel" in str(info.value)


def test_empty_library_name():
    with pytest.raises(errors.InvalidParameterError):
        Device.open_ifd("", "x")


def test_channel_that_cannot_be_opened():
    """vpcd cannot listen on a port somebody else holds: the reader is in
    use, and the error names the holder (this process, found via /proc)."""
    if not os.path.exists(VPCD_LIBRARY):
        pytest.skip("vsmartcard-vpcd is not installed")
    port = free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("0.0.0.0", port))
        holder.listen(1)
        with pytest.raises(errors.ChannelOpenError) as info:
            Device.open_ifd(VPCD_LIBRARY, f"/dev/null:{port:#x}", 0)
    assert "could not open channel" in str(info.value)
    if sys.platform.startswith("linux"):
        assert isinstance(info.value, errors.ReaderInUseError)
        assert [h.pid for h in info.value.holders] == [os.getpid()]
        assert f"pid {os.getpid()}, this process) holds TCP port {port}" in str(info.value)
    # the driver is usable again once the port is free
    Device.open_ifd(VPCD_LIBRARY, f"/dev/null:{port:#x}", 0).close()


def test_device_cannot_be_constructed_directly():
    with pytest.raises(TypeError):
        Device()


def test_closed_device_raises_closed_error(sim_device):
    sim_device.close()
    for call in (lambda: sim_device.ioctl(0x00310038, b"", 4),
                 lambda: sim_device.submit(0x00310038, b"", 4),
                 sim_device.fileno, sim_device.harvest, sim_device.cancel_all):
        with pytest.raises(errors.ClosedError):
            call()
    with pytest.raises(errors.ClosedError):
        with sim_device:
            pass


def test_errors_carry_status_and_names(sim_device):
    with pytest.raises(errors.NoCardError) as info:
        sim_device.ioctl(0x00310004, b"\x01\x00\x00\x00", 33)
    e = info.value
    assert e.status == 0xC0000178 and e.status_name == "NO_MEDIA"
    assert e.ioctl == 0x00310004 and "POWER" in str(e)
    assert _core.status_name(e.status) == "NO_MEDIA"


def test_constants_match_the_c_header():
    from scardio.constants import IOCTL
    assert _core.MAX_ATR == 33
    assert _core.MAX_INPUT == 8 + 4 + 3 + 65535 + 3
    assert IOCTL.GET_STATE == 0x00310038


def core_statuses() -> dict[str, int]:
    """The status values native/scio.h defines (its status block)."""
    text = (Path(__file__).resolve().parent.parent / "native" / "scio.h").read_text()
    block = text[text.index("typedef uint32_t scio_status;"):text.index("scio_status_name(")]
    return {m.group(1): int(m.group(2), 16)
            for m in re.finditer(r"#define SCIO_(\w+)\s+(0x[0-9A-Fa-f]+)u", block)}


def test_every_core_status_has_the_same_name_in_errors():
    statuses = core_statuses()
    assert len(statuses) >= 26 and statuses["NO_MEDIA"] == 0xC0000178
    for name, value in statuses.items():
        assert _core.status_name(value) == name
        assert errors.status_name(value) == name
        assert errors.ScardioError("x", status=value).status_name == name
        if value not in (0, 0x103):  # SUCCESS and PENDING are no failures
            exc = errors.error_for_status(value)
            assert exc.status_name == name and name in str(exc)


def test_errors_has_no_table_of_its_own():
    assert not hasattr(errors, "STATUS_NAMES")
    assert errors.status_name(0xC0FFEE00) == "0xC0FFEE00"
    assert str(errors.error_for_status(0xC0FFEE00)) == "0xC0FFEE00"
    assert errors.NoCardError("gone").status_name == "NO_MEDIA"


@pytest.mark.skipif(os.name == "nt", reason="POSIX behaviour")
def test_device_paths_are_a_windows_feature():
    assert _core.list_device_paths() == []
    with pytest.raises(errors.NotSupportedError) as info:
        Device.open_path("/dev/whatever")
    assert "open_ifd" in str(info.value)
    from scardio.discovery import device_path_readers
    assert device_path_readers() == []


CCID = "/usr/lib/pcsc/drivers/ifd-ccid.bundle/Contents/Linux/libccid.so"


def test_real_ccid_driver_loads_and_explains_a_missing_usb_reader():
    """Debian's libccid imports log_msg and log_xxd from its host: it loads
    (the core exports them), then fails to open a USB device that is not
    there, saying so (no holder is guessed for a device that is absent)."""
    if not os.path.exists(CCID):
        pytest.skip("libccid is not installed")
    node = "/dev/bus/usb/001/250"
    if os.path.exists(node):
        pytest.skip(f"{node} exists on this machine")
    with pytest.raises(errors.ChannelOpenError) as info:
        Device.open_ifd(CCID, f"usb:072f/90cc:libudev:0:{node}", 0)
    assert "undefined symbol" not in str(info.value)
    assert not isinstance(info.value, errors.ReaderInUseError)
    if sys.platform.startswith("linux"):
        assert f"{node} does not exist" in str(info.value)
