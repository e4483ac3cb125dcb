"""Compile a benchmark's C source with gcc, once per process, into a
temporary directory that ``cleanup_all()`` removes at the session's end."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
from typing import List, Optional, Sequence

_built: List["CProgram"] = []


def have_gcc() -> bool:
    return shutil.which("gcc") is not None


class CProgram:
    """One C source; ``path()`` builds it on first use and returns the output."""

    def __init__(self, name: str, source: str, flags: Sequence[str], libs: Sequence[str] = (),
                 output: Optional[str] = None):
        self.name = name
        self.source = source
        self.flags = flags
        self.libs = libs
        self.output = output or name
        self._lock = threading.Lock()
        self._path: Optional[str] = None
        self._tmpdir: Optional[str] = None

    def path(self) -> str:
        with self._lock:
            if self._path:
                return self._path
            if not have_gcc():
                raise OSError(f"gcc is needed to build {self.name}")
            self._tmpdir = tempfile.mkdtemp(prefix=f"scardio-{self.name}-")
            src = os.path.join(self._tmpdir, f"{self.name}.c")
            out = os.path.join(self._tmpdir, self.output)
            with open(src, "w") as f:
                f.write(self.source)
            subprocess.run(["gcc", "-O2", *self.flags, "-o", out, src, *self.libs],
                           check=True, timeout=60, capture_output=True)
            self._path = out
            _built.append(self)
            return out

    def cleanup(self) -> None:
        with self._lock:
            if self._tmpdir:
                shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._path = self._tmpdir = None


def cleanup_all() -> None:
    while _built:
        _built.pop().cleanup()
