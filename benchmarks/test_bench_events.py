"""Card arrival / removal latency on the simulated reader, and the cost of
monitoring 1, 16 and 256 readers at once."""

from __future__ import annotations

import contextlib
import os
import random
import time

import pytest

import events
import harness
from bench_common import SIM_PCSCD_NAME, next_lun

ROUNDS = int(os.environ.get("SCARDIO_BENCH_EVENT_ROUNDS", "30"))
MONITOR_ROUNDS = int(os.environ.get("SCARDIO_BENCH_MONITOR_ROUNDS", "10"))
IDLE_SECONDS = float(os.environ.get("SCARDIO_BENCH_IDLE_S", "3"))


sim_trigger = events.sim_trigger


def _summarize(section, res):
    out = {}
    for name, kinds in res.items():
        out[name] = {k: harness.summary(v) for k, v in kinds.items()}
        out[name]["_samples"] = kinds
    harness.record(section, "latency_ms", out)
    for name, kinds in res.items():
        print(f"\n{name}: " + ", ".join(
            f"{k} median {harness.median(v):.3f} ms (p90 {harness.percentile(v, 0.9):.3f})"
            for k, v in kinds.items()))
    return out


def test_sim_event_latency(request):
    from scardio import Reader
    from scardio.sim import open_device
    stack = contextlib.ExitStack()
    with stack:
        dev = open_device(next_lun())
        stack.callback(dev.close)
        trackers = [events.DeviceTracking(dev, sim_trigger(dev))]
        rdev = open_device(next_lun())
        reader = Reader(rdev)
        stack.callback(reader.close)
        mon = events.MonitorTracking([reader], sim_trigger(rdev))
        stack.callback(mon.close)
        trackers.append(mon)
        worker = None
        try:
            request.getfixturevalue("pcscd_env")
            import pcsc_peer
            worker = pcsc_peer.PyscardWorker()
            stack.callback(worker.close)
            worker.call("open", match=SIM_PCSCD_NAME, direct=True)
            worker.call("ctl", n=3501)  # start without a card
            time.sleep(0.3)
            trackers.append(events.PyscardTracking(worker, "gsc"))
        except pytest.skip.Exception as exc:
            harness.record("events_sim", "pcscd_skipped", str(exc))
        res = events.run_interleaved(trackers, ROUNDS)
        if worker is not None:
            cm = events.PyscardTracking(worker, "monitor")
            try:
                res.update(events.run_interleaved([cm], MONITOR_ROUNDS, pause=0.05, jitter=0.1))
            finally:
                cm.close()
        _summarize("events_sim", res)


def _scale_one(n: int, samples: int) -> dict:
    from scardio import Reader
    from scardio.sim import open_device
    from scardio.sim import SimControl
    stack = contextlib.ExitStack()
    with stack:
        threads_before = harness.thread_count()
        readers = []
        for _ in range(n):
            r = Reader(open_device(next_lun()))
            stack.callback(r.close)
            readers.append(r)
        controls = [SimControl(r.device) for r in readers]
        mon = events.MonitorTracking(readers, None)
        stack.callback(mon.close)
        time.sleep(0.5)
        threads = harness.thread_count() - threads_before
        c0, w0 = harness.cpu_seconds(), time.monotonic()
        time.sleep(IDLE_SECONDS)
        idle = (harness.cpu_seconds() - c0) / (time.monotonic() - w0)
        rng = random.Random(n)
        lat = {"insert": [], "remove": []}
        for _ in range(samples):
            i = rng.randrange(n)

            def trig(kind, sc=controls[i]):
                t0 = time.monotonic_ns()
                sc.insert() if kind == "insert" else sc.remove()
                return t0
            for kind in ("insert", "remove"):
                lat[kind].append(mon.sample(kind, trigger=trig, target=readers[i]))
                time.sleep(0.01)
        return {"readers": n, "threads_added": threads, "idle_cpu_percent": idle * 100,
                "latency_ms": {k: harness.summary(v) for k, v in lat.items()},
                "_samples": lat}


def test_scale_monitoring():
    samples = int(os.environ.get("SCARDIO_BENCH_SCALE_SAMPLES", "30"))
    out = {}
    for n in (1, 16, 256):
        r = _scale_one(n, samples)
        out[str(n)] = r
        print(f"\n{n} readers: +{r['threads_added']} threads, idle CPU "
              f"{r['idle_cpu_percent']:.2f} % of one core, arrival median "
              f"{r['latency_ms']['insert']['median']:.3f} ms, removal median "
              f"{r['latency_ms']['remove']['median']:.3f} ms")
    harness.record("scale", "monitor", out)
