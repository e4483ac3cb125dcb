"""Scenarios of Reader.wait_for_card() / wait_for_removal() over PC/SC, whose
tracking wait runs in the caller's thread on pcsc-lite (Device.wait_tracking,
in slices), against a real pcscd serving the simulated reader; run by
tests/test_pcsc_wait.py inside a private mount and network namespace, never
on its own.  The report is the last line of standard output.

usage: pcsc_wait_scenarios.py WORKDIR SIM_LIBRARY
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from scardio import IOCTL, Monitor, pcsc  # noqa: E402
from scardio.sim import SimControl  # noqa: E402

from pcsc_bound_scenarios import pcscd_sockets, tasks  # noqa: E402
from pcsc_scenarios import describe, error_of, serve_sim_reader, wait_until  # noqa: E402
from pcscd_namespace import run_scenarios  # noqa: E402

SIM_NAME = "scardio sim"
#: pcscd's own look at the simulated reader after a card move (it is told at
#: once; this only keeps a loaded machine from racing the next step).
SETTLE = 0.3

#: A child waiting without timeout for a card that never comes, to be sent
#: SIGINT: "READY" once it waits, then what the wait raised and whether the
#: reader still works (a timed wait ends in TimeoutError, not busy).
CTRL_C_CHILD = r'''
import sys, time
from scardio import errors, pcsc
reader = pcsc.open_reader(sys.argv[1], power_down_timeout=None)
reader.wait_for_removal(5)
print("READY", flush=True)
try:
    reader.wait_for_card()
    print("RETURNED", flush=True)
except KeyboardInterrupt:
    print("INTERRUPTED", flush=True)
try:
    reader.wait_for_card(0.2)
    print("AFTER returned", flush=True)
except errors.ScardioError as exc:
    print("AFTER", type(exc).__name__, flush=True)
reader.close()
'''


def threaded(call: Callable[[], Any]) -> tuple[threading.Thread, dict[str, Any]]:
    """Run call() on a thread of its own: the thread, and a dict that gets
    the outcome ("error": what it raised, None; "t1": when it ended)."""
    got: dict[str, Any] = {}

    def run() -> None:
        got["error"] = describe(error_of(call))
        got["t1"] = time.monotonic()
    th = threading.Thread(target=run, daemon=True)
    th.start()
    return th, got


class Scenarios:
    def __init__(self, work: Path, sim: str):
        self.pcscd, self.reader_name = serve_sim_reader(work, sim, SIM_NAME)

    def _open(self) -> Any:
        return pcsc.open_reader(self.reader_name, power_down_timeout=None)

    # ---- scenarios -------------------------------------------------------
    def in_callers_thread(self) -> dict[str, Any]:
        """Arrival and removal seen by waits in this thread: no thread of
        the process's is started for them (the tracking lane stays down),
        and a timed-out wait raises the reader's TimeoutError."""
        out: dict[str, Any] = {}
        with self._open() as reader:
            sim = SimControl(reader.device)
            sim.remove()
            time.sleep(SETTLE)
            # a bounded call in this thread starts the process's watchdog
            reader.device.ioctl_on_lane(IOCTL.GET_STATE, b"", 4, timeout=5)
            out["tasks_before"] = tasks()
            reader.wait_for_removal(5)  # at once
            t = time.monotonic()
            out["timeout"] = describe(error_of(lambda: reader.wait_for_card(0.3)))
            out["timeout_s"] = time.monotonic() - t
            # the card moves from another thread, which has ended before
            # the threads are counted
            for want in ("card", "removal"):
                mover = threading.Timer(0.3, sim.insert if want == "card" else sim.remove)
                mover.start()
                t = time.monotonic()
                (reader.wait_for_card if want == "card" else reader.wait_for_removal)(5)
                out[f"{want}_s"] = time.monotonic() - t
                mover.join()
            # (a mover thread may still be leaving the kernel after its
            # join; a lane thread would stay until close)
            base = out["tasks_before"]
            out["tasks_after"] = wait_until(lambda: tasks() <= base and tasks(), 2) or tasks()
        return out

    def no_event_lost(self) -> dict[str, Any]:
        """A card that left and came back (a swap: pcscd sees a removal and
        an arrival) completes wait_for_removal whether it came between two
        waits, the first of which timed out, or during one wait, at any
        phase of its slices."""
        out: dict[str, Any] = {"during": []}
        with self._open() as reader:
            sim = SimControl(reader.device)
            sim.insert()
            time.sleep(SETTLE)
            # the reader's first request: nothing completed on it before
            out["first"] = describe(error_of(lambda: reader.wait_for_removal(0.25)))
            sim.insert()  # over the card in: it left and came back
            time.sleep(SETTLE)
            t = time.monotonic()
            out["between"] = describe(error_of(lambda: reader.wait_for_removal(2)))
            out["between_s"] = time.monotonic() - t
            rng = random.Random(13)
            for _ in range(12):
                reader.wait_for_card(5)  # level: at once
                swapped: list[float] = []

                def swap() -> None:
                    swapped.append(time.monotonic())
                    sim.insert()
                # the wait in the main thread (0.1 s slices), the swap at
                # any phase of a slice
                mover = threading.Timer(0.05 + rng.uniform(0, 0.4), swap)
                mover.start()
                err = describe(error_of(lambda: reader.wait_for_removal(5)))
                t1 = time.monotonic()
                mover.join()
                out["during"].append({"error": err, "s": t1 - swapped[0] if swapped else None})
        return out

    def busy_and_monitor(self) -> dict[str, Any]:
        """The one tracking request per reader: another one pending makes
        the wait DeviceBusyError, and a request made while the wait runs
        completes DEVICE_BUSY; with a Monitor attached the wait follows the
        Monitor's reports (its own request is never made)."""
        out: dict[str, Any] = {}
        with self._open() as reader:
            sim = SimControl(reader.device)
            sim.remove()
            time.sleep(SETTLE)
            other = reader.device.submit(IOCTL.IS_PRESENT)
            out["other_pending"] = describe(error_of(lambda: reader.wait_for_card(1)))
            other.cancel()
            error_of(lambda: other.wait(2))
            th, got = threaded(lambda: reader.wait_for_card(5))
            time.sleep(0.3)
            second = reader.device.submit(IOCTL.IS_PRESENT)
            out["submitted_during"] = describe(error_of(lambda: second.wait(2)))
            out["second_wait_during"] = describe(error_of(lambda: reader.wait_for_card(1)))
            sim.insert()
            th.join(6)
            out["first_wait"] = got.get("error")
            sim.remove()
            time.sleep(SETTLE)
            events: list[str] = []
            with Monitor([reader], callback=lambda ev: events.append(ev.kind)):
                base = tasks()
                out["tracked_by"] = reader.session.tracked_by
                out["monitored_timeout"] = describe(error_of(lambda: reader.wait_for_card(0.2)))
                mover = threading.Timer(0.3, sim.insert)
                mover.start()
                out["monitored_wait"] = describe(error_of(lambda: reader.wait_for_card(5)))
                mover.join()
                out["monitor_events"] = list(events)
                out["monitor_tasks_added"] = (wait_until(lambda: tasks() <= base and tasks(), 2)
                                              or tasks()) - base
            # the monitor let its request go: the reader's own waits again
            th, got = threaded(lambda: reader.wait_for_removal(5))
            time.sleep(0.2)
            sim.remove()
            th.join(6)
            out["after_monitor"] = got.get("error")
        return out

    def cancel_and_close(self) -> dict[str, Any]:
        """cancel_all() and close() from another thread end a wait without
        timeout at once (CancelledError, as on the tracking lane); the
        reader works after the cancel; nothing leaks."""
        out: dict[str, Any] = {}
        sockets = pcscd_sockets()
        reader = self._open()
        sim = SimControl(reader.device)
        sim.remove()
        time.sleep(SETTLE)
        for _ in range(2):
            th, got = threaded(reader.wait_for_card)
            time.sleep(0.35)
            t = time.monotonic()
            reader.device.cancel_all()
            th.join(5)
            out.setdefault("cancel", []).append(
                {"error": got.get("error"), "s": got["t1"] - t if "t1" in got else None})
        mover = threading.Timer(0.3, sim.insert)
        mover.start()
        out["after_cancel"] = describe(error_of(lambda: reader.wait_for_card(5)))
        mover.join()
        th, got = threaded(reader.wait_for_removal)
        time.sleep(0.35)
        t = time.monotonic()
        reader.close()
        out["close_s"] = time.monotonic() - t
        th.join(5)
        out["closed"] = {"error": got.get("error"), "s": got["t1"] - t if "t1" in got else None}
        out["after_close"] = describe(error_of(lambda: reader.wait_for_card(1)))
        out["sockets_before"] = sockets
        out["sockets_after"] = pcscd_sockets()
        return out

    def ctrl_c(self) -> dict[str, Any]:
        """SIGINT to a process blocked in wait_for_card() without timeout:
        KeyboardInterrupt within a slice, the reader still usable."""
        with self._open() as reader:
            SimControl(reader.device).remove()
        time.sleep(SETTLE)
        child = subprocess.Popen([sys.executable, "-c", CTRL_C_CHILD, self.reader_name],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        out: dict[str, Any] = {}
        try:
            assert child.stdout is not None
            out["ready"] = child.stdout.readline().strip()
            time.sleep(0.5)  # several slices into the wait
            t = time.monotonic()
            child.send_signal(signal.SIGINT)
            out["interrupted"] = child.stdout.readline().strip()
            out["interrupt_s"] = time.monotonic() - t
            out["after"] = child.stdout.readline().strip()
            child.wait(10)
            out["returncode"] = child.returncode
            assert child.stderr is not None
            out["stderr"] = child.stderr.read()[-2000:]
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
        return out

    def hung_daemon(self) -> dict[str, Any]:
        """pcscd stopped (SIGSTOP) during a wait with a timeout, in the main
        thread (0.1 s slices) and in another (one slice): the waiter gets
        its TimeoutError at its timeout, or the watchdog's 0.1 s after it
        (pcsc-lite's own timeout does not cover its waits for the daemon);
        once the daemon answers again the reader works."""
        out: dict[str, Any] = {}
        with self._open() as reader:
            sim = SimControl(reader.device)
            for where in ("main", "thread"):
                sim.remove()
                time.sleep(SETTLE)
                reader.wait_for_removal(5)
                stopper = threading.Timer(0.25, os.kill, (self.pcscd.pid, signal.SIGSTOP))
                t0 = time.monotonic()
                stopper.start()
                try:
                    if where == "main":
                        got = {"error": describe(error_of(lambda: reader.wait_for_card(0.8)))}
                        got["t1"] = time.monotonic()
                    else:
                        th, got = threaded(lambda: reader.wait_for_card(0.8))
                        th.join(10)
                    stopper.join()
                    out[where] = got.get("error")
                    out[f"{where}_s"] = got["t1"] - t0 if "t1" in got else None
                finally:
                    stopper.join()
                    os.kill(self.pcscd.pid, signal.SIGCONT)
                sim.insert()
                out[f"{where}_after"] = describe(error_of(lambda: reader.wait_for_card(5)))
        return out

    def wait_after_a_stuck_one(self) -> dict[str, Any]:
        """pcscd stopped under a main-thread wait, which goes on on the
        tracking lane once the watchdog has broken its context and times
        out there, its cancel still in the stopped daemon; a second wait
        begins while pcscd is still stopped, and the daemon resumes 0.3 s
        later: the second wait waits for the first request to let go (not
        DeviceBusyError) and then sees the card."""
        out: dict[str, Any] = {}
        with self._open() as reader:
            sim = SimControl(reader.device)
            sim.remove()
            time.sleep(SETTLE)
            reader.wait_for_removal(5)
            stopper = threading.Timer(0.25, os.kill, (self.pcscd.pid, signal.SIGSTOP))
            stopper.start()
            try:
                out["first"] = describe(error_of(lambda: reader.wait_for_card(0.8)))
                stopper.join()
                resume = threading.Timer(0.3, os.kill, (self.pcscd.pid, signal.SIGCONT))
                resume.start()
                t0 = time.monotonic()
                out["second"] = describe(error_of(lambda: reader.wait_for_removal(5)))
                out["second_s"] = time.monotonic() - t0
                resume.join()
            finally:
                stopper.join()
                os.kill(self.pcscd.pid, signal.SIGCONT)
            sim.insert()
            out["after"] = describe(error_of(lambda: reader.wait_for_card(5)))
        return out

    def daemon_gone(self) -> dict[str, Any]:
        """pcscd stops under two waits, one in its caller's thread (the
        Reader's) and one on the tracking lane (an overlapped request): the
        same typed error for both.  Stops pcscd: the last scenario."""
        out: dict[str, Any] = {}
        mine = self._open()
        lane = pcsc.open_device(self.reader_name)
        SimControl(lane).insert()
        time.sleep(SETTLE)
        th, got = threaded(lambda: mine.wait_for_removal(10))
        pending = lane.submit(IOCTL.IS_ABSENT)
        time.sleep(0.3)
        t = time.monotonic()
        self.pcscd.stop()
        th.join(10)
        out["inline"] = got.get("error")
        out["inline_s"] = got["t1"] - t if "t1" in got else None
        out["lane"] = describe(error_of(lambda: pending.wait(10)))
        mine.close()
        lane.close()
        return out


def main() -> None:
    work, sim = sys.argv[1:3]
    s = Scenarios(Path(work), sim)
    try:
        report = run_scenarios(s, ["in_callers_thread", "no_event_lost", "busy_and_monitor",
                                   "cancel_and_close", "ctrl_c", "hung_daemon",
                                   "wait_after_a_stuck_one", "daemon_gone"])
    finally:
        s.pcscd.stop()
    print(json.dumps(report, default=str))


if __name__ == "__main__":
    main()
