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

For the presence-only driver it first measures the floor: the driver's own
calls for the same looks made from a C loop (a small program compiled with
gcc, in a process of its own, before the readers open): every poll interval,
the library's card-event generation read once (through the first reader) --
what scardio's poller makes per tick while nothing moves, for a driver that
counts events and offers their generation (ifd_ext.h; counts and presence
are read only when it moves) -- and, for comparison, for each of the 1024
readers (no card) the card-event count read alone (what the poller makes
per tick for a driver that counts events but offers no generation),
IFDHICCPresence with the count read after it (a full look), IFDHICCPresence
alone (a driver that does not count events), and no call at all (the wake-up
every interval): the CPU no host of this driver polling at this rate can go
below.  The variants run in short rounds, interleaved, medians reported (the
machine's load drifts).  The same driver without the generation
(``event_generation=False``) and without the event counts
(``event_counts=False``, like most drivers) are measured as further kinds,
informative, each held to its own floor: a count read per reader per tick,
and a presence check per reader per tick.

    python -m pytest benchmarks/test_bench_scale.py -s -p no:cacheprovider
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import subprocess
import tempfile
import time
from typing import Optional

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


FLOOR_SOURCE = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

typedef unsigned long DWORD;
typedef long RC;

/* What pcscd exports to its drivers. */
void log_msg(const int priority, const char *fmt, ...) { (void)priority; (void)fmt; }
void log_xxd(const int priority, const char *msg, const unsigned char *b, const int n)
{ (void)priority; (void)msg; (void)b; (void)n; }

static int64_t now_ns(clockid_t clock)
{
    struct timespec ts;
    clock_gettime(clock, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* LIB FIRST_LUN READERS INTERVAL_MS SECONDS LOOK: every interval, per LUN,
 * LOOK 0: IFDHICCPresence; 1: it and the card-event count read; 2: the
 * count read alone; LOOK 3: once per interval (READERS >= 1), the
 * card-event generation read through the first LUN, no per-LUN call. */
int main(int argc, char **argv)
{
    RC (*create)(DWORD, char *), (*close_channel)(DWORD), (*presence)(DWORD);
    RC (*get_caps)(DWORD, DWORD, DWORD *, unsigned char *);
    void *h;
    DWORD first;
    long n, interval_ms, looks = 0;
    int look;
    int64_t t0, c0, t1, c1, end, tick;
    if (argc < 7)
        return 2;
    if (!(h = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL))) {
        printf("{\"error\": \"dlopen\"}\n");
        return 1;
    }
    *(void **)&create = dlsym(h, "IFDHCreateChannelByName");
    *(void **)&close_channel = dlsym(h, "IFDHCloseChannel");
    *(void **)&presence = dlsym(h, "IFDHICCPresence");
    *(void **)&get_caps = dlsym(h, "IFDHGetCapabilities");
    first = strtoul(argv[2], NULL, 0);
    n = strtol(argv[3], NULL, 0);
    interval_ms = strtol(argv[4], NULL, 0);
    look = atoi(argv[6]);
    for (long i = 0; i < n; i++) {
        char name[64];
        snprintf(name, sizeof name, "sim:%lu?nopoll", first + (DWORD)i);
        if (create(first + (DWORD)i, name) != 0) {
            printf("{\"error\": \"create channel\"}\n");
            return 1;
        }
    }
    t0 = now_ns(CLOCK_MONOTONIC);
    c0 = now_ns(CLOCK_PROCESS_CPUTIME_ID);
    end = t0 + (int64_t)(strtod(argv[5], NULL) * 1e9);
    for (tick = t0; tick < end;) {
        struct timespec ts;
        if (look == 3) {
            unsigned char v[16];
            DWORD len = 4;
            get_caps(first, 0x0007A004, &len, v); /* SCIO_IFD_TAG_CARD_EVENT_GENERATION */
            looks++;
        }
        for (long i = 0; look != 3 && i < n; i++) {
            if (look != 2)
                presence(first + (DWORD)i);
            if (look != 0) {
                unsigned char v[16];
                DWORD len = 8;
                get_caps(first + (DWORD)i, 0x0007A002, &len, v); /* SCIO_IFD_TAG_CARD_EVENTS */
            }
            looks++;
        }
        tick += interval_ms * 1000000LL;
        ts.tv_sec = tick / 1000000000LL;
        ts.tv_nsec = tick % 1000000000LL;
        clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL);
    }
    t1 = now_ns(CLOCK_MONOTONIC);
    c1 = now_ns(CLOCK_PROCESS_CPUTIME_ID);
    printf("{\"wall_ns\": %lld, \"cpu_ns\": %lld, \"looks\": %ld}\n",
           (long long)(t1 - t0), (long long)(c1 - c0), looks);
    for (long i = 0; i < n; i++)
        close_channel(first + (DWORD)i);
    return 0;
}
"""


#: The floor's variants: (key, readers, LOOK argument of the C loop).
FLOOR_LOOKS = (("generation", READERS, 3), ("counts", READERS, 2),
               ("presence_and_counts", READERS, 1), ("presence", READERS, 0),
               ("wake_ups", 0, 2))
FLOOR_ROUNDS = 5


def _presence_floor(n: int, seconds: float) -> Optional[dict]:
    """CPU (% of one core) of the driver's own looks at n readers every
    POLL_MS from a C loop, for each of FLOOR_LOOKS: FLOOR_ROUNDS rounds of
    seconds / FLOOR_ROUNDS each, interleaved; medians.  None where there is
    no gcc (or no POSIX)."""
    from scardio.sim import SIM_LIBRARY
    if os.name != "posix" or shutil.which("gcc") is None:
        return None
    samples: dict = {key: [] for key, _, _ in FLOOR_LOOKS}
    rates: dict = {key: [] for key, _, _ in FLOOR_LOOKS}
    with tempfile.TemporaryDirectory(prefix="scardio-scale-floor-") as tmp:
        src, exe = os.path.join(tmp, "floor.c"), os.path.join(tmp, "floor")
        with open(src, "w") as f:
            f.write(FLOOR_SOURCE)
        subprocess.run(["gcc", "-O2", "-std=gnu11", "-rdynamic", "-o", exe, src, "-ldl"],
                       check=True, timeout=60, capture_output=True)
        for _ in range(FLOOR_ROUNDS):
            for key, readers, look in FLOOR_LOOKS:
                run = subprocess.run([exe, SIM_LIBRARY, "1", str(readers), str(POLL_MS),
                                      str(seconds / FLOOR_ROUNDS), str(look)],
                                     check=True, timeout=seconds + 60, capture_output=True,
                                     text=True)
                r = json.loads(run.stdout)
                if "error" in r:
                    raise RuntimeError(f"presence floor: {r['error']}")
                samples[key].append(100 * r["cpu_ns"] / r["wall_ns"])
                rates[key].append(r["looks"] / (r["wall_ns"] / 1e9))
    out: dict = {key: harness.median(v) for key, v in samples.items()}
    out.update({key + "_looks_per_s": harness.median(v) for key, v in rates.items()})
    return out


def _open_readers(stack, n: int, polling: bool, event_counts: bool = True,
                  generation: bool = True):
    from scardio import Reader
    from scardio.sim import SimControl, open_device
    readers = []
    for _ in range(n):
        kw = {} if polling else {"polling": False}
        if not event_counts:
            kw["event_counts"] = False
        if not generation:
            kw["event_generation"] = False
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


#: Which floor each kind of driver is held to: the driver calls its idle
#: looks make.
FLOOR_OF = {"presence-only": "generation", "presence-only, no generation": "counts",
            "presence-only, no counts": "presence"}


def _floor_note(floor: dict, key: str, idle: float) -> str:
    parts = {"generation": "the card-event generation read once per tick",
             "counts": "the card-event count read",
             "presence_and_counts": "IFDHICCPresence + the count read",
             "presence": "IFDHICCPresence alone"}
    others = ", ".join(f"{parts[k]} {floor[k]:.2f} %" for k in parts if k != key)
    return (f"floor: the same driver calls from a C loop take {floor[key]:.2f} % "
            f"({parts[key]}; of which {floor['wake_ups']:.2f} % is waking every "
            f"{POLL_MS} ms with no call; {others}); scardio ÷ floor "
            f"{idle / floor[key]:.2f}×")


def _register(mode: str, out: dict) -> None:
    """Issue 12, target 7, for one kind of driver: idle CPU and the arrival
    ratio, and the results table row.  (The drivers without event counts or
    without their generation are rows of the table only: the target's
    simulated readers offer both.)"""
    n, secs = out["readers"], out["idle_seconds"]
    lat, ratio = out["latency_ms"], out["ratio_many_to_one"]
    floor = out.get("floor_cpu_percent")
    if mode == "polling-function":
        why = (f"{out['idle_polling_calls']} polling-function calls in {secs:.1f} s; "
               f"one thread per waiting reader (+{out['threads_added']} threads)")
    else:
        looks = out["idle_presence_calls"] if mode == "presence-only, no counts" else \
            out["idle_count_reads"]
        rate = looks / secs if secs else float("nan")
        if mode == "presence-only":
            why = (f"{rate:.0f} driver calls a second: one card-event generation read per "
                   f"{POLL_MS} ms tick for all {n} readers (the driver has no polling "
                   f"function), taking no lock; counts are read only when it moves, "
                   f"presence only when they do ({out['idle_presence_calls']} presence "
                   f"calls)")
        elif mode == "presence-only, no generation":
            why = (f"{rate:.0f} looks a second (every reader every {POLL_MS} ms; the driver "
                   f"has no polling function and no card-event generation), each one "
                   f"card-event count read taking no lock; {out['idle_presence_calls']} "
                   f"presence calls (asked only when the counts move)")
        else:
            why = (f"{rate:.0f} presence checks a second (every reader every {POLL_MS} ms; "
                   "the driver has no polling function and counts no events)")
        why += "; " + (_floor_note(floor, FLOOR_OF[mode], out["idle_cpu_percent"])
                       if floor else "floor not measured (no gcc)")
    out["note"] = why
    if mode in ("polling-function", "presence-only"):
        harness.record_target(f"{n} readers, {mode} driver: idle CPU (% of one core)",
                              out["idle_cpu_percent"], IDLE_TARGET_PERCENT, "%", target=7,
                              note=f"over {secs:.1f} s; {why}")
        harness.record_target(f"{n} readers, {mode} driver: arrival median ÷ one reader",
                              ratio["insert"], ARRIVAL_TARGET, "×", target=7,
                              note=f"{lat['many']['insert']['median']:.3f} vs "
                                   f"{lat['one']['insert']['median']:.3f} ms, sampled "
                                   f"alternately")
    _rows[mode] = [mode, n, out["threads_added"], f"{out['idle_cpu_percent']:.2f}",
                   "0 (no driver call)" if mode == "polling-function" else
                   f"{floor[FLOOR_OF[mode]]:.2f}" if floor else "not measured",
                   out["idle_polling_calls"], out["idle_presence_calls"],
                   out["idle_count_reads"],
                   f"{lat['one']['insert']['median']:.3f}",
                   f"{lat['many']['insert']['median']:.3f}", f"{ratio['insert']:.2f}×",
                   f"{lat['one']['remove']['median']:.3f}",
                   f"{lat['many']['remove']['median']:.3f}", f"{ratio['remove']:.2f}×"]
    harness.record_table(
        f"{n} simulated readers under one Monitor",
        ["driver", "readers", "threads added", "idle CPU (% of one core)",
         "driver's own calls, C loop (% of one core)",
         "polling-function calls (idle)", "presence calls (idle)",
         "count + generation reads (idle)", "arrival ms, 1 reader",
         f"arrival ms, {n}", "arrival ratio", "removal ms, 1 reader", f"removal ms, {n}",
         "removal ratio"], list(_rows.values()),
        note=f"Idle over {IDLE_SECONDS:g} s with no card events (CPU of the whole process; "
             "the driver calls are the simulated reader's counters; the C loop makes the "
             "same driver calls at the same rate in a process of its own, before the "
             "readers open: one generation read per tick for the driver that offers "
             "it, a count read per reader per tick for the one that counts events "
             "only, IFDHICCPresence per reader per tick for the one that does not); "
             "latency medians of "
             f"{SAMPLES} samples per kind on a random reader, one-reader and {n}-reader "
             "Monitors sampled alternately.")


_floor: dict = {}


@pytest.mark.parametrize("polling, event_counts, generation",
                         [(True, True, True), (False, True, True), (False, True, False),
                          (False, False, False)],
                         ids=["polling-function", "presence-only", "presence-only-no-generation",
                              "presence-only-no-counts"])
def test_scale_1024_readers(polling, event_counts, generation, benchmark):
    from scardio.sim import EntryPoint
    mode = "polling-function" if polling else \
        ("presence-only" if generation else "presence-only, no generation") if event_counts \
        else "presence-only, no counts"
    _enough_descriptors(READERS + 1)
    # Before any reader opens, so that nothing else polls meanwhile (once:
    # the kinds without a polling function share it).
    if not polling and "floor" not in _floor:
        _floor["floor"] = _presence_floor(READERS, IDLE_SECONDS)
    floor = None if polling else _floor["floor"]
    stack = contextlib.ExitStack()
    with stack:
        one, one_ctl = _open_readers(stack, 1, polling, event_counts, generation)
        mon_one = events.MonitorTracking(one, None)
        stack.callback(mon_one.close)

        threads_before = harness.thread_count()
        many, many_ctl = _open_readers(stack, READERS, polling, event_counts, generation)
        mon_many = events.MonitorTracking(many, None)
        stack.callback(mon_many.close)
        time.sleep(1.0)  # every reader's first look is done
        threads = harness.thread_count() - threads_before

        # Idle: CPU of the whole process, and the driver calls behind it.
        for sc in many_ctl + one_ctl:
            sc.reset_counters()
        # (process_time: every thread's CPU, to the nanosecond; os.times
        # counts 10 ms ticks, 0.2 % of a core over 5 s)
        c0, w0 = time.process_time(), time.monotonic()
        time.sleep(IDLE_SECONDS)
        c1, w1 = time.process_time(), time.monotonic()
        idle = (c1 - c0) / (w1 - w0)
        # Each counters() read counts itself as a CONTROL call only.
        polls = _calls(many_ctl, EntryPoint.POLLING)
        presence = _calls(many_ctl, EntryPoint.ICC_PRESENCE)
        # (no other GET_CAPABILITIES call is made while idle: count reads, and
        # generation reads, which count on the LUN read through -- of
        # either Monitor's readers: one poller serves both)
        reads = _calls(many_ctl + one_ctl, EntryPoint.GET_CAPABILITIES)

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
           "idle_count_reads": reads,
           "latency_ms": {w: {k: harness.summary(v) for k, v in d.items()}
                          for w, d in lat.items()},
           "ratio_many_to_one": ratio, "floor_cpu_percent": floor, "_samples": lat}
    harness.record("scale_1024", mode, out)
    _register(mode, out)
    benchmark.extra_info.update({"idle_cpu_percent": idle * 100, "threads_added": threads,
                                 "arrival_ratio": ratio["insert"]})
    if floor:
        print(f"\n{mode}: floor, the driver's calls from a C loop: "
              f"{floor['generation']:.2f} % (one generation read per tick), "
              f"{floor['counts']:.2f} % (count reads), "
              f"{floor['presence_and_counts']:.2f} % (presence + counts), "
              f"{floor['presence']:.2f} % (presence alone), "
              f"{floor['wake_ups']:.2f} % (the wake-ups alone)", end="")
    print(f"\n{mode}: {READERS} readers: +{threads} threads; idle {w1 - w0:.1f} s: CPU "
          f"{idle * 100:.2f} % of one core, {polls} polling-function, {presence} "
          f"presence calls and {reads} count + generation reads; arrival median {med['one']['insert']:.2f} ms (1 reader) vs "
          f"{med['many']['insert']:.2f} ms ({READERS}) = {ratio['insert']:.2f}x; removal "
          f"{med['one']['remove']:.2f} vs {med['many']['remove']:.2f} ms = "
          f"{ratio['remove']:.2f}x")
