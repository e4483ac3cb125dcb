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
pcscd parts can run (they are skipped outside one).  Exit status: pytest's;
with --rerun-failures, that of one rerun of the tests that failed (the
regression guard is the only test that asserts on speed, with wide margins:
a real regression fails twice, a burst of load on a shared machine rarely).
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import xml.etree.ElementTree as ET
from typing import List, Optional, Sequence

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests"))

#: pytest-benchmark's time budget per benchmark in the quick set (seconds).
QUICK_MAX_TIME = "0.2"
#: Shortest round (seconds): sub-microsecond calls then run many iterations
#: per round, so that the timer's own cost does not count as theirs.
MIN_TIME = "0.0001"


def pytest_argv(quick: bool, out: str, extra: Sequence[str] = (),
                tests: Sequence[str] = (HERE,)) -> List[str]:
    """The pytest command line of a benchmark run of `tests` (node ids or
    paths; default: the benchmarks directory)."""
    argv = [sys.executable, "-m", "pytest", *tests, "-p", "no:cacheprovider",
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


def failed_tests(junit_xml: str) -> List[str]:
    """Node ids of the tests that failed or errored, from pytest's JUnit XML."""
    try:
        root = ET.parse(junit_xml).getroot()
    except (OSError, ET.ParseError):
        return []
    ids = []
    for case in root.iter("testcase"):
        if case.find("failure") is None and case.find("error") is None:
            continue
        module = case.get("classname", "").replace(".", "/")
        if module.startswith("benchmarks/"):
            module = module[len("benchmarks/"):]
        ids.append(f"{os.path.join(HERE, module)}.py::{case.get('name')}")
    return ids


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
    ap.add_argument("--rerun-failures", action="store_true",
                    help="run the tests that failed once more; the rerun's status counts")
    ap.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --)")
    args = ap.parse_args(argv)
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    env = dict(os.environ, SCARDIO_BENCH_RESULTS=results_path(args.quick, out))
    junit = os.path.join(out, "junit.xml")
    cmd = pytest_argv(args.quick, out, list(args.pytest_args) + [f"--junitxml={junit}"])
    prefix = None if args.no_namespace else namespace_prefix()
    if prefix is None:
        print("benchmarks: not in a private namespace (needs root and unshare): "
              "the pcscd parts will be skipped", file=sys.stderr)
        prefix = []
    print("+ " + shlex.join(prefix + cmd), flush=True)
    rc = subprocess.call(prefix + cmd, cwd=ROOT, env=env)
    failed = failed_tests(junit) if rc and args.rerun_failures else []
    if failed:
        # The rerun writes its own files: the artifacts stay those of the run.
        print(f"benchmarks: {len(failed)} test(s) failed; running them once more:", flush=True)
        retry = pytest_argv(args.quick, os.path.join(out, "rerun"), args.pytest_args, failed)
        os.makedirs(os.path.join(out, "rerun"), exist_ok=True)
        renv = dict(env, SCARDIO_BENCH_RESULTS=os.path.join(out, "rerun", "results.json"))
        print("+ " + shlex.join(prefix + retry), flush=True)
        rc = subprocess.call(prefix + retry, cwd=ROOT, env=renv)
        print(f"benchmarks: the rerun {'passed' if rc == 0 else 'failed too'}")
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
