"""Scale: 1024 simulated readers under one Monitor, against one reader.

For each kind of driver -- with a polling function (the simulated reader's
default; the core waits in it, a thread per reader) and without one (opened
``?nopoll``; one poller thread per driver library asks presence every poll
interval) -- this measures, in one process:

- the threads the readers and their Monitor add;
- idle CPU over IDLE_SECONDS (no card events) as a share of one core, and
  the driver calls made meanwhile (the simulated reader's own counters:
  polling-function and presence calls), the wake-ups the CPU figure comes
  from;
- arrival and removal latency (vendor control INSERT / REMOVE to the
  Monitor's callback) on a random reader, the Monitor of one reader and the
  Monitor of 1024 sampled alternately while both are open (side by side:
  load drifts hit both alike).

    python -m pytest benchmarks/test_bench_scale.py -s -p no:cacheprovider
"""

from __future__ import annotations

import contextlib
import os
import random
import time

import pytest

import events
import harness
from bench_common import next_lun

READERS = int(os.environ.get("SCARDIO_BENCH_SCALE_READERS", "1024"))
IDLE_SECONDS = float(os.environ.get("SCARDIO_BENCH_SCALE_IDLE_S", "5"))
SAMPLES = int(os.environ.get("SCARDIO_BENCH_SCALE_EVENT_SAMPLES", "40"))
POLL_MS = 10  # the core's default poll interval


def _enough_descriptors(n: int) -> None:
    """Each reader has a completion descriptor, and the Monitor registers
    each: raise the soft limit (within the hard one) if it is too low."""
    try:
        import resource
    except ImportError:  # not POSIX
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 4 * n + 256
    if soft != resource.RLIM_INFINITY and soft < want:
        new = want if hard == resource.RLIM_INFINITY else min(want, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))


def _open_readers(stack, n: int, polling: bool):
    from scardio import Reader
    from scardio.sim import SimControl, open_device
    readers = []
    for _ in range(n):
        kw = {} if polling else {"polling": False}
        r = Reader(open_device(next_lun(), **kw), power_down_timeout=None)
        stack.callback(r.close)
        readers.append(r)
    return readers, [SimControl(r.device) for r in readers]


def _calls(controls, entry) -> int:
    return sum(sc.counters().calls[entry] for sc in controls)


def _trigger(sc):
    def trig(kind: str) -> int:
        t0 = time.monotonic_ns()
        sc.insert() if kind == "insert" else sc.remove()
        return t0
    return trig


IDLE_TARGET_PERCENT = 0.5
ARRIVAL_TARGET = 1.5
_rows: dict = {}


def _register(mode: str, out: dict) -> None:
    """Issue 12, target 7, for one kind of driver: idle CPU and the arrival
    ratio, and the results table row."""
    n, secs = out["readers"], out["idle_seconds"]
    lat, ratio = out["latency_ms"], out["ratio_many_to_one"]
    if mode == "polling-function":
        why = (f"{out['idle_polling_calls']} polling-function calls in {secs:.1f} s; "
               f"one thread per waiting reader (+{out['threads_added']} threads)")
    else:
        rate = out["idle_presence_calls"] / secs if secs else float("nan")
        why = (f"floor: the presence checks themselves ({rate:.0f} a second, every reader "
               f"every {POLL_MS} ms; the driver has no polling function)")
    harness.record_target(f"{n} readers, {mode} driver: idle CPU (% of one core)",
                          out["idle_cpu_percent"], IDLE_TARGET_PERCENT, "%", target=7,
                          note=f"over {secs:.1f} s; {why}")
    harness.record_target(f"{n} readers, {mode} driver: arrival median ÷ one reader",
                          ratio["insert"], ARRIVAL_TARGET, "×", target=7,
                          note=f"{lat['many']['insert']['median']:.3f} vs "
                               f"{lat['one']['insert']['median']:.3f} ms, sampled "
                               f"alternately")
    _rows[mode] = [mode, n, out["threads_added"], f"{out['idle_cpu_percent']:.2f}",
                   out["idle_polling_calls"], out["idle_presence_calls"],
                   f"{lat['one']['insert']['median']:.3f}",
                   f"{lat['many']['insert']['median']:.3f}", f"{ratio['insert']:.2f}×",
                   f"{lat['one']['remove']['median']:.3f}",
                   f"{lat['many']['remove']['median']:.3f}", f"{ratio['remove']:.2f}×"]
    harness.record_table(
        f"{n} simulated readers under one Monitor",
        ["driver", "readers", "threads added", "idle CPU (% of one core)",
         "polling-function calls (idle)", "presence calls (idle)", "arrival ms, 1 reader",
         f"arrival ms, {n}", "arrival ratio", "removal ms, 1 reader", f"removal ms, {n}",
         "removal ratio"], list(_rows.values()),
        note=f"Idle over {IDLE_SECONDS:g} s with no card events (CPU of the whole process; "
             "the driver calls are the simulated reader's counters); latency medians of "
             f"{SAMPLES} samples per kind on a random reader, one-reader and {n}-reader "
             "Monitors sampled alternately.")


@pytest.mark.parametrize("polling", [True, False], ids=["polling-function", "presence-only"])
def test_scale_1024_readers(polling, benchmark):
    from scardio.sim import EntryPoint
    mode = "polling-function" if polling else "presence-only"
    _enough_descriptors(READERS + 1)
    stack = contextlib.ExitStack()
    with stack:
        one, one_ctl = _open_readers(stack, 1, polling)
        mon_one = events.MonitorTracking(one, None)
        stack.callback(mon_one.close)

        threads_before = harness.thread_count()
        many, many_ctl = _open_readers(stack, READERS, polling)
        mon_many = events.MonitorTracking(many, None)
        stack.callback(mon_many.close)
        time.sleep(1.0)  # every reader's first look is done
        threads = harness.thread_count() - threads_before

        # Idle: CPU of the whole process, and the driver calls behind it.
        for sc in many_ctl + one_ctl:
            sc.reset_counters()
        c0, w0 = harness.cpu_seconds(), time.monotonic()
        time.sleep(IDLE_SECONDS)
        c1, w1 = harness.cpu_seconds(), time.monotonic()
        idle = (c1 - c0) / (w1 - w0)
        # Each counters() read counts itself as a CONTROL call only.
        polls = _calls(many_ctl, EntryPoint.POLLING)
        presence = _calls(many_ctl, EntryPoint.ICC_PRESENCE)

        rng = random.Random(READERS)
        lat = {"one": {"insert": [], "remove": []}, "many": {"insert": [], "remove": []}}
        for s in range(SAMPLES):
            order = ["one", "many"] if s % 2 == 0 else ["many", "one"]
            for which in order:
                if which == "one":
                    mon, reader, sc = mon_one, one[0], one_ctl[0]
                else:
                    i = rng.randrange(READERS)
                    mon, reader, sc = mon_many, many[i], many_ctl[i]
                for kind in events.KINDS:
                    time.sleep(0.005 + rng.uniform(0, 2 * POLL_MS / 1000))  # random phase
                    lat[which][kind].append(
                        mon.sample(kind, trigger=_trigger(sc), target=reader))

        # pytest-benchmark's view: one arrival + removal round trip on a
        # random reader of the 1024 (trigger to callback, both events).
        def round_trip():
            i = rng.randrange(READERS)
            for kind in events.KINDS:
                mon_many.sample(kind, trigger=_trigger(many_ctl[i]), target=many[i])
        benchmark.pedantic(round_trip, rounds=10, iterations=1)

    med = {w: {k: harness.median(v) for k, v in d.items()} for w, d in lat.items()}
    ratio = {k: med["many"][k] / med["one"][k] for k in events.KINDS}
    out = {"readers": READERS, "threads_added": threads,
           "idle_cpu_percent": idle * 100, "idle_seconds": w1 - w0,
           "idle_polling_calls": polls, "idle_presence_calls": presence,
           "latency_ms": {w: {k: harness.summary(v) for k, v in d.items()}
                          for w, d in lat.items()},
           "ratio_many_to_one": ratio, "_samples": lat}
    harness.record("scale_1024", mode, out)
    _register(mode, out)
    benchmark.extra_info.update({"idle_cpu_percent": idle * 100, "threads_added": threads,
                                 "arrival_ratio": ratio["insert"]})
    print(f"\n{mode}: {READERS} readers: +{threads} threads; idle {w1 - w0:.1f} s: CPU "
          f"{idle * 100:.2f} % of one core, {polls} polling-function and {presence} "
          f"presence calls; arrival median {med['one']['insert']:.2f} ms (1 reader) vs "
          f"{med['many']['insert']:.2f} ms ({READERS}) = {ratio['insert']:.2f}x; removal "
          f"{med['one']['remove']:.2f} vs {med['many']['remove']:.2f} ms = "
          f"{ratio['remove']:.2f}x")
