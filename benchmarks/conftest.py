"""Benchmarks of scardio against the C floor, a ctypes binding and
pcscd + pyscard.  See docs/benchmarks.md ("How to run").

Every scardio path is timed twice in one run:

- by pytest-benchmark's ``benchmark`` fixture (the usual table,
  ``--benchmark-json``, ``--benchmark-compare``), grouped per operation;
- by the interleaved ratio harness (harness.py), which runs all paths of an
  operation, scardio's and the others', side by side in rotating rounds:
  the ratios and medians that docs/benchmarks.md quotes.

pyproject.toml's addopts disable pytest-benchmark (``--benchmark-disable``)
so that the test suite times nothing; a benchmark run enables it:

    python benchmarks/run.py                  # full run -> results, docs, plot
    python benchmarks/run.py --quick          # the quick set (CI), a few minutes
    python -m pytest benchmarks --benchmark-enable -p no:cacheprovider   # by hand

``benchmarks/run.py`` runs pytest in a private mount and network namespace
when it can (root, unshare): the pcscd parts need one (pcscd has one fixed
socket) and are skipped outside it.  Asking for pytest-benchmark output
(``--benchmark-json`` / ``-compare`` / ``-save`` / ``-autosave`` /
``-histogram`` / ``-only``) without ``--benchmark-enable`` is a usage error.
The ``quick`` marker selects the quick set (test_guard.py and one operation
per file).

Results.  With pytest-benchmark enabled, the run writes one results document
to $SCARDIO_BENCH_RESULTS (default benchmarks/results/latest.json) holding the
harness figures, the registered targets and tables and pytest-benchmark's
statistics; a ``--benchmark-json`` file gets the same document under its
"scardio" key.  ``python benchmarks/report.py FILE`` renders either into
docs/benchmarks.md, ``python benchmarks/plot.py FILE`` the plot.

A benchmark file registers what it measured through harness, without
report.py knowing about it:

    harness.record(section, key, value)        # raw figures (JSON-able)
    harness.record_target(name, measured, limit, unit, better="lower",
                          target=None, note="")   # one verdict-table row
    harness.record_table(title, columns, rows, note="")   # a results table
    harness.record_samples(title, unit, {path: [samples]}) # a plot panel

``record_target`` computes the verdict ("met" when measured <= limit, or
>= with ``better="higher"``; "not measured" when measured is None);
``target`` is the issue-12 target number (1-8) the row belongs to.
``harness.Placement`` pins the processes of a comparison to the same CPUs
(test_bench_vpcd.py uses it; SCARDIO_BENCH_PLACEMENT=same|split|none).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import harness  # noqa: E402

harness.ensure_paths()

from bench_common import (SERVED_NOSPIN_PCSCD_NAME, SERVED_PCSCD_NAME, SIM_PCSCD_NAME,   # noqa: E402
                          VPCD_PCSCD_NAME, free_port)

# pytest-benchmark options that mean nothing while it is disabled.
_OUTPUT_OPTIONS = ("benchmark_json", "benchmark_compare", "benchmark_save",
                   "benchmark_autosave", "benchmark_histogram", "benchmark_only")


def benchmarks_enabled(config) -> bool:
    try:
        return bool(config.getoption("benchmark_enable")
                    or not config.getoption("benchmark_disable"))
    except ValueError:  # pytest-benchmark is not installed
        return False


def pytest_configure(config):
    config.addinivalue_line("markers", "quick: the quick benchmark set (CI): test_guard.py "
                            "and one operation per benchmark file")
    config.addinivalue_line("markers", "pcscd: needs pcscd and pyscard")
    config.addinivalue_line("markers", "vpcd: needs Debian's vsmartcard-vpcd driver")
    if not benchmarks_enabled(config):
        asked = [o for o in _OUTPUT_OPTIONS if _getoption(config, o)]
        if asked:
            _discard_empty_json(_getoption(config, "benchmark_json"))
            flags = ", ".join("--" + o.replace("_", "-") for o in asked)
            raise pytest.UsageError(
                f"{flags} needs --benchmark-enable: pyproject.toml's addopts disable "
                "pytest-benchmark so that the test suite times nothing")


def _discard_empty_json(output) -> None:
    # Depending on the pytest-benchmark version, --benchmark-json is a path
    # or a file argparse already created: a usage error must not leave an
    # empty file behind either way.
    if output is None:
        return
    if hasattr(output, "close"):
        name = output.name
        output.close()
    else:
        name = os.fspath(output)
    try:
        if os.path.getsize(name) == 0:
            os.unlink(name)
    except OSError:
        pass


def _getoption(config, name):
    try:
        return config.getoption(name)
    except ValueError:
        return None


def _pytest_benchmark_stats(config) -> list:
    """pytest-benchmark's statistics of this run (without the raw data)."""
    bs = getattr(config, "_benchmarksession", None)
    out = []
    for bench in getattr(bs, "benchmarks", None) or []:
        if not bench:  # disabled or failed: no stats
            continue
        d = bench.as_dict(include_data=False)
        out.append({"name": d.get("name"), "fullname": d.get("fullname"),
                    "group": d.get("group"), "extra_info": d.get("extra_info", {}),
                    "stats": {k: v for k, v in d.get("stats", {}).items()
                              if k in ("min", "max", "mean", "median", "stddev", "iqr",
                                       "rounds", "iterations", "ops")}})
    return out


def pytest_benchmark_update_json(config, benchmarks, output_json):
    # --benchmark-json files carry the harness figures too (report.py reads either).
    output_json["scardio"] = harness.snapshot(_pytest_benchmark_stats(config))


def pytest_sessionfinish(session, exitstatus):
    config = session.config
    if benchmarks_enabled(config):
        path = harness.write_results(pytest_benchmark=_pytest_benchmark_stats(config))
        if path:
            tr = config.pluginmanager.get_plugin("terminalreporter")
            if tr is not None:
                tr.write_line(f"benchmark results written to {path}")
    import ccompile
    ccompile.cleanup_all()


def private_namespace_reason():
    """Why pcscd must not be started from this process (None: it may).

    pcscd has one fixed socket (/run/pcscd/pcscd.comm), so it runs only in
    a mount and network namespace of its own, recognised by the private
    tmpfs on /run/pcscd that tests/pcscd_namespace.py's recipe mounts (and
    benchmarks/run.py uses)."""
    try:
        with open("/proc/self/mounts") as f:
            mounts = [line.split()[:2] for line in f]
    except OSError as exc:
        return f"cannot read /proc/self/mounts: {exc}"
    if ["scardio-pcscd", "/run/pcscd"] in mounts:
        return None
    return ("pcscd is started only in a private mount and network namespace: "
            "run the benchmarks with benchmarks/run.py")


@pytest.fixture(scope="session")
def pcscd_env():
    """One pcscd for the session with a private reader.conf: a simulated
    reader and (when installed) a vpcd reader on a private port.  Yields a
    dict with "pcscd", "vpcd_port" (None without vpcd) and "served_socket"
    (the socket of the reader named SERVED_PCSCD_NAME; + ".nospin": that of
    SERVED_NOSPIN_PCSCD_NAME)."""
    import pcsc_peer
    from scardio.sim import SIM_LIBRARY
    why = pcsc_peer.unavailable_reason() or private_namespace_reason()
    if why:
        pytest.skip(why)
    readers = [(SIM_PCSCD_NAME, SIM_LIBRARY, "/dev/null")]
    vport = None
    if os.path.exists(harness.VPCD_LIBRARY):
        vport = free_port()
        readers.append((VPCD_PCSCD_NAME, harness.VPCD_LIBRARY, f"/dev/null:{vport:#x}"))
    # a simulated reader whose card a `scardio card serve` at this path hosts
    # (test_bench_serve.py starts one; without it the reader stays empty)
    served_dir = tempfile.mkdtemp(prefix="scardio-bench-served-")
    served_socket = os.path.join(served_dir, "card.sock")
    readers.append((SERVED_PCSCD_NAME, SIM_LIBRARY, f"socket:{served_socket}"))
    # the same without the reader's brief spin for the reply (quoted: pcscd's
    # reader.conf takes '?' and '=' only inside quotes)
    readers.append((SERVED_NOSPIN_PCSCD_NAME, SIM_LIBRARY,
                    f'"socket:{served_socket}.nospin?spin=0"'))
    d = pcsc_peer.Pcscd(readers)
    try:
        yield {"pcscd": d, "vpcd_port": vport, "served_socket": served_socket}
    finally:
        d.close()
        shutil.rmtree(served_dir, ignore_errors=True)
