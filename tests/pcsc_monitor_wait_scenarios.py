"""Scenarios of a Monitor waiting in the PC/SC driver itself (one
SCardGetStatusChange over all its readers on the monitor's own thread, a
``TrackingSet``) against a real pcscd, run by
tests/test_pcsc_monitor_wait.py inside a private mount and network
namespace, never on their own.  pcscd serves three simulated readers from a
reader.conf and, for the vanishing reader, USB readers plugged in and out
through its libudev hotplug (tests/usb_hotplug.py).  Each scenario reports
a JSON-able dict or its failure; the report is the last line of standard
output.

usage: pcsc_monitor_wait_scenarios.py WORKDIR SIM_LIBRARY HOTPLUG(0|1)
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from scardio import IOCTL, Monitor, errors, pcsc  # noqa: E402
from scardio import _core  # noqa: E402
from scardio.monitor import ARRIVAL, DEPARTURE, READER_REMOVED  # noqa: E402
from scardio.sim import SimControl  # noqa: E402

from pcsc_scenarios import describe, error_of, wait_until  # noqa: E402
from pcscd_namespace import Pcscd, run_scenarios  # noqa: E402

SIM_NAME = "scardio sim"
USB_NAMES = ["scardio usb gone"]
SIMS = 3


def tasks() -> int:
    """Threads of this process, C threads (the core's lanes) included."""
    return len(os.listdir("/proc/self/task"))


def fds() -> int:
    return len(os.listdir("/proc/self/fd"))


class Events:
    """A Monitor callback recording (kind, reader name); `hold` makes the
    next callback block until released (the monitor thread busy)."""

    def __init__(self) -> None:
        self.got: list[tuple[str, str]] = []
        self.cv = threading.Condition()
        self.hold: Optional[threading.Event] = None
        self.held = threading.Event()
        self.threads: set[int] = set()

    def __call__(self, ev: Any) -> None:
        self.threads.add(threading.get_ident())
        hold, self.hold = self.hold, None
        if hold is not None:
            self.held.set()
            hold.wait(10)
        with self.cv:
            self.got.append((ev.kind, ev.reader.name))
            self.cv.notify_all()

    def wait_for(self, n: int, timeout: float = 5.0) -> list[tuple[str, str]]:
        end = time.monotonic() + timeout
        with self.cv:
            while len(self.got) < n and time.monotonic() < end:
                self.cv.wait(0.05)
            return list(self.got)

    def quiet(self, seconds: float = 0.3) -> list[tuple[str, str]]:
        """The events once none came for `seconds`."""
        while True:
            n = len(self.got)
            time.sleep(seconds)
            if len(self.got) == n:
                return list(self.got)


class Scenarios:
    def __init__(self, work: Path, sim: str, hotplug: bool) -> None:
        self.work = work
        conf = work / "reader.conf.d"
        conf.mkdir()
        for i in range(SIMS):
            (conf / f"sim{i}").write_text(
                f'FRIENDLYNAME "{SIM_NAME} {i}"\nDEVICENAME sim:{i}\n'
                f"LIBPATH {sim}\nCHANNELID {i}\n")
        self.usb = None
        env = None
        if hotplug:
            from usb_hotplug import UsbHotplug
            self.usb = UsbHotplug(work, sim, USB_NAMES)
            self.usb.setup()
            env = self.usb.pcscd_env()
        self.pcscd = Pcscd(conf, work / "pcscd.log", env=env)
        self.names: list[str] = wait_until(lambda: self._sims(), 20) or []
        assert len(self.names) == SIMS, self.names

    def _sims(self) -> Optional[list[str]]:
        try:
            names = sorted(n for n in pcsc.list_readers() if n.startswith(SIM_NAME))
        except errors.ScardioError:
            return None
        return names if len(names) == SIMS else None

    def _open(self) -> list[Any]:
        readers = [pcsc.open_reader(n, power_down_timeout=None) for n in self.names]
        for r in readers:
            SimControl(r.device).remove()
        for r in readers:
            wait_until(lambda r=r: r.state().name == "ABSENT")
        return readers

    # ---- scenarios -------------------------------------------------------
    def several(self) -> dict[str, Any]:
        """Arrivals and removals on three readers under one Monitor, in
        order, from the monitor's own thread, with no lane thread."""
        out: dict[str, Any] = {}
        readers = self._open()
        sims = [SimControl(r.device) for r in readers]
        rec = Events()
        before = tasks()
        with Monitor(readers, callback=rec) as mon:
            time.sleep(0.3)
            out["threads_started"] = tasks() - before  # the monitor's own only
            out["on_set"] = mon._on_set
            expect: list[tuple[str, str]] = []
            for order in ([0, 1, 2], [2, 0, 1]):
                for i in order:
                    sims[i].insert()
                    expect.append((ARRIVAL, readers[i].name))
                    rec.wait_for(len(expect))
                for i in order:
                    sims[i].remove()
                    expect.append((DEPARTURE, readers[i].name))
                    rec.wait_for(len(expect))
            # All three at once: one event each, in some order.
            for s in sims:
                s.insert()
            together = rec.wait_for(len(expect) + 3)[len(expect):]
            out["together"] = sorted(together) == sorted((ARRIVAL, r.name) for r in readers)
            for s in sims:
                s.remove()
            rec.wait_for(len(expect) + 6)
            out["got"] = rec.quiet()[:len(expect)] == expect
            out["count"] = len(rec.got) == len(expect) + 6
            out["threads_during"] = tasks() - before
            out["callback_threads"] = len(rec.threads)
            out["callback_on_monitor"] = rec.threads == {mon._thread.ident}
            # The reader's own wait follows the monitor (its slot is held).
            threading.Timer(0.2, sims[1].insert).start()
            t = time.monotonic()
            readers[1].wait_for_card(timeout=5)
            out["wait_for_card_s"] = time.monotonic() - t
            out["busy"] = describe(error_of(
                lambda: readers[1].device.submit(IOCTL.IS_ABSENT).wait(2)))
            sims[1].remove()
            rec.wait_for(len(rec.got) + 1)
        for r in readers:
            r.close()
        return out

    def between_waits(self) -> dict[str, Any]:
        """A card removed and put back (and one put in and taken out) while
        the monitor thread is busy in a callback, i.e. between two of its
        waits: both events are reported, in order, and nothing else."""
        readers = self._open()
        sims = [SimControl(r.device) for r in readers]
        sims[1].insert()
        rec = Events()
        with Monitor(readers, callback=rec):
            got = rec.wait_for(1)
            assert got == [(ARRIVAL, readers[1].name)], got
            release = threading.Event()
            rec.hold = release
            sims[0].insert()  # its arrival's callback blocks the thread
            assert rec.held.wait(5)
            sims[1].remove()  # gone and back while nobody waits
            time.sleep(0.05)
            sims[1].insert()
            sims[2].insert()  # in and out likewise
            time.sleep(0.05)
            sims[2].remove()
            time.sleep(0.2)
            release.set()
            events = rec.quiet(0.5)
        for s in sims:
            s.remove()
        for r in readers:
            r.close()
        return {"events": [list(e) for e in events],
                "names": [r.name for r in readers]}

    def announced(self) -> dict[str, Any]:
        """The tracking set announces each event itself (a Herald made when
        the request went out), before the tracker's bookkeeping: the
        callbacks see the reader's presence already updated and, on a
        departure, the connected card already dropped; a callback that
        raises keeps the event from no other; the queue gets the same
        event; seq and timestamp are the event's own."""
        readers = self._open()
        reader = readers[0]
        sim = SimControl(reader.device)
        seen: list[dict[str, Any]] = []
        card_of: dict[str, Any] = {}

        def broken(ev: Any) -> None:
            raise RuntimeError("a broken callback")

        def record(ev: Any) -> None:
            card = card_of.get("card")
            seen.append({"event": ev, "present": ev.reader.present,
                         "card_connected": None if card is None else card.connected})

        out: dict[str, Any] = {}
        with Monitor([reader], callback=broken, queue_events=True) as mon:
            mon.add_callback(record)
            time.sleep(0.2)
            tracker = mon._trackers[id(reader)]
            out["on_set"] = mon._on_set
            out["heralded"] = isinstance(tracker._told, _core.Herald)
            t0 = time.monotonic()
            sim.insert()
            first = mon.get(5)
            card_of["card"] = reader.connect()
            sim.remove()
            second = mon.get(5)
            t1 = time.monotonic()
            out["kinds"] = [first.kind, second.kind]
            out["same_objects"] = [e["event"] for e in seen] == [first, second]
            out["present_in_callbacks"] = [e["present"] for e in seen]
            out["card_in_departure_callback"] = seen[1]["card_connected"]
            out["seq"] = [first.seq, second.seq]
            out["timestamps_in_order"] = t0 <= first.timestamp <= second.timestamp <= t1
            out["still_heralded"] = isinstance(tracker._told, _core.Herald)
        for r in readers:
            r.close()
        return out

    def add_remove(self) -> dict[str, Any]:
        """Readers added and removed (from another thread) while the monitor
        waits: prompt, and the slot is free once remove returns."""
        out: dict[str, Any] = {}
        readers = self._open()
        sims = [SimControl(r.device) for r in readers]
        rec = Events()
        with Monitor([readers[0]], callback=rec) as mon:
            time.sleep(0.3)  # in the driver's wait now
            t = time.monotonic()
            mon.add(readers[1])
            out["add_s"] = time.monotonic() - t
            sims[1].insert()
            out["added_event"] = rec.wait_for(1) == [(ARRIVAL, readers[1].name)]
            time.sleep(0.2)
            t = time.monotonic()
            mon.remove(readers[0])
            out["remove_s"] = time.monotonic() - t
            # Its one tracking slot is free: the reader's own request runs.
            op = readers[0].device.submit(IOCTL.IS_PRESENT)
            sims[0].insert()
            out["own_request"] = describe(error_of(lambda: op.wait(5)))
            sims[0].remove()
            time.sleep(0.2)
            out["removed_quiet"] = all(name != readers[0].name for _, name in rec.got)
            mon.add(readers[2])
            sims[2].insert()
            out["third"] = rec.wait_for(2)[1:] == [(ARRIVAL, readers[2].name)]
            out["tracked"] = sorted(r.name for r in mon.readers)
            out["on_set"] = mon._on_set
        for s in sims:
            s.remove()
        for r in readers:
            r.close()
        return out

    def close_waiting(self) -> dict[str, Any]:
        """Closing a reader, its device, and the monitor while the monitor
        waits in the driver: each bounded, the others still reported."""
        out: dict[str, Any] = {}
        readers = self._open()
        sims = [SimControl(r.device) for r in readers[1:]]
        rec = Events()
        mon = Monitor(readers, callback=rec)
        time.sleep(0.3)
        t = time.monotonic()
        readers[0].close()
        out["reader_close_s"] = time.monotonic() - t
        out["tracked_after"] = sorted(r.name for r in mon.readers)
        sims[0].insert()
        out["still_reported"] = rec.wait_for(1) == [(ARRIVAL, readers[1].name)]
        t = time.monotonic()
        readers[2].device.close()  # under the monitor, no close hook
        out["device_close_s"] = time.monotonic() - t
        sims[0].remove()
        out["after_device_close"] = rec.wait_for(2)[1:] == [(DEPARTURE, readers[1].name)]
        out["errors"] = [e for e in rec.got if e[0] == "error"]
        t = time.monotonic()
        mon.close()
        out["monitor_close_s"] = time.monotonic() - t
        out["thread_alive"] = mon._thread is not None and mon._thread.is_alive()
        readers[1].close()
        readers[2].close()
        return out

    def fallback(self) -> dict[str, Any]:
        """A reader opened directly (its driver in this process, no such
        wait) beside them: the monitor goes back to the queue, and to the
        driver's wait once it is removed; no event is lost on either switch."""
        from scardio.reader import Reader
        from scardio.sim import open_device
        out: dict[str, Any] = {}
        readers = self._open()
        sims = [SimControl(r.device) for r in readers]
        direct = Reader(open_device(7), power_down_timeout=None)
        rec = Events()
        with Monitor(readers[:2], callback=rec) as mon:
            time.sleep(0.2)
            out["on_set_first"] = mon._on_set
            sims[0].insert()
            rec.wait_for(1)
            mon.add(direct)
            out["on_set_mixed"] = mon._on_set
            sims[1].insert()
            sims[0].remove()
            SimControl(direct.device).insert()
            rec.wait_for(4)
            mon.remove(direct)
            out["on_set_again"] = mon._on_set
            sims[1].remove()
            rec.wait_for(5)
            out["events"] = [list(e) for e in rec.quiet()]
        direct.close()
        for r in readers:
            r.close()
        out["names"] = [r.name for r in readers] + [direct.name]
        return out

    def leaks(self) -> dict[str, Any]:
        """Monitors made and closed over and over (events flowing, readers
        added and removed): no thread, descriptor or context left."""
        readers = self._open()
        sims = [SimControl(r.device) for r in readers]

        def cycle(i: int) -> None:
            rec = Events()
            mon = Monitor(readers[:2], callback=rec)
            mon.add(readers[2])
            sims[i % 3].insert()
            rec.wait_for(1)
            mon.remove(readers[i % 3])
            sims[i % 3].remove()
            mon.close()
        cycle(0)  # what is made once per process (the client library's own)
        base_tasks, base_fds = tasks(), fds()
        trail: list[int] = []
        for i in range(1, 21):
            cycle(i)
            trail.append(fds() - base_fds)
        time.sleep(0.3)
        out = {"tasks": tasks() - base_tasks, "fds": fds() - base_fds, "trail": trail}
        for r in readers:
            r.close()
        return out

    def forked(self) -> dict[str, Any]:
        """fork() under a monitor waiting in the driver: the child cannot
        use the inherited set (typed error) and leaves its context alone,
        so the parent's monitor goes on reporting."""
        readers = self._open()
        sims = [SimControl(r.device) for r in readers]
        rec = Events()
        out: dict[str, Any] = {}
        with Monitor(readers, callback=rec) as mon:
            time.sleep(0.3)
            tracking_set = mon._set
            r, w = os.pipe()
            pid = os.fork()
            if pid == 0:  # the child: report and leave at once
                os.close(r)
                err = error_of(lambda: tracking_set.dispatch(0))
                woke = error_of(tracking_set.wake)
                del tracking_set
                os.write(w, json.dumps([describe(err)["type"], describe(woke)["type"]]).encode())
                os._exit(0)
            os.close(w)
            child = json.loads(os.read(r, 1000).decode() or "null")
            os.close(r)
            os.waitpid(pid, 0)
            out["child"] = child
            sims[2].insert()
            out["parent_after"] = rec.wait_for(1) == [(ARRIVAL, readers[2].name)]
            sims[2].remove()
            rec.wait_for(2)
        for rd in readers:
            rd.close()
        return out

    def vanish(self) -> dict[str, Any]:
        """A reader unplugged while the monitor waits on it with others:
        its tracking ends with an error event (no reader list), the
        others still reported; with a reader list, its removal."""
        assert self.usb is not None
        out: dict[str, Any] = {}
        readers = self._open()
        name = self.usb.plug(1)
        if not wait_until(lambda: name in pcsc.list_readers(), 10):
            raise AssertionError(f"pcscd did not add {name!r}")
        gone = pcsc.open_reader(name, power_down_timeout=None)
        rec = Events()
        with Monitor(readers + [gone], callback=rec) as mon:
            time.sleep(0.3)
            out["on_set"] = mon._on_set
            t = time.monotonic()
            self.usb.unplug(1)
            got = rec.wait_for(1, 10)
            out["gone_s"] = time.monotonic() - t
            out["first"] = [list(e) for e in got[:1]]
            out["error_type"] = None
            SimControl(readers[0].device).insert()
            out["others"] = (ARRIVAL, readers[0].name) in rec.wait_for(2)
            out["tracked"] = sorted(r.name for r in mon.readers)
        SimControl(readers[0].device).remove()
        gone.close()
        # With a reader list: its removal, not an error.
        name = self.usb.plug(1)
        wait_until(lambda: name in pcsc.list_readers(), 10)
        rec = Events()
        with Monitor(callback=rec, reader_list=pcsc.ReaderListWatch()) as mon:
            time.sleep(0.5)
            out["listed_on_set"] = mon._on_set
            self.usb.unplug(1)
            wait_until(lambda: any(k == READER_REMOVED for k, _ in rec.got), 10)
            time.sleep(0.3)
            out["listed"] = [list(e) for e in rec.got]
        for r in readers:
            r.close()
        out["name"] = name
        return out


def main() -> None:
    work, sim, hotplug = sys.argv[1:4]
    s = Scenarios(Path(work), sim, hotplug == "1")
    try:
        names = ["several", "between_waits", "announced", "add_remove", "close_waiting",
                 "fallback", "leaks", "forked"]
        if hotplug == "1":
            names.append("vanish")
        only = os.environ.get("SCARDIO_SCENARIOS")
        if only:
            names = [n for n in names if n in only.split(",")]
        report = run_scenarios(s, names)
    finally:
        s.pcscd.stop()
    print(json.dumps(report, default=str))


if __name__ == "__main__":
    main()
