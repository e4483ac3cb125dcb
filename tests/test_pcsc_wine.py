"""The PC/SC backend's Windows build under Wine: winscard.dll is loaded from
System32 and all the entry points the backend uses resolve (a missing one
would be ENTRYPOINT_NOT_FOUND, no library DLL_NOT_FOUND).  Wine 8's
winscard.dll is a stub whose SCardEstablishContext fails with
SCARD_F_INTERNAL_ERROR, so that is as far as the Windows path runs here."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NATIVE = ROOT / "native"
CC = "x86_64-w64-mingw32-gcc"

pytestmark = pytest.mark.wine


def _tool(*candidates: str) -> str:
    for c in candidates:
        path = c if os.path.isabs(c) else shutil.which(c)
        if path and os.access(path, os.X_OK):
            return path
    return ""


def test_winscard_loads_and_resolves_under_wine() -> None:
    wine = _tool("/usr/lib/wine/wine64", "wine64")
    server = _tool("/usr/lib/wine/wineserver64", "wineserver64", "wineserver")
    if not (shutil.which(CC) and wine and server):
        pytest.skip("needs mingw-w64 and wine64")
    if not (NATIVE / "pcsc" / "tests" / "wine_probe.c").exists():
        pytest.skip("needs the source tree (native/)")
    with tempfile.TemporaryDirectory(prefix="scardio-pcsc-wine-") as work:
        exe = Path(work) / "probe.exe"
        sources = [str(NATIVE / "pcsc" / "tests" / "wine_probe.c"),
                   str(NATIVE / "pcsc" / "pcsc_backend.c"),
                   *map(str, sorted((NATIVE / "core").glob("*.c")))]
        subprocess.run([CC, "-std=c11", "-Wall", "-Werror", f"-I{NATIVE}", *sources,
                        "-o", str(exe)], check=True, capture_output=True, timeout=300)
        env = dict(os.environ, WINEPREFIX=str(Path(work) / "prefix"), WINEDEBUG="-all",
                   WINEARCH="win64", WINEDLLOVERRIDES="mscoree,mshtml=;winedbg.exe=d")
        env.pop("DISPLAY", None)
        env.pop("WAYLAND_DISPLAY", None)
        try:
            proc = subprocess.run([wine, str(exe)], capture_output=True, text=True,
                                  timeout=300, env=env)
        finally:
            # Only this prefix's server.
            subprocess.run([server, "-k"], env=env, capture_output=True, timeout=30)
            subprocess.run([server, "-w"], env=env, capture_output=True, timeout=30)
    lines = dict(line.split(" ", 1) for line in proc.stdout.splitlines() if " " in line)
    assert set(lines) >= {"list", "open"}, proc.stdout + proc.stderr
    for what in ("list", "open"):
        status = lines[what].split(" ", 1)[0]
        assert status not in ("0xC0000135", "0xC0000139"), lines[what]  # loaded, resolved
        assert "SCardEstablishContext" in lines[what], lines[what]
