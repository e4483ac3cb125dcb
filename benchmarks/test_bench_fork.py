"""The synchronous-call floor with the fork check: ``Device.ioctl(GET_STATE)``
on the simulated reader, which checks the device's fork generation (the
core's ``scio_fork_generation``, bumped by a pthread_atfork child handler)
on every call.

The check must cost nothing measurable against the build it replaced (a
module variable bumped by ``os.register_at_fork``).  Two builds cannot
share one interpreter, so each path is a worker process timing its own
loop: this build, and, when ``SCARDIO_BENCH_BASELINE_PYTHON`` names the
interpreter of a venv holding another build (the one before the change),
that one too; both pinned to the same CPU and interleaved by the harness.
Without a baseline only this build's floor is recorded.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import harness

ROUNDS = int(os.environ.get("SCARDIO_BENCH_FORK_ROUNDS", "31"))
COUNT = int(os.environ.get("SCARDIO_BENCH_FORK_COUNT", "20000"))
# Fail only far above parity: the shared machine is noisy.
GUARD = 1.25

WORKER = r"""
import json, sys, time
import scardio.sim
from scardio.constants import IOCTL
dev = scardio.sim.open_device(int(sys.argv[1]))
ioctl, code, clock = dev.ioctl, IOCTL.GET_STATE, time.perf_counter_ns
print(json.dumps({"ready": True}), flush=True)
for line in sys.stdin:
    n = int(line)
    t0 = clock()
    for _ in range(n):
        ioctl(code, b"", 4)
    print(json.dumps({"ns": clock() - t0}), flush=True)
dev.close()
"""


class WorkerPath(harness.Path):
    """GET_STATE loops timed in a worker process running `python`."""

    def __init__(self, name: str, python: str, lun: int) -> None:
        self.name = name
        self.proc = subprocess.Popen([python, "-c", WORKER, str(lun)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, cwd="/")
        self._read()

    def _read(self) -> dict:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.name}: the worker exited ({self.proc.wait()})")
        return json.loads(line)  # type: ignore[no-any-return]

    def run(self, op: str, count: int) -> int:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{count}\n")
        self.proc.stdin.flush()
        return int(self._read()["ns"])

    def close(self) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.close()  # ends the worker's loop: it closes its device
            self.proc.wait(5)
        except (OSError, subprocess.TimeoutExpired):
            pass
        harness.stop_process(self.proc)


def test_fork_check_keeps_the_sync_floor() -> None:
    baseline = os.environ.get("SCARDIO_BENCH_BASELINE_PYTHON")
    paths = [WorkerPath("this build", sys.executable, 0x7F40)]
    try:
        if baseline:
            paths.append(WorkerPath("baseline build", baseline, 0x7F41))
        cpus = harness.allowed_cpus()[:1]
        for p in paths:
            harness.pin(p.proc.pid, cpus)
        per_call = harness.interleave(paths, "get_state", ROUNDS, COUNT)
    finally:
        for p in paths:
            p.close()
    medians = {name: harness.median(xs) for name, xs in per_call.items()}
    harness.record("fork", "get_state_ns", {n: harness.summary(xs) for n, xs in per_call.items()})
    harness.record_samples("Device.ioctl GET_STATE, fork check (ns/call)", "ns", per_call)
    if not baseline:
        harness.record("fork", "note", "no SCARDIO_BENCH_BASELINE_PYTHON: this build only")
        return
    ratio = medians["this build"] / medians["baseline build"]
    harness.record("fork", "ratio", ratio)
    print(f"GET_STATE ns/call medians {medians}; this/baseline {ratio:.3f}")
    assert ratio < GUARD, medians
