"""Each benchmark file behind an issue-12 target registers it: given
synthetic figures, its register function adds the verdict rows (the exact
figure the issue defines, its bound, a note) and its results table, and
benchmarks/report.py renders them.  Nothing here is timed or runs a
driver."""

from __future__ import annotations

import importlib.util
import sys
import warnings
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any, Iterator

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks"


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"_targets_{name}", BENCH / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    with warnings.catch_warnings():
        # the vpcd / pcscd marks are registered by benchmarks/conftest.py
        warnings.simplefilter("ignore", pytest.PytestUnknownMarkWarning)
        spec.loader.exec_module(module)
    return module


@pytest.fixture
def h(monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """A private harness that the benchmark modules loaded next import."""
    monkeypatch.syspath_prepend(str(ROOT / "tests"))
    monkeypatch.syspath_prepend(str(BENCH))
    fresh = load("harness")
    monkeypatch.setitem(sys.modules, "harness", fresh)
    yield fresh


def rendered(h: ModuleType) -> str:
    text: str = load("report").render(h.snapshot())
    return text


def stats(median: float, **kw: float) -> dict[str, Any]:
    return dict({"median": median, "p10": median * 0.9, "p90": median * 1.2, "n": 10}, **kw)


def test_reader_api_registers_target_1(h: ModuleType) -> None:
    m = load("test_bench_reader_api")
    row = {"median_ns": {m.FRESH: 300, m.LANES: 310, m.API: 900, m.PYFLOOR: 800},
           "api_ratio": 3.0, "lanes_ratio": 1.03, "python_floor_ratio": 2.7}
    m._register({"tx5": row, "state": dict(row, api_ratio=1.4)})
    text = rendered(h)
    assert ("| 1 | Card.transmit ÷ Device.ioctl, 5 B (fresh device, per-round ratio) | 3× "
            "| ≤ 2.5× | **not met** | floor: the Python floor (lock, header, Response) is "
            "2.70×; lanes-have-run device 1.03× |") in text
    assert "| 1 | Reader.state() ÷ Device.ioctl(GET_STATE) (fresh device, per-round ratio) " \
           "| 1.4× | ≤ 2.5× | **met** |" in text
    assert "| Card.transmit 5 B | 0.300 | 0.310 | 0.900 | 0.800 | 3.00× | 1.03× | 2.70× |" \
        in text


def test_aio_overhead_registers_target_3_per_loop_in_one_table(h: ModuleType) -> None:
    m = load("test_bench_aio_overhead")
    meds = dict(zip(m.PATHS, [10_000, 12_000, 13_000, 14_000, 16_000]))
    for kind in ("asyncio", "uvloop"):
        m._register(SimpleNamespace(kind=kind, placement="same CPU"), meds,
                    {p: 1000.0 for p in m.PATHS})
    text = rendered(h)
    assert ("| 3 | scardio.aio ÷ bare eventfd round trip (uvloop loop, same CPU; slowest op) "
            "| 1.6× | ≤ 1.5× | **not met** | aio transmit 5 B; state 1.30×, get_attribute "
            "1.40×; floor: the core floor (Device.submit + queue, no scardio.aio) is 1.20× |"
            ) in text
    assert "| asyncio, same CPU | 10.00 | 1.20× | 1.30× | 1.40× | 1.60× |" in text
    assert "| uvloop, same CPU | 10.00 |" in text  # both loops, one table
    assert text.count("### asyncio: one awaited operation") == 1


def test_vicc_registers_target_4_with_pcscd_beside_it(h: ModuleType) -> None:
    m = load("test_bench_vicc")
    out = {m.DEVICE_VICC: stats(80_000), m.READER_VICC: stats(2_000_000),
           m.DEVICE_CARD: stats(20_000), m.READER_CARD: stats(30_000),
           m.PCSCD_VICC: stats(44_000_000)}
    m._register(out, {name: 5 for name in out})
    text = rendered(h)
    assert ("| 4 | vicc through vpcd: median APDU, scardio Device.ioctl | 0.08 ms | ≤ 1 ms "
            "| **met** | on vicc: pcscd+pyscard 44.0 ms, C floor (vpcd as is) not run; the "
            "project's test card: 0.020 ms |") in text
    assert "| 4 | vicc through vpcd: median APDU, scardio Card.transmit | 2 ms | ≤ 1 ms " \
           "| **not met** |" in text
    assert "| pcscd+pyscard, vicc | 44.000 | 39.600 | 52.800 | 5 | 550.0× |" in text


def test_monitor_io_registers_target_5(h: ModuleType) -> None:
    m = load("test_bench_monitor_io")
    m._register_apdus("test card", {"no Monitor": stats(30.0), "Monitor": stats(36.0),
                                    "ratio_median": 1.2, "ratio_mean": 1.1,
                                    "ratio_paired": 1.15})
    m._register_events({"scardio Monitor callback": {"insert": stats(6.0),
                                                     "remove": stats(11.0)}})
    text = rendered(h)
    assert ("| 5 | vpcd + test card: APDU median, Monitor ÷ no Monitor | 1.15× | ≤ 1.1× "
            f"| **not met** | median of the {m.ROUNDS} rounds' ratios of medians; tx5 medians "
            "over all rounds: 36.0 µs with, 30.0 µs without a Monitor (1.200×) |") in text
    assert f"| test card | 30.0 | 36.0 | 36.0 | 43.2 | 1.200× | 1.100× | 1.150× | {m.BATCH} |" \
        in text
    assert "| 5 | vpcd + test card: Monitor arrival median | 6 ms | ≤ 10.0 ms | **met** |" \
        in text
    assert "| 5 | vpcd + test card: Monitor removal median | 11.0 ms | ≤ 10.0 ms " \
           "| **not met** |" in text
    assert "| scardio Monitor callback | 6.00 | 7.20 | 11.00 | 13.20 | 10 |" in text


def test_import_registers_target_6(h: ModuleType) -> None:
    m = load("test_bench_import")
    m._register_import({"python -c pass": stats(20.0),
                        "import scardio": stats(30.0, ratio=1.5, paired_ratio=1.4),
                        "_bytecode_cached": True}, "import scardio")
    text = rendered(h)
    assert ("| 6 | import scardio ÷ python -c pass | 1.5× | ≤ 2× | **met** | ratio of "
            "medians, 30.0 vs 20.0 ms; per-round median 1.40× |") in text
    assert "| import scardio | 30.0 | 27.0 | 36.0 | 1.50× | 1.40× |" in text


def test_cli_start_up_registers_both_rows(h: ModuleType) -> None:
    m = load("test_bench_import")
    m._register_cli({"python -c pass": stats(20.0),
                     "scardio --help": stats(36.0, ratio=1.8, paired_ratio=1.7),
                     "scardio --sim 1 list": stats(90.0, ratio=4.5, paired_ratio=4.4),
                     "_bytecode_cached": True}, "scardio --help", "scardio --sim 1 list")
    text = rendered(h)
    assert "scardio --help ÷" not in text  # table rows, not targets
    assert "scardio --sim 1 list ÷" not in text  # a table row, not a target
    assert "| scardio --sim 1 list | 90.0 |" in text
    assert "| scardio --help | 36.0 | 32.4 | 43.2 | 1.80× | 1.70× |" in text


def test_scale_registers_target_7_for_both_driver_kinds(h: ModuleType) -> None:
    m = load("test_bench_scale")
    floor = {"generation": 0.25, "counts": 0.4, "presence_and_counts": 2.0, "presence": 1.5,
             "wake_ups": 0.2}
    for mode, cpu, presence, reads in (("polling-function", 0.0, 0, 0),
                                       ("presence-only", 0.3, 3, 500),
                                       ("presence-only, no generation", 0.6, 3, 500_000),
                                       ("presence-only, no counts", 3.0, 500_000, 0)):
        lat = {w: {k: stats(0.2 if w == "one" else 0.25) for k in ("insert", "remove")}
               for w in ("one", "many")}
        m._register(mode, {"readers": 1024, "threads_added": 1025, "idle_cpu_percent": cpu,
                           "idle_seconds": 5.0, "idle_polling_calls": 0,
                           "idle_presence_calls": presence, "idle_count_reads": reads,
                           "latency_ms": lat,
                           "ratio_many_to_one": {"insert": 1.25, "remove": 1.25},
                           "floor_cpu_percent": None if cpu == 0.0 else floor})
    text = rendered(h)
    assert "| 7 | 1024 readers, polling-function driver: idle CPU (% of one core) | 0% " \
           "| ≤ 0.5% | **met** |" in text
    assert ("| 7 | 1024 readers, presence-only driver: idle CPU (% of one core) | 0.3% "
            "| ≤ 0.5% | **met** | over 5.0 s; 100 driver calls a second: one card-event "
            "generation read per 10 ms tick for all 1024 readers (the driver has no polling "
            "function), taking no lock; counts are read only when it moves, presence only "
            "when they do (3 presence calls); floor: the same driver calls from a C loop "
            "take 0.25 % (the card-event generation read once per tick; of which 0.20 % is "
            "waking every 10 ms with no call; the card-event count read 0.40 %, "
            "IFDHICCPresence + the count read 2.00 %, IFDHICCPresence alone 1.50 %); "
            "scardio ÷ floor 1.20× |") in text
    assert "| 7 | 1024 readers, presence-only driver: arrival median ÷ one reader | 1.25× " \
           "| ≤ 1.5× | **met** |" in text
    # the drivers without the generation or without event counts: table rows, not targets
    assert "presence-only, no counts driver:" not in text
    assert "presence-only, no generation driver:" not in text
    assert text.count("### 1024 simulated readers under one Monitor") == 1
    assert "| presence-only | 1024 | 1025 | 0.30 | 0.25 | 0 | 3 | 500 |" in text
    assert "| presence-only, no generation | 1024 | 1025 | 0.60 | 0.40 | 0 | 3 | 500000 |" \
        in text
    assert "| presence-only, no counts | 1024 | 1025 | 3.00 | 1.50 | 0 | 500000 | 0 |" in text
    assert "| polling-function | 1024 | 1025 | 0.00 | 0 (no driver call) | 0 | 0 | 0 |" in text


def test_vcard_registers_the_in_process_target(h: ModuleType) -> None:
    m = load("test_bench_vcard")
    samples = {m.BUILTIN: [500.0, 1000.0, 500.0], m.PYTHON: [2000.0, 3000.0, 2000.0],
               m.PYMIN: [900.0, 1800.0, 900.0], m.CTYPES: [4000.0, 8000.0, 4000.0]}
    ratios = m._per_round(samples)
    assert ratios == {m.BUILTIN: 1.0, m.PYTHON: 4.0, m.PYMIN: 1.8, m.CTYPES: 8.0}
    meds = {k: h.median(v) for k, v in samples.items()}
    assert m._register(meds, ratios) == "met"
    text = rendered(h)
    assert f"| {m.TARGET_NAME} | 4× | ≤ 5× | **met** |" in text
    assert "crossing alone (constant card) 1.80×; ctypes callback" in text
    assert "| python | 2.00 | 4.00× |" in text
    assert m._register(meds, dict(ratios, python=5.5)) == "not met"


def test_serve_registers_the_pcscd_targets(h: ModuleType) -> None:
    m = load("test_bench_serve")
    samples = {m.PYTHON_CARD: [30000.0, 60000.0, 30000.0],
               m.PYTHON_CARD_NOSPIN: [45000.0, 90000.0, 45000.0],
               m.BUILTIN_CARD: [20000.0, 40000.0, 20000.0],
               m.VICC: [44e6, 48e6, 44e6]}
    out = {k: h.summary(v) for k, v in samples.items()}
    assert m._ratio(samples, m.PYTHON_CARD, m.BUILTIN_CARD) == 1.5
    assert m._register(out, samples) == "met"
    text = rendered(h)
    assert f"| {m.TARGET_PCSCD} | 1.5× | ≤ 2× | **met** |" in text
    assert "reader option spin=0: 2.25×" in text
    assert f"| {m.TARGET_VICC} | 1467× | ≥ 100× | **met** |" in text
    assert "### card serve: one APDU through pcscd + pyscard" in text
    slow = dict(samples, **{m.PYTHON_CARD: [50000.0, 100000.0, 50000.0]})
    assert m._register({k: h.summary(v) for k, v in slow.items()}, slow) == "not met"
