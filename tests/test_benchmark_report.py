"""The benchmark pipeline (benchmarks/): what a benchmark file registers
through harness reaches the results document, and benchmarks/report.py
renders it (targets' verdicts, tables, pytest-benchmark's statistics) from a
results file or from pytest-benchmark's own JSON; one tiny real run proves
JSON -> report end to end.  Nothing here is timed."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks"


def fresh(name: str) -> ModuleType:
    """A private copy of benchmarks/<name>.py (harness keeps module state)."""
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", BENCH / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_record_target_verdicts() -> None:
    h = fresh("harness")
    assert h.record_target("a ratio", 2.0, 2.5, "×", target=1) == "met"
    assert h.record_target("too slow", 3.0, 2.5, "×", target=1) == "not met"
    assert h.record_target("speed-up", 2.2, 2.0, "×", better="higher", target=2) == "met"
    assert h.record_target("not fast enough", 1.5, 2.0, "×", better="higher") == "not met"
    assert h.record_target("absent", None, 1.0, "ms", target=4) == "not measured"
    assert h.record_target("nan", float("nan"), 1.0, "ms") == "not measured"
    with pytest.raises(ValueError, match="better"):
        h.record_target("typo", 1.0, 1.0, "ms", better="smaller")
    doc = h.snapshot()
    assert doc["targets"]["too slow"] == {"target": 1, "measured": 3.0, "limit": 2.5,
                                          "unit": "×", "better": "lower",
                                          "verdict": "not met", "note": ""}
    assert doc["machine"]["name"] and doc["machine"]["nproc"] >= 1


def test_record_table_rejects_ragged_rows() -> None:
    h = fresh("harness")
    with pytest.raises(ValueError, match="2 cells, not 3"):
        h.record_table("t", ["a", "b", "c"], [[1, 2]])


def synthetic(tmp_path: Path) -> dict[str, Any]:
    h = fresh("harness")
    h.record("vpcd", "placement", {"mode": "same", "caller_cpus": [1], "card_cpus": [1],
                                   "usable_cpus": [0, 1]})
    h.record_target("Card.transmit ÷ Device.ioctl, 5 B (sim)", 1.8, 2.5, "×", target=1)
    h.record_target("import scardio ÷ python -c pass", 2.6, 2.0, "×", target=6,
                    note="floor: the binding's own import")
    h.record_table("Import time", ["what", "median ms"], [["python -c pass", 12.5]],
                   note="Paired runs.")
    h.record_samples("import, ms", "ms", {"scardio": [30.0, 31.0]})
    stats = [{"name": "test_x[tx5-device]", "fullname": "f", "group": "sim tx5",
              "extra_info": {"path": "scardio Device.ioctl"},
              "stats": {"median": 4e-7, "iqr": 1e-8, "rounds": 100, "iterations": 10}}]
    path = tmp_path / "results.json"
    assert h.write_results(str(path), pytest_benchmark=stats) == str(path)
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def test_report_renders_targets_tables_and_pytest_benchmark(tmp_path: Path) -> None:
    report = fresh("report")
    text = report.render(synthetic(tmp_path))
    assert text.startswith(report.BEGIN) and text.endswith(report.END)
    assert "| 1 | Card.transmit ÷ Device.ioctl, 5 B (sim) | 1.8× | ≤ 2.5× | **met** |" in text
    assert ("| 6 | import scardio ÷ python -c pass | 2.6× | ≤ 2× | **not met** "
            "| floor: the binding's own import |") in text
    # every issue-12 target has a row; unmeasured ones say so
    assert "| 3 | scardio.aio ≤ 1.5× a bare two-thread eventfd round trip | – | – " \
           "| not measured in this run |" in text
    assert "| 8 | scardio paths timed by pytest-benchmark | 1 | ≥ 1 | **met** |" in text
    assert "| 8 | vpcd comparison: all processes pinned | 1 | ≥ 1 | **met** |" in text
    assert "### Import time" in text and "| python -c pass | 12.5 |" in text
    assert "| sim tx5 | scardio Device.ioctl | 0.40 | 0.01 | 100 × 10 |" in text
    assert "CPU placement: same" in text


def test_report_reads_pytest_benchmark_json_and_keeps_the_prose(tmp_path: Path) -> None:
    report = fresh("report")
    doc = synthetic(tmp_path)
    pb = tmp_path / "benchmarks.json"
    pb.write_text(json.dumps({"machine_info": {}, "benchmarks": [], "scardio": doc}))
    md = tmp_path / "benchmarks.md"
    md.write_text(f"# B\n\nprose before\n\n{report.BEGIN}\nold\n{report.END}\n\nprose after\n")
    assert report.main(["report.py", str(pb), str(md)]) == 0
    text = md.read_text()
    assert "prose before" in text and "prose after" in text and "\nold\n" not in text
    assert doc["machine"]["name"] in text
    foreign = tmp_path / "foreign.json"
    foreign.write_text(json.dumps({"benchmarks": []}))
    with pytest.raises(ValueError, match="not a scardio benchmark results document"):
        report.load(str(foreign))


def test_a_tiny_benchmark_run_feeds_the_report(tmp_path: Path) -> None:
    pytest.importorskip("pytest_benchmark")
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, str(BENCH / "run.py"), "--quick", "--no-namespace",
                        "--out", str(out), "--", "-k", "test_aio_benchmark and device"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert f"pytest-benchmark JSON: {out / 'benchmarks.json'}" in r.stdout
    data = json.loads((out / "benchmarks.json").read_text())
    assert [b["name"] for b in data["benchmarks"]] == ["test_aio_benchmark[device-tx5]"]
    stats = data["scardio"]["pytest_benchmark"]
    assert stats[0]["stats"]["median"] > 0 and stats[0]["group"].startswith("asyncio tx5")
    assert json.loads((out / "results.json").read_text())["pytest_benchmark"] == stats
    md = (out / "benchmarks.md").read_text()
    assert "| asyncio tx5, 100 operations per call | scardio Device.ioctl |" in md
