"""A Linux wheel built with `python -m build --wheel --no-isolation` (this
environment's setuptools and Cython, so no package index is needed; the
isolated build a user gets is tests/test_sdist.py), repaired with
auditwheel, installed in a fresh venv: the simulated reader inside it works
there, and the build prints no warnings."""

from __future__ import annotations

import glob
import os
import subprocess
import sys

import pytest

from build_support import (ROOT, build_env, clean_copy, fresh_venv, unmet_build_requirements,
                           venv_bin, warnings_in)

SMOKE = r"""
import struct, scardio, scardio.sim
from scardio import Device, IOCTL
assert scardio.sim.SIM_LIBRARY.startswith(scardio.__path__[0]), scardio.sim.SIM_LIBRARY
with scardio.sim.open_device(0) as dev:
    scardio.sim.SimControl(dev).insert()
    atr = dev.ioctl(IOCTL.POWER, struct.pack("<I", 1), 33)
    dev.ioctl(IOCTL.SET_PROTOCOL, struct.pack("<I", 3), 4)
    r = dev.ioctl(IOCTL.TRANSMIT, struct.pack("<II", 2, 8) + bytes.fromhex("80EE000004"), 300)
    assert r[8:] == bytes([0, 1, 2, 3, 0x90, 0]), r
print("wheel ok", atr.hex())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux wheels only")
def test_linux_wheel_in_fresh_venv(tmp_path):
    if not (ROOT / "setup.py").exists():
        pytest.skip("needs the source tree")
    for tool in ("build", "auditwheel"):
        if subprocess.run([sys.executable, "-c", f"import {tool}"]).returncode:
            pytest.skip(f"{tool} is not installed (pip install '.[test]')")
    unmet = unmet_build_requirements()
    if unmet:
        pytest.skip(f"this environment lacks the build requirements {unmet} "
                    "(pip install '.[test]')")
    # Build from a clean copy so that in-place build products never leak in.
    src = clean_copy(tmp_path / "src")
    dist = tmp_path / "dist"
    proc = subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation",
                           "-o", str(dist), str(src)],
                          capture_output=True, text=True, timeout=600, env=build_env())
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert not warnings_in(proc.stdout + proc.stderr), "\n".join(
        warnings_in(proc.stdout + proc.stderr))
    (wheel,) = glob.glob(str(dist / "*.whl"))
    repaired = tmp_path / "repaired"
    proc = subprocess.run([sys.executable, "-m", "auditwheel", "repair", wheel, "-w",
                           str(repaired)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (fixed,) = glob.glob(str(repaired / "*.whl"))
    assert "manylinux" in os.path.basename(fixed)

    env_dir = tmp_path / "venv"
    py = str(fresh_venv(env_dir))
    proc = subprocess.run([py, "-m", "pip", "install", "-q", "--no-index", fixed],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    proc = subprocess.run([py, "-c", SMOKE], capture_output=True, text=True, timeout=60,
                          cwd=tmp_path)
    assert proc.returncode == 0 and "wheel ok" in proc.stdout, proc.stdout + proc.stderr
    proc = subprocess.run([str(venv_bin(env_dir, "scardio")), "demo"], capture_output=True,
                          text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
