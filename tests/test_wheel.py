"""A Linux wheel built with `python -m build`, repaired with auditwheel,
installed in a fresh venv: the simulated reader inside it works there."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import venv

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SMOKE = r"""
import struct, scardio, scardio.sim
from scardio import Device, IOCTL
assert scardio.sim.SIM_LIBRARY.startswith(scardio.__path__[0]), scardio.sim.SIM_LIBRARY
with Device.open_sim(0) as dev:
    scardio.sim.SimControl(dev).insert()
    atr = dev.ioctl(IOCTL.POWER, struct.pack("<I", 1), 33)
    dev.ioctl(IOCTL.SET_PROTOCOL, struct.pack("<I", 3), 4)
    r = dev.ioctl(IOCTL.TRANSMIT, struct.pack("<II", 2, 8) + bytes.fromhex("80EE000004"), 300)
    assert r[8:] == bytes([0, 1, 2, 3, 0x90, 0]), r
print("wheel ok", atr.hex())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux wheels only")
def test_linux_wheel_in_fresh_venv(tmp_path):
    if not os.path.exists(os.path.join(ROOT, "setup.py")):
        pytest.skip("needs the source tree")
    for tool in ("build", "auditwheel"):
        if subprocess.run([sys.executable, "-c", f"import {tool}"]).returncode:
            pytest.skip(f"{tool} is not installed (pip install '.[test]')")
    src = tmp_path / "src"
    # Build from a copy so that in-place build products never leak in.
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(
        ".git", "build", "dist", "*.so", "_core.c", ".hypothesis", ".benchmarks",
        "__pycache__", "*.egg-info"))
    dist = tmp_path / "dist"
    proc = subprocess.run([sys.executable, "-m", "build", "--wheel", "-o", str(dist), str(src)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (wheel,) = glob.glob(str(dist / "*.whl"))
    repaired = tmp_path / "repaired"
    proc = subprocess.run([sys.executable, "-m", "auditwheel", "repair", wheel, "-w",
                           str(repaired)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (fixed,) = glob.glob(str(repaired / "*.whl"))
    assert "manylinux" in os.path.basename(fixed)

    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    py = str(env_dir / "bin" / "python")
    proc = subprocess.run([py, "-m", "pip", "install", "-q", "--no-index", fixed],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    proc = subprocess.run([py, "-c", SMOKE], capture_output=True, text=True, timeout=60,
                          cwd=tmp_path)
    assert proc.returncode == 0 and "wheel ok" in proc.stdout, proc.stdout + proc.stderr
    demo = env_dir / "bin" / "scardio"
    if demo.exists():
        proc = subprocess.run([str(demo), "demo"], capture_output=True, text=True, timeout=120,
                              cwd=tmp_path)
        assert proc.returncode == 0, proc.stdout + proc.stderr
