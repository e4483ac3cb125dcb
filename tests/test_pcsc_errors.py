"""PC/SC failures a user meets before any reader: no client library, a
library that is not one, no resource manager running; and the error types
the backend's statuses map to."""

from __future__ import annotations

import ctypes.util
import json
import os
import subprocess
import sys

import pytest

from scardio import errors
from scardio._core import status_name

import pcscd_namespace

PROBE = r'''
import json, sys
from scardio import errors, pcsc
out = {}
for what, call in (("list", pcsc.list_readers), ("open", lambda: pcsc.open_device("Any 00 00"))):
    try:
        call()
        out[what] = None
    except errors.ScardioError as exc:
        out[what] = {"type": type(exc).__name__, "message": str(exc), "status": exc.status,
                     "gone": isinstance(exc, errors.DeviceGoneError),
                     "load": isinstance(exc, errors.DriverLoadError)}
print(json.dumps(out))
'''


def _probe(env_library: str | None) -> dict[str, object]:
    env = dict(os.environ)
    if env_library is not None:
        env["SCARDIO_PCSC_LIBRARY"] = env_library
    proc = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                          env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    result: dict[str, object] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.skipif(os.name == "nt", reason="SCARDIO_PCSC_LIBRARY is read on POSIX only")
def test_no_client_library_is_driver_not_found() -> None:
    got = _probe("/nonexistent/libpcsclite.so.1")
    for what in ("list", "open"):
        err = got[what]
        assert isinstance(err, dict) and err["type"] == "DriverNotFoundError", got
        assert err["load"] and "/nonexistent/libpcsclite.so.1" in str(err["message"])


@pytest.mark.skipif(os.name == "nt", reason="SCARDIO_PCSC_LIBRARY is read on POSIX only")
def test_a_library_without_the_api_is_missing_entry_point() -> None:
    from scardio.sim import SIM_LIBRARY
    if not os.path.exists(SIM_LIBRARY):
        pytest.skip("the simulated reader is not built")
    got = _probe(SIM_LIBRARY)
    err = got["list"]
    assert isinstance(err, dict) and err["type"] == "MissingEntryPointError", got
    assert "SCardEstablishContext" in str(err["message"])


def test_no_resource_manager_running() -> None:
    """In a private namespace with nothing listening on pcscd's socket."""
    why = pcscd_namespace.unavailable()
    if why is not None:
        pytest.skip(why)
    if ctypes.util.find_library("pcsclite") is None:
        pytest.skip("pcsc-lite's client library (libpcsclite1) is not installed")
    got = pcscd_namespace.run_child([sys.executable, "-c", PROBE], timeout=60)
    for what in ("list", "open"):
        err = got[what]
        assert isinstance(err, dict), got
        assert err["type"] == "ResourceManagerNotRunningError" and err["gone"], got
        assert err["status"] == 0xE0000001
        assert "resource manager is not running" in str(err["message"])


def test_statuses_map_to_typed_errors() -> None:
    assert status_name(0xE0000001) == "NO_SERVICE"
    exc = errors.error_for_status(0xE0000001, ioctl=0x00310014)
    assert isinstance(exc, errors.ResourceManagerNotRunningError)
    assert isinstance(exc, errors.DeviceGoneError)
    assert "resource manager is not running" in str(exc) and "NO_SERVICE" in str(exc)
    exc = errors.error_for_status(0xC0000043, ioctl=0x00310004)
    assert isinstance(exc, errors.ReaderInUseError)
    assert "another client holds the reader exclusively" in str(exc)
    # A message given by the caller is kept as it is.
    exc = errors.error_for_status(0xC0000043, "held by pcscd (pid 1)")
    assert "held by pcscd (pid 1)" in str(exc) and "another client" not in str(exc)
