"""Where a Monitor's card event spends its time over PC/SC, against the
Device path on the same pcscd and reader (test_bench_pcsc.py's
``pcsc_env``).

For each event, exactly one path is armed (the paths taking turns) and the
thread that delivers it is watched: the Device path's thread blocked in
``Operation.wait()``, the Monitor's harvesting thread (which over PC/SC
waits in the driver itself, a ``TrackingSet``), the same Monitor made to
take its readers' tracking through its completion queue (the tracking
lane's hop, the path of monitors whose readers cannot all join a set),
and the floor of the Monitor's path: a thread blocked in
``TrackingSet.dispatch()`` whose callback only takes the time.  Besides the
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
import time

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


class SetArmed(events.DeviceArmed):
    """The floor of the Monitor's wait over PC/SC: a thread of its own
    blocked in TrackingSet.dispatch() on the device, the callback taking
    t1 and nothing else (no Tracker, no CardEvent)."""

    name = "TrackingSet.dispatch() callback alone"

    def __init__(self, dev, settle: float = 0.002):
        from scardio import _core
        self.set = _core.TrackingSet.for_device(dev)
        self._armed = None
        super().__init__(dev, settle)

    def _wait_loop(self) -> None:
        while True:
            item, timeout = self._ops.get()
            if item is None:
                return
            try:
                while not self.set.dispatch(timeout):
                    pass
            except Exception as exc:  # reported by seen()
                self._seen.put(("error", exc))

    def _done(self, op) -> None:
        self._seen.put(("t1", time.monotonic_ns()))

    def arm(self, kind: str, timeout: float = 10.0) -> None:
        from scardio import IOCTL
        now, want = ((IOCTL.IS_ABSENT, IOCTL.IS_PRESENT) if kind == "insert"
                     else (IOCTL.IS_PRESENT, IOCTL.IS_ABSENT))
        self.dev.submit(now).wait(timeout)  # up to date, as DeviceArmed
        self._op = self.set.submit(self.dev, want, self._done)
        self._ops.put((True, timeout))
        time.sleep(self.settle)
        if self._op.done():
            raise RuntimeError(f"{kind}: tracking request completed before the event")

    def close(self) -> None:
        self._ops.put((None, 0))
        self.set.wake()
        self._thread.join(5)
        self.set.close()


def _queued_monitor(reader):
    """A MonitorArmed whose Monitor takes no tracking set: its readers'
    tracking goes through the lanes and its completion queue."""
    armed = events.MonitorArmed(reader)
    armed.monitor._set_takes = lambda device: False  # type: ignore[method-assign]
    armed.name = "scardio Monitor callback, through its completion queue"
    return armed


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
        q_reader = pcsc.open_reader(name)
        stack.callback(q_reader.close)
        queued = _queued_monitor(q_reader)
        stack.callback(queued.close)
        set_dev = pcsc.open_device(name)
        stack.callback(set_dev.close)
        floor = SetArmed(set_dev)
        stack.callback(floor.close)
        paths = [_Counted(device, lambda: device._thread.native_id),
                 _Counted(monitor, lambda: monitor.monitor._thread.native_id),
                 _Counted(queued, lambda: queued.monitor._thread.native_id),
                 _Counted(floor, lambda: floor._thread.native_id)]
        lat: dict = {p.name: {k: [] for k in events.KINDS} for p in paths}
        try:
            for r in range(ROUNDS):
                k = r % len(paths)
                for p in paths[k:] + paths[:k]:
                    for path, kinds in events.run_together([p], trigger, 1, seed=r).items():
                        for kind, v in kinds.items():
                            lat[path][kind].extend(v)
            # The Monitor over PC/SC waited in the driver (it made a tracking
            # set for its reader); the queued one did not.
            made_set = (monitor.monitor._set is not None, queued.monitor._set is not None)
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
    assert made_set == (True, False), made_set
