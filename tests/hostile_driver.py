"""Build and drive tests/hostile/hostile_ifd.c, the IFD handler that
misbehaves on purpose (its header comment lists the modes, chosen per reader
by the device name)."""

from __future__ import annotations

import hashlib
import os
import shutil
import struct
import subprocess
import tempfile

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.join(HERE, "hostile", "hostile_ifd.c")
NATIVE_IFD = os.path.join(os.path.dirname(HERE), "native", "ifd")

#: IFDHControl code answering how many calls found another call inside.
CTL_CONCURRENT_ENTRIES = 0x42000001
#: IFDHControl code answering how often a stop call and the closing of its
#: reader's channel overlapped (slow-stop).
CTL_STOP_CLOSE_OVERLAPS = 0x42000002


def build() -> str:
    """The driver library, compiled once per source version into the temp
    directory (skips the test without gcc or the C sources)."""
    if not os.path.exists(SOURCE) or not os.path.isdir(NATIVE_IFD):
        pytest.skip("the hostile driver's sources are not part of this checkout")
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed")
    with open(SOURCE, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()[:16]
    out_dir = os.path.join(tempfile.gettempdir(), f"scardio-hostile-{os.getuid()}")
    lib = os.path.join(out_dir, f"hostile_ifd-{digest}.so")
    if os.path.exists(lib):
        return lib
    os.makedirs(out_dir, exist_ok=True)
    tmp = f"{lib}.{os.getpid()}.tmp"
    subprocess.run(["gcc", "-O1", "-g", "-Wall", "-Wextra", "-Werror", "-std=c11", "-pthread",
                    "-fPIC", "-shared", "-fvisibility=hidden", "-I", NATIVE_IFD, SOURCE,
                    "-o", tmp, "-ldl"], check=True, capture_output=True, timeout=120)
    os.replace(tmp, lib)  # atomic: concurrent builders never see half a file
    return lib


def transmit_input(apdu: bytes, protocol: int = 1) -> bytes:  # 1: T=0
    """TRANSMIT's input: the 8-byte SCARD_IO_REQUEST header, then the APDU."""
    return struct.pack("<II", protocol, 8) + apdu
