"""The PC/SC reader-list watch (``_core.PcscReaderWatch``) under fork()
and Ctrl-C, against a real pcscd (run by tests/test_reliability_pcsc_watch.py
inside a private mount and network namespace, never on its own).  Each
scenario reports a JSON-able dict or its failure; the report is the last
line of standard output.

usage: pcsc_watch_scenarios.py WORKDIR SIM_LIBRARY
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from scardio import errors, pcsc  # noqa: E402
from scardio._core import PcscReaderWatch  # noqa: E402

from pcsc_scenarios import describe, error_of, wait_until  # noqa: E402
from pcscd_namespace import Pcscd, run_scenarios  # noqa: E402

SIM_NAME = "scardio sim"

# A process blocked in wait(None), for the SIGINT scenario.
WAITER = """
import sys
from scardio._core import PcscReaderWatch
w = PcscReaderWatch()
print("WAITING", flush=True)
try:
    w.wait(None)
except KeyboardInterrupt:
    print("INTERRUPTED", flush=True)
    sys.exit(3)
print("RETURNED", flush=True)
"""


def readers() -> list[str]:
    try:
        return pcsc.list_readers()
    except errors.ScardioError:
        return []


class Scenarios:
    def __init__(self, work: Path, sim: str) -> None:
        conf = work / "reader.conf.d"
        conf.mkdir()
        (conf / "sim").write_text(f'FRIENDLYNAME "{SIM_NAME}"\nDEVICENAME sim:0\n'
                                  f"LIBPATH {sim}\nCHANNELID 0\n")
        self.pcscd = Pcscd(conf, work / "pcscd.log")
        if not wait_until(readers, 20):
            raise AssertionError("pcscd did not list the simulated reader")

    def fork(self) -> dict[str, Any]:
        """A watch inherited through fork(): the child's calls refuse, its
        close sends nothing through the parent's context, whose waits go on."""
        out: dict[str, Any] = {}
        w = PcscReaderWatch()
        known = len(readers())
        out["parent_before"] = w.wait(0.2, known)
        pid = os.fork()
        if pid == 0:
            code = 0
            for n, call in enumerate([lambda: w.wait(0, known), w.wake]):
                try:
                    call()
                    code = code or 10 + n  # worked: the parent's context was used
                except errors.InvalidStateError:
                    pass
                except BaseException:
                    code = code or 20 + n
            w.close()
            del w
            os._exit(code)
        _, status = os.waitpid(pid, 0)
        out["child_exit"] = os.waitstatus_to_exitcode(status)
        t = time.monotonic()
        out["parent_after"] = describe(error_of(lambda: out.update(got=w.wait(0.5, known))))
        out["parent_after_got"] = out.pop("got", "raised")
        out["parent_after_s"] = time.monotonic() - t
        w.close()
        return out

    def sigint(self) -> dict[str, Any]:
        """wait(None) in another process, sent SIGINT: KeyboardInterrupt
        within a slice of the wait."""
        proc = subprocess.Popen([sys.executable, "-c", WAITER], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        out: dict[str, Any] = {}
        try:
            assert proc.stdout is not None
            out["ready"] = proc.stdout.readline().strip()
            time.sleep(0.5)
            t = time.monotonic()
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(6)
                out["exit"] = proc.returncode
            except subprocess.TimeoutExpired:
                out["exit"] = "hung"
            out["seconds"] = time.monotonic() - t
        finally:
            if proc.poll() is None:
                proc.kill()
            rest, err = proc.communicate()
        out["output"] = rest.strip()
        out["stderr_tail"] = err[-500:]
        return out

    def close(self) -> None:
        self.pcscd.stop()


def main() -> None:
    work, sim = Path(sys.argv[1]), sys.argv[2]
    scenarios = Scenarios(work, sim)
    try:
        report = run_scenarios(scenarios, ["fork", "sigint"])
    finally:
        scenarios.close()
    print(json.dumps(report))


if __name__ == "__main__":
    main()
