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
    """The machine the figures were measured on.  ``name`` is
    $SCARDIO_BENCH_MACHINE when set (e.g. "shared 2-vCPU AMD EPYC VM"),
    else built from the CPU model, the usable CPUs and whether a hypervisor
    is present."""
    model, hypervisor = "unknown", False
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and model == "unknown":
                    model = line.split(":", 1)[1].strip()
                elif line.startswith("flags") and " hypervisor" in line:
                    hypervisor = True
    except OSError:
        model = platform.processor() or "unknown"
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    name = os.environ.get("SCARDIO_BENCH_MACHINE") or (
        f"{usable}-CPU {model}{' VM' if hypervisor else ''}")
    return {"name": name, "nproc": usable, "cpu_count": os.cpu_count(), "cpu_model": model,
            "hypervisor": hypervisor, "python": platform.python_version(),
            "implementation": platform.python_implementation(),
            "kernel": platform.release(), "system": platform.system(),
            "machine": platform.machine()}


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


# ---- CPU placement --------------------------------------------------------------

def allowed_cpus(pid: int = 0) -> List[int]:
    try:
        return sorted(os.sched_getaffinity(pid))
    except (AttributeError, OSError):
        return []


def pin(pid: int, cpus: Iterable[int]) -> bool:
    """Pin every thread of process `pid` (0: this one) to `cpus`.

    sched_setaffinity() acts on one thread, and threads created later
    inherit the mask of the thread that creates them, so each existing
    task of the process is pinned (what ``taskset -a -p`` does)."""
    cpus = set(cpus)
    if not hasattr(os, "sched_setaffinity") or not cpus:
        return False
    pid = pid or os.getpid()
    try:
        tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        tids = [pid]
    ok = False
    for tid in tids:
        try:
            os.sched_setaffinity(tid, cpus)
            ok = True
        except OSError:  # the thread exited meanwhile
            pass
    return ok


class Placement:
    """Where the processes of a comparison run, the same for every path.

    On a shared VM a cross-process round trip costs several times more when
    the two processes sit on different CPUs (a wake-up IPI, a cold cache)
    than on one CPU, and the scheduler's choice differs from path to path
    and from run to run.  Pinning every process of every path to the same
    CPU set makes the paths comparable.  Modes (SCARDIO_BENCH_PLACEMENT):

    ``same``  (default) callers and card processes on one CPU;
    ``split`` callers on one CPU, card processes on another;
    ``none``  the scheduler decides (what the first figures used).

    Use as a context manager around the setup and the runs: this process
    (all its threads) is pinned on entry and restored on exit; child
    processes started inside inherit the caller mask; call ``card(pid)``
    for each card process and ``caller(pid)`` for other processes that were
    started before (pcscd)."""

    def __init__(self, mode: Optional[str] = None):
        self.mode = (mode or os.environ.get("SCARDIO_BENCH_PLACEMENT") or "same").lower()
        if self.mode not in ("same", "split", "none"):
            raise ValueError(f"SCARDIO_BENCH_PLACEMENT must be same, split or none, "
                             f"not {self.mode!r}")
        self.saved = allowed_cpus()
        self.restore: List[int] = []  # other processes to give back their mask
        cpus = self.saved
        if self.mode == "none" or not cpus:
            self.caller_cpus, self.card_cpus = cpus, cpus
        elif self.mode == "split" and len(cpus) >= 2:
            self.caller_cpus, self.card_cpus = [cpus[-1]], [cpus[-2]]
        else:
            if self.mode == "split":
                self.mode = "same"  # one usable CPU: nothing to split
            self.caller_cpus = self.card_cpus = [cpus[-1]]

    @property
    def pinned(self) -> bool:
        return self.mode != "none" and bool(self.saved)

    def __enter__(self) -> "Placement":
        if self.pinned:
            pin(0, self.caller_cpus)
        return self

    def caller(self, pid: int) -> None:
        if self.pinned and pin(pid, self.caller_cpus):
            self.restore.append(pid)

    def card(self, pid: int) -> None:
        if self.pinned:
            pin(pid, self.card_cpus)

    def __exit__(self, *exc: object) -> None:
        if self.pinned:
            pin(0, self.saved)
            for pid in self.restore:
                pin(pid, self.saved)

    def describe(self) -> dict:
        return {"mode": self.mode, "caller_cpus": self.caller_cpus,
                "card_cpus": self.card_cpus, "usable_cpus": self.saved}


# ---- results -------------------------------------------------------------------
#
# One results document per benchmark run (written when pytest-benchmark is
# enabled; see conftest.py):
#
#   results   section -> key -> value      record(): the interleaved figures
#   targets   name -> {target, measured, limit, unit, better, verdict, note}
#   tables    title -> {columns, rows, note}  record_table(): rendered as is
#   samples   title -> {unit, groups}      record_samples(): plotted as is
#   pytest_benchmark   the pytest-benchmark statistics of the same run

_results: dict = {}
_targets: dict = {}
_tables: dict = {}
_samples: dict = {}
_results_lock = threading.Lock()


def record(section: str, key: str, value) -> None:
    with _results_lock:
        _results.setdefault(section, {})[key] = value


def results() -> dict:
    return _results


def verdict(measured: Optional[float], limit: Optional[float], better: str = "lower") -> str:
    """"met" / "not met" of `measured` against `limit` ("lower": measured
    must be <= limit; "higher": >= limit); "not measured" without a figure."""
    if better not in ("lower", "higher"):
        raise ValueError(f"better must be 'lower' or 'higher', not {better!r}")
    if measured is None or measured != measured or limit is None:
        return "not measured"
    ok = measured <= limit if better == "lower" else measured >= limit
    return "met" if ok else "not met"


def record_target(name: str, measured: Optional[float], limit: float, unit: str,
                  better: str = "lower", target: Optional[int] = None, note: str = "") -> str:
    """Register one figure against an issue target; docs/benchmarks.md's
    verdict table (benchmarks/report.py) lists every registered one.

    name      what was measured, e.g. "Card.transmit 5 B ÷ Device.ioctl (sim)"
    measured  the figure (a median or a ratio of medians); None if unmeasured
    limit     the target's bound, in the same unit
    unit      "×", "µs", "ms", "%" ...
    better    "lower" (measured <= limit meets it) or "higher" (>=)
    target    the issue-12 target number (1-8) it belongs to, if any
    note      one short line: the floor that stops it, the setup ...

    Returns the verdict ("met", "not met" or "not measured")."""
    v = verdict(measured, limit, better)
    with _results_lock:
        _targets[name] = {"target": target, "measured": measured, "limit": limit,
                          "unit": unit, "better": better, "verdict": v, "note": note}
    return v


def record_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[object]],
                 note: str = "") -> None:
    """A results table rendered as is (cells are str()ed) in
    docs/benchmarks.md, after the built-in ones, in the order recorded."""
    cols = [str(c) for c in columns]
    body = [[str(c) for c in r] for r in rows]
    for r in body:
        if len(r) != len(cols):
            raise ValueError(f"{title}: row {r} has {len(r)} cells, not {len(cols)}")
    with _results_lock:
        _tables[title] = {"columns": cols, "rows": body, "note": note}


def record_samples(title: str, unit: str, groups: Dict[str, Sequence[float]]) -> None:
    """Samples (one list per path) plotted as one panel by benchmarks/plot.py."""
    with _results_lock:
        _samples[title] = {"unit": unit, "groups": {k: [float(x) for x in v]
                                                      for k, v in groups.items()}}


def snapshot(pytest_benchmark: Optional[list] = None) -> dict:
    """The results document (see above) of this run so far."""
    with _results_lock:
        data = {"machine": machine(), "time": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                "results": dict(_results),
                "targets": dict(_targets), "tables": dict(_tables),
                "samples": dict(_samples)}
    if pytest_benchmark is not None:
        data["pytest_benchmark"] = pytest_benchmark
    return data


def has_results() -> bool:
    return bool(_results or _targets or _tables or _samples)


def write_results(path: Optional[str] = None, pytest_benchmark: Optional[list] = None
                  ) -> Optional[str]:
    if not has_results() and not pytest_benchmark:
        return None
    path = path or os.environ.get("SCARDIO_BENCH_RESULTS") or DEFAULT_RESULTS
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(snapshot(pytest_benchmark), f, indent=1)  # in the order recorded
    return path
