"""Run the benchmarks with pytest-benchmark enabled, then render the results.

    python benchmarks/run.py                 # full run: results, docs/benchmarks.md, plot
    python benchmarks/run.py --quick --out .ci/artifacts   # the quick set (CI)
    python benchmarks/run.py -- -k sim       # extra pytest arguments after --

Writes into --out (default benchmarks/results):

    latest.json        (full run; results.json with --quick) the results
                       document: harness figures, targets, pytest-benchmark stats
    benchmarks.json    pytest-benchmark's --benchmark-json (same document
                       under its "scardio" key; --benchmark-compare reads it)

then, for a full run, renders docs/benchmarks.md's results section and the
plot from that one run (--no-report skips it; a quick run renders into
<out>/benchmarks.md instead, leaving docs/ alone).  pytest runs in a private
mount and network namespace when this is root and unshare works, so that the
pcscd parts can run (they are skipped outside one).  Exit status: pytest's.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
from typing import List, Optional, Sequence

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests"))

#: pytest-benchmark's time budget per benchmark in the quick set (seconds).
QUICK_MAX_TIME = "0.2"
#: Shortest round (seconds): sub-microsecond calls then run many iterations
#: per round, so that the timer's own cost does not count as theirs.
MIN_TIME = "0.0001"


def pytest_argv(quick: bool, out: str, extra: Sequence[str] = ()) -> List[str]:
    """The pytest command line of a benchmark run."""
    argv = [sys.executable, "-m", "pytest", os.path.join(HERE), "-p", "no:cacheprovider",
            "--benchmark-enable", f"--benchmark-json={os.path.join(out, 'benchmarks.json')}",
            f"--benchmark-min-time={MIN_TIME}", "--benchmark-group-by=group",
            "--benchmark-sort=name"]
    if quick:
        argv += ["-m", "quick", f"--benchmark-max-time={QUICK_MAX_TIME}", "-q"]
    else:
        argv += ["-s"]
    return argv + list(extra)


def results_path(quick: bool, out: str) -> str:
    return os.path.join(out, "results.json" if quick else "latest.json")


def namespace_prefix() -> Optional[List[str]]:
    """`unshare` argv that runs a command in a private mount and network
    namespace with loopback up and a private /run/pcscd, or None."""
    try:
        import pcscd_namespace
    except ImportError:
        return None
    if pcscd_namespace.unavailable() is not None:
        return None
    return ["unshare", "-mn", "--propagation", "private", "sh", "-c",
            pcscd_namespace.SETUP + ' && exec "$@"', "sh"]


def main(argv: Sequence[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="the quick set (-m quick)")
    ap.add_argument("--out", default=os.path.join(HERE, "results"),
                    help="directory for the JSON files (default benchmarks/results)")
    ap.add_argument("--no-report", action="store_true",
                    help="do not render docs/benchmarks.md and the plot")
    ap.add_argument("--no-namespace", action="store_true",
                    help="run pytest here, not in a private namespace (pcscd parts skip)")
    ap.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --)")
    args = ap.parse_args(argv)
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    env = dict(os.environ, SCARDIO_BENCH_RESULTS=results_path(args.quick, out))
    cmd = pytest_argv(args.quick, out, args.pytest_args)
    prefix = None if args.no_namespace else namespace_prefix()
    if prefix is None:
        print("benchmarks: not in a private namespace (needs root and unshare): "
              "the pcscd parts will be skipped", file=sys.stderr)
    else:
        cmd = prefix + cmd
    print("+ " + shlex.join(cmd), flush=True)
    rc = subprocess.call(cmd, cwd=ROOT, env=env)
    doc = env["SCARDIO_BENCH_RESULTS"]
    print(f"benchmark results: {doc}")
    print(f"pytest-benchmark JSON: {os.path.join(out, 'benchmarks.json')}")
    if args.no_report or not os.path.exists(doc):
        return rc
    import report
    if args.quick:
        report.main(["report.py", doc, os.path.join(out, "benchmarks.md")])
    else:
        report.main(["report.py", doc])
        import plot
        plot.main(["plot.py", doc])  # says so when matplotlib is missing
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
