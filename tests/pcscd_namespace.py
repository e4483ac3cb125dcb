"""pcscd in a private mount and network namespace, for the tests that run
it: ``unshare -mn``, loopback up and a tmpfs on /run/pcscd, so that neither
pcscd's fixed socket nor vpcd's fixed TCP ports can collide with another
pcscd, another test run or anything else on the machine."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
from typing import Any, Optional, Sequence

#: What a namespace child runs first: loopback and a private /run/pcscd.
SETUP = "ip link set lo up && mount -t tmpfs scardio-pcscd /run/pcscd"


def pcscd_path() -> Optional[str]:
    for cand in (shutil.which("pcscd"), "/usr/sbin/pcscd"):
        if cand and os.access(cand, os.X_OK):
            return cand
    return None


def unavailable() -> Optional[str]:
    """Why pcscd cannot run in a private namespace here (None: it can)."""
    if not sys.platform.startswith("linux"):
        return "pcscd in a private namespace needs Linux"
    if os.geteuid() != 0:
        return "needs root: unshare -mn and pcscd run as root"
    for tool in ("unshare", "ip"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    if pcscd_path() is None:
        return "pcscd is not installed"
    os.makedirs("/run/pcscd", exist_ok=True)
    try:
        r = subprocess.run(["unshare", "-mn", "--propagation", "private", "sh", "-c", SETUP],
                           capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"unshare -mn does not work here: {exc}"
    if r.returncode != 0:
        return f"unshare -mn does not work here: {r.stderr.strip() or f'exit {r.returncode}'}"
    return None


def run_child(argv: Sequence[str], timeout: float) -> dict[str, Any]:
    """Run *argv* inside a fresh private namespace and return the JSON
    document its last line of output holds.  Raises AssertionError with the
    child's output when it fails or hangs (then the whole session, the
    child's pcscd included, is killed)."""
    script = f"{SETUP} && exec {shlex.join(argv)}"
    proc = subprocess.Popen(["unshare", "-mn", "--propagation", "private", "sh", "-c", script],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # our own session: the child and its pcscd
        out, err = proc.communicate()
        raise AssertionError(f"the namespace child hung; stderr: {err[-2000:]}") from None
    assert proc.returncode == 0, f"the namespace child failed: {out[-1000:]} {err[-3000:]}"
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result
