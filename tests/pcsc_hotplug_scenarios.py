"""Reader hotplug scenarios against a real pcscd (run by
tests/test_pcsc_hotplug.py inside a private mount and network namespace,
never on its own): USB readers are plugged into and out of the running
pcscd through its libudev hotplug (tests/usb_hotplug.py), beside the
simulated reader of a reader.conf.  Each scenario reports a JSON-able dict
or its failure; the report is the last line of standard output.

usage: pcsc_hotplug_scenarios.py WORKDIR SIM_LIBRARY
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from scardio import IOCTL, Monitor, errors, pcsc  # noqa: E402
from scardio._core import PcscReaderWatch  # noqa: E402
from scardio.monitor import ARRIVAL, READER_ADDED, READER_REMOVED  # noqa: E402
from scardio.sim import SimControl  # noqa: E402

from pcsc_scenarios import describe, error_of, wait_until  # noqa: E402
from pcscd_namespace import Pcscd, run_scenarios  # noqa: E402
from usb_hotplug import UsbHotplug  # noqa: E402

SIM_NAME = "scardio sim"
USB_NAMES = ["scardio usb watch", "scardio usb monitor", "scardio usb vanish",
             "scardio usb vanish busy", "scardio usb scan", "scardio usb vanish wait"]
ECHO4 = "80 EE 00 00 04 CAFEBABE 04"


def readers() -> list[str]:
    try:
        return pcsc.list_readers()
    except errors.ScardioError:
        return []


class Scenarios:
    def __init__(self, work: Path, sim: str) -> None:
        self.work = work
        self.usb = UsbHotplug(work, sim, USB_NAMES)
        self.usb.setup()
        conf = work / "reader.conf.d"
        conf.mkdir()
        (conf / "sim").write_text(f'FRIENDLYNAME "{SIM_NAME}"\nDEVICENAME sim:0\n'
                                  f"LIBPATH {sim}\nCHANNELID 0\n")
        self.pcscd = Pcscd(conf, work / "pcscd.log", args=["-d"], env=self.usb.pcscd_env())
        names = wait_until(lambda: readers(), 20) or []
        self.sim_reader = next(n for n in names if n.startswith(SIM_NAME))

    def plug(self, n: int) -> str:
        name = self.usb.plug(n)
        if not wait_until(lambda: name in readers(), 10):
            raise AssertionError(f"pcscd did not add {name!r}: {readers()}")
        return name

    # ---- scenarios -------------------------------------------------------
    def watch(self) -> dict[str, Any]:
        """The core's reader-list watch: a change wakes it, and so does wake()."""
        out: dict[str, Any] = {"before": readers()}
        with PcscReaderWatch() as w:
            known = len(out["before"])
            got: dict[str, Any] = {}

            def waiter() -> None:
                t = time.monotonic()
                got["count"] = w.wait(10, known)
                got["s"] = time.monotonic() - t
            th = threading.Thread(target=waiter)
            th.start()
            time.sleep(0.3)
            t = time.monotonic()
            name = self.usb.plug(1)
            th.join(15)
            out["plugged"] = name
            out["count"] = got.get("count")
            out["latency_s"] = time.monotonic() - t
            out["after"] = readers()
            self.usb.unplug(1)
            # A wait that nothing changes: wake() ends it promptly.
            wait_until(lambda: name not in readers(), 10)
            th = threading.Thread(target=lambda: got.update(woken=w.wait(10, known)))
            th.start()
            time.sleep(0.3)
            t = time.monotonic()
            w.wake()
            th.join(5)
            out["woken"] = got.get("woken", "hung")
            out["wake_s"] = time.monotonic() - t
            # Does this pcsc-lite compare against the count the caller knew?
            t = time.monotonic()
            out["stale_known"] = w.wait(1.5, known + 1)
            out["stale_known_s"] = time.monotonic() - t
        out["closed_wait"] = describe(error_of(lambda: w.wait(0)))
        return out

    def monitor(self) -> dict[str, Any]:
        """A Monitor over the reader list: a second reader comes and goes."""
        events: list[Any] = []
        lock = threading.Condition()

        def record(ev: Any) -> None:
            with lock:
                events.append(ev)
                lock.notify_all()

        def wait_for(kind: str, n: int = 1) -> Any:
            with lock:
                lock.wait_for(lambda: sum(e.kind == kind for e in events) >= n, 10)
                return [e for e in events if e.kind == kind][n - 1:n] or [None]
        out: dict[str, Any] = {}
        with Monitor(callback=record, reader_list=pcsc.ReaderListWatch()) as mon:
            out["start"] = sorted(r.name for r in mon.readers)
            t = time.monotonic()
            name = self.usb.plug(2)
            added = wait_for(READER_ADDED)[0]
            out["added_s"] = time.monotonic() - t
            out["added"] = added.reader.name if added else None
            out["tracked"] = sorted(r.name for r in mon.readers)
            SimControl(added.reader.device).insert()
            arrival = wait_for(ARRIVAL)[0]
            out["arrival"] = arrival.reader.name if arrival else None
            t = time.monotonic()
            self.usb.unplug(2)
            removed = wait_for(READER_REMOVED)[0]
            out["removed_s"] = time.monotonic() - t
            out["removed"] = removed.reader.name if removed else None
            time.sleep(0.5)  # anything else would show now
            out["kinds"] = [e.kind for e in events]
            out["after"] = sorted(r.name for r in mon.readers)
            out["reader_closed"] = added.reader.closed
            out["plugged"] = name
            # Plugged in again: a new reader, tracked again.
            self.usb.plug(2)
            again = wait_for(READER_ADDED, 2)[0]
            out["again"] = again.reader.name if again else None
            self.usb.unplug(2)
            wait_for(READER_REMOVED, 2)
        return out

    def vanish(self) -> dict[str, Any]:
        """Readers unplugged under calls: typed errors, nothing hangs, and a
        Monitor's tracking of the reader ends with its removal."""
        out: dict[str, Any] = {}
        empty_name = self.plug(3)
        busy_name = self.plug(4)
        empty = pcsc.open_reader(empty_name, power_down_timeout=None)
        busy = pcsc.open_reader(busy_name, power_down_timeout=None)
        SimControl(busy.device).insert()
        wait_until(lambda: busy.state().name == "SWALLOWED")
        card = busy.connect(timeout=5)
        out["before"] = card.transmit(ECHO4).sw
        pending = empty.device.submit(IOCTL.IS_PRESENT)  # no card: stays pending
        card_wait = busy.device.submit(IOCTL.IS_ABSENT)  # card in: stays pending
        mon_events: list[str] = []
        # A Monitor of every reader tracks both through handles of its own.
        mon = Monitor(callback=lambda ev: mon_events.append(ev.kind),
                      reader_list=pcsc.ReaderListWatch())
        wait_until(lambda: ARRIVAL in mon_events, 10)  # the busy reader's card
        time.sleep(0.3)
        t = time.monotonic()
        self.usb.unplug(3)
        self.usb.unplug(4)
        out["pending"] = describe(error_of(lambda: pending.wait(10)))
        out["pending_s"] = time.monotonic() - t
        out["card_wait"] = describe(error_of(lambda: card_wait.wait(10)))
        t = time.monotonic()
        out["transmit"] = describe(error_of(lambda: card.transmit(ECHO4)))
        out["state"] = describe(error_of(busy.state))
        out["connect"] = describe(error_of(lambda: empty.connect(timeout=2)))
        out["calls_s"] = time.monotonic() - t
        out["open_gone"] = describe(error_of(lambda: pcsc.open_device(empty_name)))
        wait_until(lambda: READER_REMOVED in mon_events, 10)
        time.sleep(0.3)
        out["monitor"] = list(mon_events)
        out["monitor_tracked"] = [r.name for r in mon.readers]
        out["monitor_readers"] = [r.name for r in mon.readers]
        t = time.monotonic()
        mon.close()
        empty.close()
        busy.close()
        out["close_s"] = time.monotonic() - t
        return out

    def vanish_wait(self) -> dict[str, Any]:
        """A reader unplugged under Reader.wait_for_card() (its wait in the
        caller's thread) and under an IS_PRESENT on the tracking lane (a
        device of its own on the same reader): the same typed error."""
        out: dict[str, Any] = {}
        name = self.plug(6)
        reader = pcsc.open_reader(name, power_down_timeout=None)
        lane = pcsc.open_device(name)
        got: dict[str, Any] = {}

        def wait() -> None:
            got["error"] = describe(error_of(lambda: reader.wait_for_card(10)))
            got["t1"] = time.monotonic()
        th = threading.Thread(target=wait, daemon=True)
        th.start()
        pending = lane.submit(IOCTL.IS_PRESENT)  # no card: both stay pending
        time.sleep(0.3)
        t = time.monotonic()
        self.usb.unplug(6)
        th.join(10)
        out["inline"] = got.get("error")
        out["inline_s"] = got["t1"] - t if "t1" in got else None
        out["lane"] = describe(error_of(lambda: pending.wait(10)))
        reader.close()
        lane.close()
        return out

    def scan_cli(self) -> dict[str, Any]:
        """``scardio scan`` (a subprocess) sees a reader come and go."""
        proc = subprocess.Popen([sys.executable, "-m", "scardio", "scan", "--timeout", "60",
                                 "--count", "3", "--power-down-timeout", "0"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        lines: list[str] = []
        seen = threading.Condition()

        def read() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                with seen:
                    lines.append(line.rstrip("\n"))
                    seen.notify_all()
        reader = threading.Thread(target=read, daemon=True)
        reader.start()

        def wait_line(pattern: str) -> bool:
            with seen:
                return seen.wait_for(lambda: any(re.search(pattern, ln) for ln in lines), 30)
        try:
            ready = wait_line(r"^scanning ")  # printed once the monitor runs
            name = self.plug(5)
            with pcsc.open_device(name) as dev:
                SimControl(dev).insert()
            arrived = wait_line(r"\barrival\b")
            self.usb.unplug(5)
            proc.wait(30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            reader.join(5)
        assert proc.stderr is not None
        err = proc.stderr.read()
        events = [m.groups() for m in
                  (re.match(r"^\S+ \S+\s+(reader-added|reader-removed|arrival|departure|error)"
                            r"\s+(.*)$", ln) for ln in lines) if m]
        return {"first": lines[0] if lines else "", "lines": lines, "events": events,
                "plugged": name, "ready": ready, "arrived": arrived,
                "rc": proc.returncode, "stderr": err[-2000:]}


def main() -> None:
    work, sim = sys.argv[1:3]
    report: dict[str, Any] = {}
    s = Scenarios(Path(work), sim)
    try:
        report.update(run_scenarios(s, ["watch", "monitor", "vanish", "vanish_wait",
                                        "scan_cli"]))
    finally:
        s.pcscd.stop()
        try:
            report["pcscd_log_tail"] = (Path(work) / "pcscd.log").read_text(
                errors="replace")[-3000:]
        except OSError:
            pass
    print(json.dumps(report, default=str))

if __name__ == "__main__":
    main()
