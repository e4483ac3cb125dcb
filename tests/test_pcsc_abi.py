"""The PC/SC client types of native/pcsc/pcsc_abi.h on Linux, macOS and
Windows targets (clang ``--target=... -ffreestanding -fsyntax-only``),
against sizes stated here independently of the header: pcsc-lite's
``unsigned long`` DWORD and ``long`` handles, the macOS framework's 32-bit
types and packed SCARD_READERSTATE, Windows' 32-bit DWORD with
pointer-sized handles and a 36-byte ATR buffer."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CROSS = Path(__file__).resolve().parent / "cross"

pytestmark = pytest.mark.cross

# target: (DWORD, LONG, SCARDCONTEXT/SCARDHANDLE, sizeof READERSTATE, offset of rgbAtr)
TARGETS = {
    "x86_64-linux-gnu": ("unsigned long", "long", "long", 80, 40),
    "aarch64-linux-gnu": ("unsigned long", "long", "long", 80, 40),
    "i686-linux-gnu": ("unsigned long", "long", "long", 56, 20),
    "x86_64-apple-darwin": ("uint32_t", "int32_t", "int32_t", 61, 28),
    "aarch64-apple-darwin": ("uint32_t", "int32_t", "int32_t", 61, 28),
    "x86_64-pc-windows-msvc": ("unsigned long", "long", "uintptr_t", 64, 28),
    "i686-pc-windows-msvc": ("unsigned long", "long", "uintptr_t", 56, 20),
    "aarch64-pc-windows-msvc": ("unsigned long", "long", "uintptr_t", 64, 28),
}


def _cmd(target: str, dword: str, long_: str, handle: str, size: int, offset: int) -> list[str]:
    return ["clang", f"--target={target}", "-ffreestanding", "-fsyntax-only", "-std=c11",
            "-Wall", "-Wextra", "-Werror", f"-I{ROOT / 'native' / 'pcsc'}",
            f"-DEXPECT_DWORD={dword}", f"-DEXPECT_LONG={long_}", f"-DEXPECT_HANDLE={handle}",
            f"-DEXPECT_READERSTATE_SIZE={size}", f"-DEXPECT_ATR_OFFSET={offset}",
            str(CROSS / "pcsc_abi_sizes.c")]


def _need_tools() -> None:
    if shutil.which("clang") is None:
        pytest.skip("clang is not installed")
    if not (ROOT / "native" / "pcsc" / "pcsc_abi.h").exists():
        pytest.skip("needs the source tree (native/)")


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_pcsc_abi_types_per_target(target: str) -> None:
    _need_tools()
    proc = subprocess.run(_cmd(target, *TARGETS[target]), capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_pcsc_abi_check_fails_on_a_wrong_expectation() -> None:
    """The probe's assertions are evaluated: macOS with Linux's layout fails."""
    _need_tools()
    proc = subprocess.run(_cmd("aarch64-apple-darwin", *TARGETS["x86_64-linux-gnu"]),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "DWORD is not the expected type" in proc.stderr, proc.stderr


def test_pcsc_backend_compiles_on_the_macos_code_paths() -> None:
    """The backend's macOS path (the framework's path, SCardControl132, the
    32-bit types and packed structures) compiles, as native/tests/run.sh
    --macos-paths compiles the core: the host compiler with -D__APPLE__
    -U__linux__, as no macOS SDK is available here."""
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed")
    _need_tools()
    proc = subprocess.run(
        ["gcc", "-D__APPLE__", "-U__linux__", "-fsyntax-only", "-std=c11", "-Wall", "-Wextra",
         "-Werror", f"-I{ROOT / 'native'}", str(ROOT / "native" / "pcsc" / "pcsc_backend.c")],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
