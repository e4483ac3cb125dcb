"""Where a Monitor's card event spends its time over PC/SC, against the
Device path on the same pcscd and reader (test_bench_pcsc.py's
``pcsc_env``).

For each event, exactly one path is armed (the paths taking turns) and the
thread that delivers it is watched: the Device path's thread blocked in
``Operation.wait()``, the Monitor's harvesting thread.  Besides the
latency from t0 it records how often that thread was switched out from
the arming until the event was seen (voluntary switches: it blocked, on
its wait or on a lock; non-voluntary: it was preempted), from
``/proc/self/task/<tid>/status``.  The window ends when the main thread
has the event, so it also holds whatever part of the thread's work after
the event (going back to its wait, the Monitor's next request) was done
by then: the figures compare the paths, they do not isolate a step.
"""

from __future__ import annotations

import contextlib
import os

import pytest

import events
import harness
from test_bench_pcsc import pcsc_env  # noqa: F401  (the fixture)
from test_bench_pcsc import SIM_INSERT, _connect_transmitters, card_mover

pytestmark = [pytest.mark.pcscd]

ROUNDS = int(os.environ.get("SCARDIO_BENCH_PCSC_EVENT_ROUNDS", "30"))


def _switches(tid: int) -> tuple[int, int]:
    got = {}
    with open(f"/proc/self/task/{tid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key.endswith("ctxt_switches"):
                got[key] = int(value)
    return got["voluntary_ctxt_switches"], got["nonvoluntary_ctxt_switches"]


class _Counted:
    """An armed path whose delivering thread's switches are counted from
    the arming to the event."""

    def __init__(self, armed, tid):
        self.armed, self.tid, self.name = armed, tid, armed.name
        self.switches: list[tuple[int, int]] = []

    def arm(self, kind: str) -> None:
        self.armed.arm(kind)
        self._before = _switches(self.tid())

    def seen(self) -> int:
        t1 = self.armed.seen()
        after = _switches(self.tid())
        self.switches.append((after[0] - self._before[0], after[1] - self._before[1]))
        return t1

    def disarm(self) -> None:
        self.armed.disarm()


def test_pcsc_monitor_path(pcsc_env):  # noqa: F811
    from scardio import pcsc
    w, name = pcsc_env["worker"], pcsc_env["name"]
    stack = contextlib.ExitStack()
    with stack:
        trigger = card_mover(pcsc_env, stack)
        dev = pcsc.open_device(name)
        stack.callback(dev.close)
        device = events.DeviceArmed(dev)
        stack.callback(device.close)
        reader = pcsc.open_reader(name)
        stack.callback(reader.close)
        monitor = events.MonitorArmed(reader)
        stack.callback(monitor.close)
        paths = [_Counted(device, lambda: device._thread.native_id),
                 _Counted(monitor, lambda: monitor.monitor._thread.native_id)]
        lat: dict = {p.name: {k: [] for k in events.KINDS} for p in paths}
        try:
            for r in range(ROUNDS):
                for p in paths[r % 2:] + paths[:r % 2]:
                    for path, kinds in events.run_together([p], trigger, 1, seed=r).items():
                        for kind, v in kinds.items():
                            lat[path][kind].extend(v)
        finally:
            w.call("ctl", n=SIM_INSERT)
            _connect_transmitters(pcsc_env)
    out = {}
    for p in paths:
        vol = [s[0] for s in p.switches]
        inv = [s[1] for s in p.switches]
        out[p.name] = {"latency_ms": {k: harness.summary(v) for k, v in lat[p.name].items()},
                       "voluntary_switches_per_event": sum(vol) / len(vol),
                       "preemptions_per_event": sum(inv) / len(inv)}
        print(f"\n{p.name}: " + ", ".join(
            f"{k} median {harness.median(v):.3f} ms" for k, v in lat[p.name].items())
            + f"; per event {sum(vol) / len(vol):.2f} voluntary switches, "
              f"{sum(inv) / len(inv):.2f} preemptions")
    harness.record("monitor_path_pcsc", "per_event", out)
    assert all(len(v) == ROUNDS for k in lat.values() for v in k.values()), lat
