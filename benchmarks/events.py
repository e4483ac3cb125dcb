"""Card arrival / removal latency: from the moment the card goes in (or out)
to the moment user code sees the event.  t0 is taken just before the
insertion (the simulated reader's INSERT / REMOVE vendor control, or the vpcd
card connecting / disconnecting); t1 where the user's code gets the event.
Both are CLOCK_MONOTONIC (time.monotonic_ns), comparable across processes.
"""

from __future__ import annotations

import queue
import random
import threading
import time
from typing import Callable, Optional

KINDS = ("insert", "remove")


def sim_trigger(dev) -> Callable[[str], int]:
    """Insert / remove the simulated card of `dev`; returns t0."""
    from scardio.sim import SimControl
    sc = SimControl(dev)

    def trigger(kind: str) -> int:
        t0 = time.monotonic_ns()
        sc.insert() if kind == "insert" else sc.remove()
        return t0
    return trigger


class DeviceTracking:
    """scardio Device: IS_PRESENT / IS_ABSENT submitted, a user thread
    blocked in Operation.wait().

    The event comes a random 10 ms + U(0, `phase_jitter`) s after the
    submit: a fixed delay would land every event at the same phase of a
    presence poll that starts with the request (a delay of exactly one
    poll interval measures a whole interval every time)."""

    name = "scardio Device IS_PRESENT/IS_ABSENT"

    def __init__(self, dev, trigger: Callable[[str], int], phase_jitter: float = 0.01,
                 seed: int = 2):
        self.dev = dev
        self.trigger = trigger  # kind -> t0
        self.phase_jitter = phase_jitter
        self.rng = random.Random(seed)

    def sample(self, kind: str, timeout: float = 10.0) -> float:
        from scardio import IOCTL
        op = self.dev.submit(IOCTL.IS_PRESENT if kind == "insert" else IOCTL.IS_ABSENT)
        seen = {}

        def waiter() -> None:
            try:
                op.wait(timeout)
                seen["t1"] = time.monotonic_ns()
            except Exception as exc:  # reported below
                seen["error"] = exc
        th = threading.Thread(target=waiter, daemon=True)
        th.start()
        # The request is pending in the driver by now; random phase.
        time.sleep(0.01 + self.rng.uniform(0, self.phase_jitter))
        if op.done():
            raise RuntimeError(f"{kind}: tracking request completed before the event")
        t0 = self.trigger(kind)
        th.join(timeout + 1)
        if "t1" not in seen:
            op.cancel()
            raise RuntimeError(f"{kind} not seen: {seen.get('error')}")
        return (seen["t1"] - t0) / 1e6

    def close(self) -> None:
        pass


class MonitorTracking:
    """scardio.Monitor with a callback (the reader API's event path)."""

    name = "scardio Monitor callback"

    def __init__(self, readers, trigger: Callable[[str], int], target=None):
        from scardio import Monitor
        self.events: "queue.Queue" = queue.Queue()
        self.target = target
        self.monitor = Monitor(readers, callback=self._cb)
        self.trigger = trigger
        time.sleep(0.05)
        self._drain()

    def _cb(self, ev) -> None:
        self.events.put((time.monotonic_ns(), ev.kind, ev.reader))

    def _drain(self) -> None:
        while True:
            try:
                self.events.get_nowait()
            except queue.Empty:
                return

    def sample(self, kind: str, timeout: float = 10.0, trigger=None, target=None) -> float:
        want = "arrival" if kind == "insert" else "departure"
        target = target if target is not None else self.target
        self._drain()
        t0 = (trigger or self.trigger)(kind)
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError(f"Monitor did not report {want}")
            t1, k, reader = self.events.get(timeout=left)
            if k == "error":
                raise RuntimeError("Monitor reported an error")
            if k == want and (target is None or reader is target):
                return (t1 - t0) / 1e6

    def close(self) -> None:
        self.monitor.close()


class PyscardTracking:
    """pcscd seen through pyscard: "gsc" = a thread blocked in
    SCardGetStatusChange, "monitor" = pyscard's CardMonitor observer."""

    def __init__(self, worker, how: str, external: Optional[Callable[[str], int]] = None):
        self.worker = worker
        self.how = how
        self.external = external  # vpcd: the parent moves the card
        self.name = ("pcscd SCardGetStatusChange" if how == "gsc"
                     else "pcscd + pyscard CardMonitor")
        if how == "monitor":
            worker.call("monitor_start")

    def sample(self, kind: str, timeout: float = 10.0) -> float:
        cmd = "gsc_event" if self.how == "gsc" else "monitor_event"
        if self.external is None:
            r = self.worker.call(cmd, read_timeout=timeout + 5, kind=kind, trigger="ctl",
                                 timeout=timeout)
            return (r["t1"] - r["t0"]) / 1e6
        self.worker.send(cmd, kind=kind, trigger="external", timeout=timeout)
        ready = self.worker._read(timeout + 5)
        assert ready.get("ready")
        t0 = self.external(kind)
        r = self.worker._read(timeout + 5)
        return (r["t1"] - t0) / 1e6

    def close(self) -> None:
        if self.how == "monitor":
            self.worker.call("monitor_stop")


def run_interleaved(trackers, rounds: int, pause: float = 0.02, jitter: float = 0.02,
                    seed: int = 1) -> dict:
    """{tracker name: {"insert": [ms...], "remove": [ms...]}}, one insert and
    one removal per tracker per round, trackers rotating.  A random pause
    (pause + U(0, jitter) s) before every event keeps it out of phase with
    any polling period (use a jitter of at least one period)."""
    rng = random.Random(seed)
    out = {t.name: {k: [] for k in KINDS} for t in trackers}
    for r in range(rounds):
        k = r % len(trackers)
        for t in list(trackers[k:]) + list(trackers[:k]):
            for kind in KINDS:
                time.sleep(pause + rng.uniform(0, jitter))
                out[t.name][kind].append(t.sample(kind))
    return out


# ---- several clients armed for the same event ----------------------------------
#
# Through a resource manager every client waits in the same daemon, which wakes
# its waiting clients one after the other (pcscd: in the order they began to
# wait) on the same CPUs: a client's latency depends on how many others wait
# with it and on its place among them.  Comparing clients fairly therefore
# means arming them all for one event, rotating the order they arm in, moving
# the card from a process none of them runs in, and timing each from that
# one t0.  An "armed" path has arm(kind) (returns once it waits), seen(timeout)
# -> t1 (time.monotonic_ns()) and disarm() (after the event).


class DeviceArmed:
    """scardio Device: IS_PRESENT / IS_ABSENT submitted, a user thread
    blocked in Operation.wait() (the tracking lane waits in the driver).
    The user thread is made once: a thread made per event would start each
    wait with the scheduler's penalty for new threads, which the clients it
    is compared with do not pay.

    A tracking request completes on an event of its kind since the device's
    last request ended: other clients' card moves since then would end it at
    once, so a request for the current level (answered at once) first brings
    the device up to date."""

    name = "scardio Device IS_PRESENT/IS_ABSENT"

    def __init__(self, dev, settle: float = 0.002):
        self.dev = dev
        self.settle = settle
        self._ops: "queue.Queue" = queue.Queue()
        self._seen: "queue.Queue" = queue.Queue()
        self._op = None
        self._thread = threading.Thread(target=self._wait_loop, daemon=True)
        self._thread.start()

    def _wait_loop(self) -> None:
        while True:
            op, timeout = self._ops.get()
            if op is None:
                return
            try:
                op.wait(timeout)
                self._seen.put(("t1", time.monotonic_ns()))
            except Exception as exc:  # reported by seen()
                self._seen.put(("error", exc))

    def arm(self, kind: str, timeout: float = 10.0) -> None:
        from scardio import IOCTL
        now, want = ((IOCTL.IS_ABSENT, IOCTL.IS_PRESENT) if kind == "insert"
                     else (IOCTL.IS_PRESENT, IOCTL.IS_ABSENT))
        self.dev.submit(now).wait(timeout)
        op = self._op = self.dev.submit(want)
        self._ops.put((op, timeout))
        time.sleep(self.settle)  # the lane is inside SCardGetStatusChange by now
        if op.done():
            raise RuntimeError(f"{kind}: tracking request completed before the event")

    def seen(self, timeout: float = 10.0) -> int:
        assert self._op is not None
        try:
            what, value = self._seen.get(timeout=timeout + 1)
        except queue.Empty:
            what, value = "error", "no completion"
        if what != "t1":
            self._op.cancel()
            raise RuntimeError(f"event not seen: {value}")
        return value

    def disarm(self) -> None:
        pass

    def close(self) -> None:
        self._ops.put((None, 0))
        self._thread.join(5)


class SyncDeviceArmed(DeviceArmed):
    """scardio Device: IS_PRESENT / IS_ABSENT as a synchronous
    Device.ioctl() on the waiting thread (no lane, no hand-off: the floor
    of DeviceArmed, bought by blocking the caller)."""

    name = "scardio Device.ioctl IS_PRESENT/IS_ABSENT (synchronous)"

    def _levels(self, kind: str) -> tuple:
        """(the level the reader is at, the one the event brings) for an
        event of `kind`, as _wait_for takes them."""
        from scardio import IOCTL
        return ((IOCTL.IS_ABSENT, IOCTL.IS_PRESENT) if kind == "insert"
                else (IOCTL.IS_PRESENT, IOCTL.IS_ABSENT))

    def _wait_for(self, level, timeout: float) -> None:
        self.dev.ioctl(level)  # cannot time out: closing the device ends it

    def _wait_loop(self) -> None:
        while True:
            level, timeout = self._ops.get()
            if level is None:
                return
            try:
                self._wait_for(level, timeout)
                self._seen.put(("t1", time.monotonic_ns()))
            except Exception as exc:  # reported by seen()
                self._seen.put(("error", exc))

    def arm(self, kind: str, timeout: float = 10.0) -> None:
        now, want = self._levels(kind)
        self._wait_for(now, timeout)
        self._ops.put((want, timeout))
        time.sleep(self.settle)

    def seen(self, timeout: float = 10.0) -> int:
        try:
            what, value = self._seen.get(timeout=timeout + 1)
        except queue.Empty:
            what, value = "error", "no completion"
        if what != "t1":
            # A synchronous call cannot be cancelled from here: closing the
            # device ends it.
            raise RuntimeError(f"event not seen: {value}")
        return value


class ReaderArmed(SyncDeviceArmed):
    """scardio Reader: wait_for_card() / wait_for_removal() on the waiting
    thread, the public API (where the backend can bound its tracking wait,
    PC/SC on pcsc-lite, the wait runs in that thread, in slices: no lane,
    no hand-off).  As for DeviceArmed, a wait for the current level
    (answered at once) first brings the reader up to date."""

    name = "scardio Reader.wait_for_card()/wait_for_removal()"

    def __init__(self, reader, settle: float = 0.002):
        self.reader = reader
        super().__init__(reader.device, settle)

    def _levels(self, kind: str) -> tuple:
        return (False, True) if kind == "insert" else (True, False)

    def _wait_for(self, present, timeout: float) -> None:
        if present:
            self.reader.wait_for_card(timeout)
        else:
            self.reader.wait_for_removal(timeout)


class HarvestArmed(DeviceArmed):
    """The floor of the Monitor's harvesting thread: IS_PRESENT / IS_ABSENT
    submitted, a thread of its own woken the way that thread is, then
    Device.harvest(), and nothing else (no dispatch, no CardEvent, no
    callback).  how = "waitable": blocked in epoll on Device.waitable()
    (the Monitor's wait: a descriptor, so that one thread serves many
    readers and an event loop can wait on it too); "blocking": blocked in
    Device.harvest(timeout) (the queue's own condition variable, one
    device only).  Any harvester of that kind pays this much."""

    def __init__(self, dev, how: str = "waitable", settle: float = 0.002):
        import select
        if how not in ("waitable", "blocking"):
            raise ValueError(f"how must be waitable or blocking, not {how!r}")
        self.how = how
        self.name = ("harvest woken through Device.waitable() (epoll)" if how == "waitable"
                     else "harvest blocked in Device.harvest(timeout)")
        self._poll = None
        if how == "waitable":
            self._poll = select.epoll()
            self._poll.register(dev.waitable(), select.EPOLLIN)
        super().__init__(dev, settle)

    def _wait_loop(self) -> None:
        harvest = self.dev.harvest
        poll = self._poll.poll if self._poll is not None else None
        while True:
            op, timeout = self._ops.get()
            if op is None:
                return
            deadline = time.monotonic() + timeout
            try:
                while True:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise RuntimeError("no completion")
                    if poll is not None:
                        poll(left)
                        done = harvest()
                    else:
                        done = harvest(left)
                    if op in done:
                        break
                self._seen.put(("t1", time.monotonic_ns()))
            except Exception as exc:  # reported by seen()
                self._seen.put(("error", exc))

    def close(self) -> None:
        super().close()
        if self._poll is not None:
            self._poll.close()


class MonitorArmed:
    """scardio.Monitor with a callback: the reader is added to the monitor
    to arm (its tracking starts) and removed after the event, so that it
    waits only for the events it is measured on."""

    name = "scardio Monitor callback"

    def __init__(self, reader, settle: float = 0.005):
        from scardio import Monitor
        self.reader = reader
        self.settle = settle
        self.events: "queue.Queue" = queue.Queue()
        self.monitor = Monitor([], callback=self._cb)
        self._want = ""

    def _cb(self, ev) -> None:
        self.events.put((time.monotonic_ns(), ev.kind))

    def arm(self, kind: str, timeout: float = 10.0) -> None:
        self._want = "arrival" if kind == "insert" else "departure"
        self.monitor.add(self.reader, timeout)
        # A card already in reports its arrival at once, and card moves
        # since the reader's last request an arrival and a departure: not
        # the event.  Wait until the monitor is quiet.
        while True:
            try:
                self.events.get(timeout=self.settle)
            except queue.Empty:
                return

    def seen(self, timeout: float = 10.0) -> int:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError(f"Monitor did not report {self._want}")
            t1, kind = self.events.get(timeout=left)
            if kind == "error":
                raise RuntimeError("Monitor reported an error")
            if kind == self._want:
                return t1

    def disarm(self) -> None:
        self.monitor.remove(self.reader)

    def close(self) -> None:
        self.monitor.close()


class PyscardArmed:
    """A pyscard thread blocked in SCardGetStatusChange (the pyscard
    worker's gsc_event, the card moved by someone else)."""

    name = "pyscard SCardGetStatusChange"

    def __init__(self, worker):
        self.worker = worker

    def arm(self, kind: str, timeout: float = 10.0) -> None:
        self.worker.send("gsc_event", kind=kind, trigger="external", timeout=timeout,
                         settle=0.002)
        if not self.worker._read(timeout + 5).get("ready"):
            raise RuntimeError("pyscard worker not armed")

    def seen(self, timeout: float = 10.0) -> int:
        return int(self.worker._read(timeout + 5)["t1"])

    def disarm(self) -> None:
        pass

    def close(self) -> None:
        pass


def run_together(armed, trigger: Callable[[str], int], rounds: int, pause: float = 0.02,
                 jitter: float = 0.02, asleep: float = 0.01, phase: float = 0.005,
                 seed: int = 1) -> dict:
    """{path name: {"insert": [ms...], "remove": [ms...]}}: every path of
    `armed` armed for each event, in an order rotating from round to round
    (over a multiple of len(armed) rounds each path takes each place
    equally often, for each kind), the card moved by `trigger(kind)`
    (returns t0, or a function returning it, called once every path has
    seen the event: reading the mover's answer then keeps that work off
    the CPUs at event time) after a random pause (pause +
    U(0, jitter) s before arming; `asleep` + U(0, phase) s after the last
    path armed: no fixed phase to any period, and every path has waited
    about as long, which matters on a loaded CPU: the scheduler favours a
    thread that slept longer), every path timed from that t0."""
    rng = random.Random(seed)
    out = {p.name: {k: [] for k in KINDS} for p in armed}
    for r in range(rounds):
        k = r % len(armed)
        order = list(armed[k:]) + list(armed[:k])
        for kind in KINDS:
            time.sleep(pause + rng.uniform(0, jitter))
            for p in order:
                p.arm(kind)
            time.sleep(asleep + rng.uniform(0, phase))
            t0 = trigger(kind)
            t1 = [p.seen() for p in order]
            if callable(t0):
                t0 = t0()  # the mover's answer, read once every path has seen the event
            for p, t in zip(order, t1):
                if t < t0:
                    raise RuntimeError(f"{p.name}: {kind} seen before the card moved")
                out[p.name][kind].append((t - t0) / 1e6)
            for p in order:
                p.disarm()
    return out
