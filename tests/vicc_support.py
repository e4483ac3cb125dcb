"""Debian's real virtual smart card, vicc (package ``vsmartcard-vpicc``), as
a test and benchmark peer for the vpcd driver.

vicc is a Python 3 program (``/usr/bin/vicc``) over the ``virtualsmartcard``
package of ``python3-virtualsmartcard``, which Debian 12 installs outside
the interpreter's ``sys.path``.  It imports PyCrypto's ``Crypto`` name, which
Debian ships as pycryptodome's ``Cryptodome`` (``python3-pycryptodome``).
`command` returns a command line that runs vicc under the system Python with
both fixed: the package directory put on ``sys.path`` and ``Crypto``
aliased to ``Cryptodome`` when only the latter exists.

The card connects to the driver (vicc is the TCP client, as the stdlib test
card of tests/vpcd_card.py) and, like vpcd itself, does not set TCP_NODELAY
or TCP_QUICKACK: it is the card on which Nagle's algorithm shows.
"""

from __future__ import annotations

import os
import subprocess
from typing import List, Optional

VICC = "/usr/bin/vicc"
PYTHON = "/usr/bin/python3"
PACKAGE_DIRS = ("/usr/lib/python3/site-packages/virtualsmartcard",
                "/usr/lib/python3/dist-packages")

#: The card vicc emulates by default ("-t iso7816"): its ATR offers T=1.
ATR = bytes.fromhex("3B951381018073FF01000B")
#: SELECT the MF without response data: the cheapest APDU this card answers
#: (9000), so that the figure is the transport's.
SELECT_MF = bytes.fromhex("00A4000C023F00")
OK = b"\x90\x00"

# Run vicc's own entry point with the package directory and the Crypto alias.
_BOOT = """\
import importlib.util, runpy, sys
sys.path[:0] = [d for d in {dirs!r} if d not in sys.path]
if importlib.util.find_spec("Crypto") is None:
    import Cryptodome
    sys.modules["Crypto"] = Cryptodome
sys.argv = [{vicc!r}] + sys.argv[1:]
runpy.run_path({vicc!r}, run_name="__main__")
"""


def command(port: int, host: str = "127.0.0.1", card_type: str = "iso7816") -> List[str]:
    """The argv that runs vicc as a card connecting to vpcd at host:port."""
    boot = _BOOT.format(dirs=list(PACKAGE_DIRS), vicc=VICC)
    return [PYTHON, "-c", boot, "-t", card_type, "-H", host, "-P", str(port)]


def unavailable() -> Optional[str]:
    """Why vicc cannot run here (None: it can)."""
    if not os.path.exists(VICC):
        return f"vicc is not installed ({VICC}, Debian package vsmartcard-vpicc)"
    if not os.path.exists(PYTHON):
        return f"{PYTHON} is missing"
    probe = _BOOT.split("sys.argv")[0] + "import virtualsmartcard.VirtualSmartcard\n"
    probe = probe.format(dirs=list(PACKAGE_DIRS))
    try:
        r = subprocess.run([PYTHON, "-c", probe], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"vicc's modules cannot be imported: {exc}"
    if r.returncode != 0:
        tail = (r.stderr.strip().splitlines() or ["exit %d" % r.returncode])[-1]
        return ("vicc's modules cannot be imported (python3-virtualsmartcard, "
                f"python3-pycryptodome): {tail}")
    return None


class Vicc:
    """vicc in a child process, connecting to vpcd on `port` (it retries
    nothing: start it once the driver listens, or it exits)."""

    def __init__(self, port: int, host: str = "127.0.0.1") -> None:
        self.port = port
        self.proc: Optional[subprocess.Popen] = subprocess.Popen(
            command(port, host), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stderr_tail(self) -> str:
        if self.proc is None or self.proc.poll() is None or self.proc.stderr is None:
            return ""
        return self.proc.stderr.read().decode("utf-8", "replace")[-2000:]

    def close(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        if proc.stderr is not None:
            proc.stderr.close()

    def __enter__(self) -> "Vicc":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
