"""pcscd started by the benchmark, and the pyscard worker that drives it.

pcscd 1.9.9 has one fixed socket (/run/pcscd/pcscd.comm), so one instance
runs at a time; the benchmark refuses to start its own while another pcscd
answers there (the figures would not be ours, and we must not disturb it).
"""

from __future__ import annotations

import atexit
import functools
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from typing import Optional

from harness import PYSCARD_PYTHON, HERE, LineReader, Path, quit_process, stop_process

PCSCD = shutil.which("pcscd") or "/usr/sbin/pcscd"
SOCKET = "/run/pcscd/pcscd.comm"
WORKER = os.path.join(HERE, "pyscard_worker.py")
SCARDIO_WORKER = os.path.join(HERE, "scardio_pcsc_worker.py")
# Set to the system interpreter's path to run pyscard there instead.
PYSCARD_PYTHON_ENV = "SCARDIO_BENCH_PYSCARD_PYTHON"

@functools.lru_cache(maxsize=None)
def _pyscard_path() -> Optional[str]:
    """A directory holding only a link to the system pyscard's package (to
    put on this interpreter's path), if the system interpreter has the
    benchmark's own Python version (then its extension module loads in
    this interpreter too); asked once per process."""
    try:
        out = subprocess.run(
            [PYSCARD_PYTHON, "-c", "import sys, smartcard; print(sys.version_info[:2]); "
             "print(smartcard.__path__[0])"],
            check=True, timeout=30, capture_output=True, text=True).stdout.split("\n")
    except (subprocess.SubprocessError, OSError):
        return None
    if out[0] != str(tuple(sys.version_info[:2])):
        return None
    path = tempfile.mkdtemp(prefix="scardio-pyscard-path-")
    atexit.register(shutil.rmtree, path, True)
    os.symlink(out[1], os.path.join(path, "smartcard"))
    return path


def pyscard_interpreter() -> "tuple[str, dict]":
    """How to start the pyscard worker: the interpreter and its environment.

    pyscard runs under the same interpreter as scardio (this benchmark's),
    so that the comparison is of the two libraries, not of two builds of
    Python (Debian's python3, with libpython linked into the executable,
    runs pyscard's Python layer faster than this machine's shared-libpython
    build).  The system pyscard is put on its path alone, through a
    directory holding a link to its package.  Without a same-version system
    pyscard, or with $SCARDIO_BENCH_PYSCARD_PYTHON set, the worker runs
    under that interpreter."""
    chosen = os.environ.get(PYSCARD_PYTHON_ENV)
    if chosen:
        return chosen, dict(os.environ)
    shim = _pyscard_path()
    if shim is None:
        return PYSCARD_PYTHON, dict(os.environ)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (shim, env.get("PYTHONPATH")) if p)
    return sys.executable, env


def import_pyscard():
    """The system pyscard's ``smartcard.scard``, imported into this process
    (through the same link directory as the worker's), or None where its
    extension module does not fit this interpreter.  For comparing the two
    clients inside one process: the process they run in costs both alike
    (docs/benchmarks.md)."""
    shim = _pyscard_path()
    if shim is None:
        return None
    if shim not in sys.path:
        sys.path.append(shim)  # holds only the link: shadows nothing
    try:
        from smartcard import scard
    except ImportError:
        return None
    return scard


def unavailable_reason() -> Optional[str]:
    """Why pcscd + pyscard cannot be benchmarked here, or None."""
    if not os.path.exists(PCSCD):
        return "pcscd is not installed"
    if not os.path.exists(PYSCARD_PYTHON):
        return f"{PYSCARD_PYTHON} is missing"
    if hasattr(os, "geteuid") and os.geteuid() != 0:
        return "pcscd must be started as root"
    try:
        subprocess.run([PYSCARD_PYTHON, "-c", "import smartcard.scard"], check=True,
                       timeout=30, capture_output=True)
    except (subprocess.SubprocessError, OSError):
        return f"pyscard is not importable by {PYSCARD_PYTHON}"
    if _socket_alive():
        return "another pcscd is running (its socket answers)"
    return None


def _socket_alive() -> bool:
    if not os.path.exists(SOCKET):
        return False
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(1.0)
    try:
        s.connect(SOCKET)
        return True
    except OSError:
        return False
    finally:
        s.close()


class Pcscd:
    """pcscd in the foreground with a private reader.conf.

    `readers` is a list of (friendly name, library, device name); each
    gets its own reader.conf entry (CHANNELID 0)."""

    def __init__(self, readers, timeout: float = 15.0):
        self.tmp = tempfile.mkdtemp(prefix="scardio-pcscd-")
        self.conf = os.path.join(self.tmp, "reader.conf")
        with open(self.conf, "w") as f:
            for friendly_name, library, device_name in readers:
                f.write(f'FRIENDLYNAME "{friendly_name}"\nDEVICENAME {device_name}\n'
                        f"LIBPATH {library}\nCHANNELID 0\n\n")
        self.log_path = os.path.join(self.tmp, "pcscd.log")
        self.proc: Optional[subprocess.Popen] = None
        os.makedirs("/run/pcscd", exist_ok=True)
        log = open(self.log_path, "w")
        try:
            self.proc = subprocess.Popen([PCSCD, "-f", "-c", self.conf], stdout=log,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        while not _socket_alive():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                msg = self.log_tail()
                self.close()
                raise RuntimeError(f"pcscd did not start: {msg}")
            time.sleep(0.05)

    def log_tail(self, n: int = 2000) -> str:
        try:
            with open(self.log_path) as f:
                return f.read()[-n:]
        except OSError:
            return ""

    def close(self) -> None:
        stop_process(self.proc, timeout=10)
        self.proc = None
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> "Pcscd":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _LineWorker(Path):
    """A child process that answers one JSON line per JSON command line and
    runs its timing loops itself."""

    what = "worker"

    def __init__(self, argv: list, env: dict, timeout: float = 30.0):
        self.timeout = timeout
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     env=env)
        self.reader = LineReader(self.proc)
        first = self._read()
        if not first.get("ready"):
            self.close()
            raise RuntimeError(f"{self.what} failed: {first}")

    def _read(self, timeout: Optional[float] = None) -> dict:
        msg = json.loads(self.reader.readline(timeout or self.timeout))
        if "error" in msg:
            raise RuntimeError(f"{self.what}: {msg['error']}")
        return msg

    def send(self, cmd: str, **kw) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(dict(cmd=cmd, **kw)) + "\n").encode())
        self.proc.stdin.flush()

    def call(self, cmd: str, read_timeout: Optional[float] = None, **kw) -> dict:
        self.send(cmd, **kw)
        return self._read(read_timeout)

    def run(self, op: str, count: int) -> int:
        return self.call("run", op=op, n=count)["ns"]

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.send("quit")
                self.proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                pass
        stop_process(self.proc)


class PyscardWorker(_LineWorker):
    """The pyscard worker process (pyscard_worker.py, started as
    pyscard_interpreter() says)."""

    name = "pcscd+pyscard"
    what = "pyscard worker"

    def __init__(self, timeout: float = 30.0):
        python, env = pyscard_interpreter()
        super().__init__([python, "-u", WORKER], env, timeout)


class ScardioWorker(_LineWorker):
    """scardio over PC/SC in a single-threaded process of its own
    (scardio_pcsc_worker.py, under this interpreter)."""

    name = "scardio worker"
    what = "scardio worker"

    def __init__(self, timeout: float = 30.0):
        super().__init__([sys.executable, "-u", SCARDIO_WORKER], dict(os.environ), timeout)


class CardProcess:
    """tests/vpcd_card.py's VirtualCard in a child process (card_proc.py)."""

    def __init__(self, port: int, timeout: float = 20.0):
        import sys
        self.port = port
        self.timeout = timeout
        self.proc = subprocess.Popen([sys.executable, os.path.join(HERE, "card_proc.py"),
                                      str(port)], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.reader = LineReader(self.proc)
        self._call(None)

    def _call(self, cmd: Optional[str]) -> dict:
        if cmd is not None:
            assert self.proc.stdin is not None
            self.proc.stdin.write(cmd.encode() + b"\n")
            self.proc.stdin.flush()
        msg = json.loads(self.reader.readline(self.timeout))
        if "error" in msg:
            raise RuntimeError(f"vpcd card on port {self.port}: {msg['error']}")
        return msg

    def insert(self) -> int:
        return self._call("insert")["t0"]

    def remove(self) -> int:
        return self._call("remove")["t0"]

    def close(self) -> None:
        quit_process(self.proc, timeout=10)
