"""A card written in Python, served by ``scardio card serve`` and reached
through pcscd, next to the simulated reader's built-in C card through the
same pcscd and to vicc (vsmartcard) behind vpcd with stock sockets.

All three are pcscd + pyscard (one worker process each, the same client
code), interleaved in rotating rounds, every process pinned to the same CPUs
(harness.Placement; SCARDIO_BENCH_PLACEMENT=split|none to compare).  The Python card and the built-in one
answer the same ECHO of 4 bytes; vicc answers SELECT MF.  Issue 14's targets:
the Python card's round trip <= 2x the built-in card's, and >= 100x faster
than vicc's.  Needs pcscd and pyscard in a private namespace
(benchmarks/run.py); vicc is optional (its row is then "not measured").
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time

import pytest

import harness
import pcsc_peer
import paths
from bench_common import (SERVED_NOSPIN_PCSCD_NAME, SERVED_PCSCD_NAME, SIM_PCSCD_NAME,
                          VPCD_PCSCD_NAME)

pytestmark = pytest.mark.pcscd

ROUNDS = int(os.environ.get("SCARDIO_BENCH_ROUNDS", "25"))
BATCH_NS = float(os.environ.get("SCARDIO_BENCH_BATCH_MS", "4")) * 1e6 * 2
SLOW_BATCH = int(os.environ.get("SCARDIO_BENCH_VICC_SLOW_BATCH", "5"))
OP = "echo"
ECHO4 = "80EE000004CAFEBABE04"

PYTHON_CARD = "pcscd+pyscard, Python card (card serve)"
PYTHON_CARD_NOSPIN = "pcscd+pyscard, Python card, reader option spin=0"
BUILTIN_CARD = "pcscd+pyscard, built-in C card"
VICC = "pcscd+pyscard, vicc through vpcd"

TESTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests")


class WorkerPath(harness.Path):
    def __init__(self, worker, name):
        self.worker, self.name = worker, name

    def run(self, op, count):
        return self.worker.run(OP, count)


def _wait(pred, timeout=20.0, what="condition"):
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.02)


def _worker(stack, match, apdu, direct=False):
    w = pcsc_peer.PyscardWorker()
    stack.callback(w.close)
    w.call("open", match=match, direct=direct, apdus={OP: apdu})
    return w


@pytest.fixture(scope="module")
def serve_paths(request):
    pe = request.getfixturevalue("pcscd_env")
    stack = contextlib.ExitStack()
    ps = {}
    try:
        # every process of every path on the same CPUs (SCARDIO_BENCH_PLACEMENT)
        place = stack.enter_context(harness.Placement())
        place.caller(pe["pcscd"].proc.pid)
        harness.record("serve", "placement", place.describe())
        env = dict(os.environ)
        env["PYTHONPATH"] = TESTS + (os.pathsep + env["PYTHONPATH"]
                                     if env.get("PYTHONPATH") else "")
        for path, reader, name in ((pe["served_socket"], SERVED_PCSCD_NAME, PYTHON_CARD),
                                   (pe["served_socket"] + ".nospin", SERVED_NOSPIN_PCSCD_NAME,
                                    PYTHON_CARD_NOSPIN)):
            server = subprocess.Popen(
                [sys.executable, "-m", "scardio", "card", "serve", "serve_cards:CounterCard",
                 "--socket", path], env=env, stderr=subprocess.DEVNULL)
            stack.callback(harness.stop_process, server)
            place.card(server.pid)
            _wait(lambda: os.path.exists(path), what="the card server")
            w = _worker(stack, reader, ECHO4)
            w.call("connect", timeout=20)
            assert w.call("apdu", op=OP)["resp"] == "cafebabe9000"
            ps[name] = WorkerPath(w, name)

        w = _worker(stack, SIM_PCSCD_NAME, ECHO4, direct=True)
        w.call("ctl", n=3500)  # insert the built-in T=1 card
        w.call("connect", timeout=20)
        assert w.call("apdu", op=OP)["resp"] == "cafebabe9000"
        ps[BUILTIN_CARD] = WorkerPath(w, BUILTIN_CARD)

        try:
            import vicc_support
            why = vicc_support.unavailable()
        except ImportError as exc:
            why = str(exc)
        if not why and pe["vpcd_port"]:
            # pcscd polls vpcd every 400 ms: leave the slot empty long enough
            # for the next module's card to be an arrival pcscd sees.
            stack.callback(time.sleep, 1.0)
            vicc = vicc_support.Vicc(pe["vpcd_port"])
            stack.callback(vicc.close)
            w = _worker(stack, VPCD_PCSCD_NAME, vicc_support.SELECT_MF.hex())
            w.call("connect", timeout=20, read_timeout=30)
            assert w.call("apdu", op=OP)["resp"].endswith("9000")
            ps[VICC] = WorkerPath(w, VICC)
        else:
            harness.record("serve", "vicc_skipped", why or "vpcd is not installed")
        for p in ps.values():  # warm-up
            p.run(OP, 200 if p.name != VICC else 2)
        yield ps
    finally:
        stack.close()


TARGET_PCSCD = "card serve through pcscd: Python card ÷ built-in card, APDU round trip"
TARGET_VICC = "card serve through pcscd: vicc through vpcd ÷ Python card, APDU round trip"


def _ratio(samples, a, b):
    """Median over the rounds of a's per-call time ÷ b's in the same round
    (both ran back to back, so a burst of load on the machine hits both)."""
    if a not in samples or b not in samples:
        return None
    r = [x / y for x, y in zip(samples[a], samples[b]) if y > 0]
    return harness.median(r) if r else None


def _register(out, samples):
    """Issue 14's two targets through pcscd, and the table."""
    def med(name):
        return out[name]["median"] if name in out else None
    py, builtin, vicc = med(PYTHON_CARD), med(BUILTIN_CARD), med(VICC)
    ratio = _ratio(samples, PYTHON_CARD, BUILTIN_CARD)
    nospin = _ratio(samples, PYTHON_CARD_NOSPIN, BUILTIN_CARD)
    verdict = harness.record_target(
        TARGET_PCSCD, ratio, 2.0, "×",
        note=(f"pyscard ECHO 4 B, median of per-round ratios; Python card "
              f"{py / 1e3:.1f} µs, built-in {builtin / 1e3:.1f} µs (medians)"
              + (f"; reader option spin=0: {nospin:.2f}×" if nospin else ""))
        if py and builtin else "")
    speedup = _ratio(samples, VICC, PYTHON_CARD)
    harness.record_target(
        TARGET_VICC, speedup, 100.0, "×", better="higher",
        note=(f"vicc {vicc / 1e6:.1f} ms (SELECT MF, stock sockets: Nagle + delayed "
              f"ACK), Python card {py / 1e3:.1f} µs") if vicc and py
        else harness.results().get("serve", {}).get("vicc_skipped", ""))
    rows = [[name, f"{s['median'] / 1e3:.1f}", f"{s['p10'] / 1e3:.1f}",
             f"{s['p90'] / 1e3:.1f}", f"{_ratio(samples, name, BUILTIN_CARD):.2f}×"]
            for name, s in out.items() if not name.startswith("_")]
    harness.record_table(
        "card serve: one APDU through pcscd + pyscard",
        ["path", "median µs", "p10 µs", "p90 µs", f"÷ {BUILTIN_CARD} (per round)"], rows,
        note=f"Medians over {ROUNDS} interleaved rounds, one pyscard worker per path, "
             "the same pcscd; ECHO 4 B (vicc: SELECT MF); placement "
             f"{harness.results().get('serve', {}).get('placement', {}).get('mode')}.")
    return verdict


def test_serve_side_by_side(serve_paths):
    ps = list(serve_paths.values())
    sizes = {p.name: SLOW_BATCH for p in ps if p.name == VICC}
    sizes.update(paths.batch_sizes([p for p in ps if p.name != VICC], OP, BATCH_NS))
    res = harness.interleave(ps, OP, ROUNDS, 0, counts=sizes)
    out = {name: harness.summary(v) for name, v in res.items()}
    out["_samples"] = res
    out["_batch"] = sizes
    harness.record("serve", OP, out)
    _register(out, res)
    print("\nOne APDU through pcscd + pyscard, median:")
    for name, s in out.items():
        if not name.startswith("_"):
            print(f"  {name:42s} {s['median'] / 1e3:10.1f} us  (p10 {s['p10'] / 1e3:.1f}, "
                  f"p90 {s['p90'] / 1e3:.1f}, batch {sizes[name]})")
    print(f"  Python card / built-in (median of per-round ratios): "
          f"{_ratio(res, PYTHON_CARD, BUILTIN_CARD):.2f}x "
          f"(spin=0: {_ratio(res, PYTHON_CARD_NOSPIN, BUILTIN_CARD):.2f}x)")
    if VICC in out:
        print(f"  vicc / Python card: {_ratio(res, VICC, PYTHON_CARD):.0f}x")
    assert all(s["median"] > 0 for n, s in out.items() if not n.startswith("_"))
