"""Timing helpers shared by the benchmarks: interleaved batches, medians,
the machine description, bounded subprocess I/O and the results file.

Every path under comparison implements ``run(op, count) -> total ns`` for a
batch of ``count`` calls.  ``interleave`` runs the paths in rounds, rotating
their order each round, so that slow drifts of a shared machine hit every
path alike; each round yields one per-call figure per path and the report
quotes the median over rounds.
"""

from __future__ import annotations

import json
import os
import platform
import select
import statistics
import subprocess
import sys
import threading
import time
from typing import Callable, Dict, Iterable, List, Optional, Sequence

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
TESTS_DIR = os.path.join(ROOT, "tests")
DEFAULT_RESULTS = os.path.join(HERE, "results", "latest.json")

PYSCARD_PYTHON = "/usr/bin/python3"
VPCD_LIBRARY = "/usr/lib/pcsc/drivers/serial/libifdvpcd.so"


def ensure_paths() -> None:
    for p in (HERE, TESTS_DIR):
        if p not in sys.path:
            sys.path.insert(0, p)


def median(xs: Iterable[float]) -> float:
    xs = list(xs)
    return statistics.median(xs) if xs else float("nan")


def percentile(xs: Sequence[float], q: float) -> float:
    xs = sorted(xs)
    if not xs:
        return float("nan")
    k = (len(xs) - 1) * q
    lo = int(k)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def summary(xs: Sequence[float]) -> dict:
    """Median and spread of samples (ns or ms, whatever the caller uses)."""
    return {"median": median(xs), "p10": percentile(xs, 0.1), "p90": percentile(xs, 0.9),
            "min": min(xs) if xs else float("nan"), "max": max(xs) if xs else float("nan"),
            "n": len(xs)}


class Path:
    """A way to run an operation; subclasses implement run()."""

    name = "path"

    def run(self, op: str, count: int) -> int:
        raise NotImplementedError

    def close(self) -> None:
        pass


class FuncPath(Path):
    """An in-process path: ops map to zero-argument callables."""

    def __init__(self, name: str, ops: Dict[str, Callable[[], object]]):
        self.name = name
        self.ops = ops

    def run(self, op: str, count: int) -> int:
        fn = self.ops[op]
        rng = range(count)
        clock = time.perf_counter_ns
        t0 = clock()
        for _ in rng:
            fn()
        return clock() - t0


def interleave(paths: Sequence[Path], op: str, rounds: int, count: int,
               counts: Optional[Dict[str, int]] = None, warmup: int = 1
               ) -> Dict[str, List[float]]:
    """Per-call ns of each path, one value per round, rounds interleaved.

    `counts` overrides the batch size per path name (slow paths, such as
    pcscd, run fewer calls per batch so that rounds take similar time)."""
    counts = counts or {}
    out: Dict[str, List[float]] = {p.name: [] for p in paths}
    for p in paths:
        for _ in range(warmup):
            p.run(op, counts.get(p.name, count))
    for r in range(rounds):
        k = r % len(paths)
        for p in list(paths[k:]) + list(paths[:k]):
            n = counts.get(p.name, count)
            out[p.name].append(p.run(op, n) / n)
    return out


def machine() -> dict:
    model = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        model = platform.processor() or "unknown"
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return {"nproc": usable, "cpu_count": os.cpu_count(), "cpu_model": model,
            "python": platform.python_version(), "kernel": platform.release(),
            "system": platform.system(), "machine": platform.machine()}


def thread_count() -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Threads:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return threading.active_count()


def cpu_seconds() -> float:
    """User + system CPU time of this process (all threads)."""
    t = os.times()
    return t.user + t.system


class LineReader:
    """Lines from a child's stdout with a timeout (its own buffer, so that
    select() never waits on data that was already read)."""

    def __init__(self, proc: subprocess.Popen):
        assert proc.stdout is not None
        self.proc = proc
        self.fd = proc.stdout.fileno()
        self.buf = b""

    def readline(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError(f"no answer from {self.proc.args[0]} within {timeout} s")
            ready, _, _ = select.select([self.fd], [], [], left)
            if ready:
                chunk = os.read(self.fd, 65536)
                if not chunk:
                    raise RuntimeError(f"{self.proc.args[0]} exited (code {self.proc.poll()})")
                self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line.decode("utf-8", "replace")


def quit_process(proc: subprocess.Popen, timeout: float = 5.0) -> None:
    """Ask a line-protocol child (C floor, pyscard worker) to quit, give it
    `timeout` seconds, then make sure it is gone and its pipes closed."""
    if proc.poll() is None:
        try:
            assert proc.stdin is not None
            proc.stdin.write(b"quit\n")
            proc.stdin.flush()
            proc.wait(timeout=timeout)
        except (OSError, subprocess.TimeoutExpired):
            pass
    stop_process(proc)


def stop_process(proc: Optional[subprocess.Popen], timeout: float = 5.0) -> None:
    """Terminate one child we started (by its own handle), then kill it."""
    if proc is None:
        return
    if proc.poll() is None:
        try:
            proc.terminate()
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout)
    for f in (proc.stdin, proc.stdout, proc.stderr):
        try:
            if f:
                f.close()
        except OSError:
            pass


# ---- results -------------------------------------------------------------------

_results: dict = {}
_results_lock = threading.Lock()


def record(section: str, key: str, value) -> None:
    with _results_lock:
        _results.setdefault(section, {})[key] = value


def results() -> dict:
    return _results


def write_results(path: Optional[str] = None) -> Optional[str]:
    if not _results:
        return None
    path = path or os.environ.get("SCARDIO_BENCH_RESULTS") or DEFAULT_RESULTS
    os.makedirs(os.path.dirname(path), exist_ok=True)
    data = {"machine": machine(), "time": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "results": _results}
    with open(path, "w") as f:
        json.dump(data, f, indent=1, sort_keys=True)
    return path
