"""What recording a session costs Card.transmit, and what it costs a card
that is not being recorded (nothing, by construction: the recorder stands
in for ``transmit`` on the one card object it records; this measures it).

Three cards, each on its own simulated reader, ECHO 80 EE with 1 byte
(5-byte APDU, T=1):

  never recorded        a card nobody called record() on
  recorded, then closed a card whose recording ran and was closed: its
                        transmit is the class's again
  recording to a file   a card being recorded (one JSON line written and
                        flushed per call)

``test_recording_ratios`` runs them interleaved (harness.py) and records
the medians and the ratios to "never recorded"; the ``benchmark`` tests
time each with pytest-benchmark (``--benchmark-enable``).

    python -m pytest benchmarks/test_bench_recording.py -s -p no:cacheprovider
"""

from __future__ import annotations

import contextlib
import io
import os
from functools import partial

import pytest

import harness
import paths
from apdus import APDUS
from bench_common import next_lun

ROUNDS = int(os.environ.get("SCARDIO_BENCH_ROUNDS", "25"))
BATCH_NS = float(os.environ.get("SCARDIO_BENCH_BATCH_MS", "4")) * 1e6

NEVER = "never recorded"
CLOSED = "recorded, then closed"
RECORDING = "recording to a file"
KINDS = (NEVER, CLOSED, RECORDING)


@pytest.fixture(scope="module")
def cards(tmp_path_factory):
    stack = contextlib.ExitStack()
    try:
        out = {}
        for kind in KINDS:
            reader = paths.open_sim_reader(next_lun())
            stack.callback(reader.close)
            card = reader.connect()
            if kind == CLOSED:
                card.record(io.StringIO()).close()
            elif kind == RECORDING:
                rec = card.record(tmp_path_factory.mktemp("recording") / "bench.jsonl")
                stack.callback(rec.close)
            out[kind] = card
        yield out
    finally:
        stack.close()


def _paths(cards):
    return [harness.FuncPath(kind, {"tx5": partial(cards[kind].transmit, APDUS["tx5"])})
            for kind in KINDS]


def test_recording_ratios(cards):
    assert "transmit" not in vars(cards[NEVER]) and "transmit" not in vars(cards[CLOSED])
    assert "transmit" in vars(cards[RECORDING])
    ps = _paths(cards)
    sizes = paths.batch_sizes(ps, "tx5", BATCH_NS)
    res = harness.interleave(ps, "tx5", ROUNDS, 0, counts=sizes)
    out = {name: harness.summary(v) for name, v in res.items()}
    out["_samples"] = res
    out["_batch"] = sizes
    harness.record("recording", "tx5", out)
    meds = {name: out[name]["median"] for name in KINDS}
    harness.record_target("Card.transmit of a card recorded then closed ÷ never recorded "
                          "(sim, 5 B)", meds[CLOSED] / meds[NEVER], 1.1, "×",
                          note="interleaved medians; the same class method runs in both")
    harness.record_table(
        "Recording: Card.transmit, 5 B, simulated reader",
        ["card", "median µs", "÷ never recorded"],
        [[k, f"{meds[k] / 1000:.3f}", f"{meds[k] / meds[NEVER]:.2f}"] for k in KINDS],
        note="interleaved rounds (benchmarks/harness.py); the recording card writes and "
             "flushes one JSON line per call")
    print("\n" + ", ".join(f"{k}: {meds[k] / 1000:.3f} us ({meds[k] / meds[NEVER]:.2f}x)"
                           for k in KINDS))
    assert all(v > 0 for v in meds.values()), meds


@pytest.mark.parametrize("kind", KINDS)
def test_recording_benchmark(cards, kind, benchmark):
    benchmark.group = "recording: Card.transmit 5 B (sim)"
    benchmark.extra_info.update(path=kind)
    benchmark(partial(cards[kind].transmit, APDUS["tx5"]))
