"""Scenarios of PC/SC calls bounded in their caller's thread (the watchdog
of native/pcsc/pcsc_backend.c) against a real pcscd, which the scenarios
stop (SIGSTOP) to hang every call; run by tests/test_pcsc_bound.py inside a
private mount and network namespace, never on its own.  The report is the
last line of standard output.

usage: pcsc_bound_scenarios.py WORKDIR SIM_LIBRARY
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from scardio import IOCTL, Disposition, pcsc  # noqa: E402
from scardio.sim import SimControl  # noqa: E402

from pcscd_namespace import run_scenarios  # noqa: E402
from pcsc_scenarios import serve_sim_reader, wait_until  # noqa: E402

SIM_NAME = "scardio sim"
ECHO4 = "80 EE 00 00 04 CAFEBABE 04"
PCSCD_SOCKET = "/run/pcscd/pcscd.comm"


def tasks() -> int:
    return len(os.listdir("/proc/self/task"))


def pcscd_sockets() -> int:
    """This process's sockets connected to pcscd (one per PC/SC context)."""
    n = 0
    for name in os.listdir("/proc/self/fd"):
        try:
            s = socket.socket(fileno=os.dup(int(name)))
        except OSError:
            continue
        try:
            if s.family == socket.AF_UNIX and s.getpeername() == PCSCD_SOCKET:
                n += 1
        except OSError:
            pass
        finally:
            s.close()
    return n


def timed(call: Callable[[], Any]) -> dict[str, Any]:
    t0 = time.monotonic()
    try:
        call()
        exc: Optional[BaseException] = None
    except BaseException as e:  # reported
        exc = e
    return {"seconds": time.monotonic() - t0, "type": type(exc).__name__ if exc else None,
            "message": str(exc) if exc else None}


class Scenarios:
    def __init__(self, work: Path, sim: str):
        self.pcscd, self.reader_name = serve_sim_reader(work, sim, SIM_NAME)

    def _hang(self) -> None:
        """Stop pcscd, and wait until every thread of it has stopped (a
        group stop is not done when kill() returns)."""
        os.kill(self.pcscd.pid, signal.SIGSTOP)
        wait_until(self._stopped, 5)

    def _stopped(self) -> bool:
        task_dir = f"/proc/{self.pcscd.pid}/task"
        for tid in os.listdir(task_dir):
            try:
                with open(f"{task_dir}/{tid}/stat") as f:
                    state = f.read().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if state not in ("T", "t"):
                return False
        return True

    def _resume(self) -> None:
        os.kill(self.pcscd.pid, signal.SIGCONT)

    # ---- scenarios -------------------------------------------------------
    def hung_daemon(self) -> dict[str, Any]:
        """A bounded IOCTL (on one device) and a bounded connect (on
        another) while pcscd answers nothing: TimeoutError at the deadline,
        in the caller's thread (no lane thread starts), the context's
        socket let go; afterwards both readers work again."""
        out: dict[str, Any] = {}
        one = pcsc.open_reader(self.reader_name, power_down_timeout=None)
        two = pcsc.open_reader(self.reader_name, power_down_timeout=None)
        try:
            SimControl(one.device).insert()
            wait_until(lambda: one.state().name == "SWALLOWED")
            for reader in (one, two):  # bounded calls that start the watchdog
                reader.connect(timeout=5).disconnect(Disposition.LEAVE)
            out["tasks_before"] = tasks()
            out["sockets_before"] = pcscd_sockets()
            self._hang()
            try:
                out["ioctl"] = timed(lambda: one.device.ioctl_on_lane(
                    IOCTL.GET_STATE, b"", 4, timeout=0.3))
                out["sockets_after_ioctl"] = pcscd_sockets()
                out["connect"] = timed(lambda: two.connect(timeout=0.3))
                out["sockets_after_connect"] = pcscd_sockets()
                out["tasks_hung"] = tasks()
            finally:
                self._resume()
            for i, reader in enumerate((one, two)):
                card = reader.connect(timeout=5)  # a fresh context (on the lane)
                out[f"echo{i}"] = card.transmit(ECHO4).data.hex()
                card.disconnect(Disposition.LEAVE)
                again = reader.connect(timeout=5)  # bounded inline again
                out[f"again{i}"] = again.transmit(ECHO4).data.hex()
                again.disconnect(Disposition.LEAVE)
                out[f"state{i}"] = reader.device.ioctl_on_lane(IOCTL.GET_STATE, b"", 4,
                                                               timeout=5).hex()
            out["sockets_recovered"] = pcscd_sockets()
        finally:
            one.close()
            two.close()
        out["sockets_closed"] = pcscd_sockets()
        return out

    def close_while_hung(self) -> dict[str, Any]:
        """close() of a reader whose bounded call is stuck in pcscd
        (another thread): the call is aborted and close returns at once."""
        out: dict[str, Any] = {}
        reader = pcsc.open_reader(self.reader_name, power_down_timeout=None)
        SimControl(reader.device).insert()
        wait_until(lambda: reader.state().name == "SWALLOWED")
        got: dict[str, Any] = {}
        self._hang()
        try:
            th = threading.Thread(target=lambda: got.update(timed(
                lambda: reader.device.ioctl_on_lane(IOCTL.GET_STATE, b"", 4, timeout=30))))
            th.start()
            time.sleep(0.3)
            t0 = time.monotonic()
            reader.device.close()
            out["close_seconds"] = time.monotonic() - t0
            th.join(10)
            out["call"] = got
            out["call_returned"] = not th.is_alive()
        finally:
            self._resume()
        reader.close()
        return out

    def many_short_bounds(self) -> dict[str, Any]:
        """Many bounded calls with short deadlines, from two threads on two
        devices: none of them is cut short (the watchdog never shuts a
        socket of a call that has finished)."""
        failures: list[str] = []
        counts = [0, 0]

        def hammer(i: int) -> None:
            with pcsc.open_reader(self.reader_name, power_down_timeout=None) as reader:
                try:
                    for n in range(1500):
                        timeout = (0.05, 0.1, 0.2)[n % 3]
                        card = reader.connect(timeout=timeout)
                        reader.device.ioctl_on_lane(IOCTL.GET_STATE, b"", 4, timeout=timeout)
                        card.disconnect(Disposition.LEAVE)
                        counts[i] += 1
                        if n % 100 == 0:
                            time.sleep(0.06)  # let deadlines pass with nothing in flight
                except BaseException as exc:  # reported
                    failures.append(f"{type(exc).__name__}: {exc}")

        with pcsc.open_reader(self.reader_name) as r:
            SimControl(r.device).insert()
            wait_until(lambda: r.state().name == "SWALLOWED")
        sockets = pcscd_sockets()
        threads = [threading.Thread(target=hammer, args=(i,)) for i in range(2)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(120)
        return {"failures": failures, "counts": counts, "sockets_before": sockets,
                "sockets_after": pcscd_sockets()}

    def ambiguous_contexts(self) -> dict[str, Any]:
        """Devices opened while another PC/SC client of the process (the
        client library called directly) makes contexts without pause: a
        device whose context's socket cannot be told apart bounds its
        calls on the lane (a lane thread starts), the others in the
        caller's thread; all their calls succeed."""
        stop = threading.Event()
        made = [0]
        lib = ctypes.CDLL("libpcsclite.so.1")
        lib.SCardEstablishContext.argtypes = [ctypes.c_ulong, ctypes.c_void_p,
                                              ctypes.c_void_p, ctypes.POINTER(ctypes.c_long)]
        lib.SCardReleaseContext.argtypes = [ctypes.c_long]

        def churn() -> None:
            ctx = ctypes.c_long()
            while not stop.is_set():
                if lib.SCardEstablishContext(2, None, None, ctypes.byref(ctx)) == 0:
                    lib.SCardReleaseContext(ctx.value)
                    made[0] += 1

        th = threading.Thread(target=churn)
        th.start()
        failures: list[str] = []
        lane = inline = 0
        try:
            wait_until(lambda: made[0] > 0)
            for _ in range(60):
                base = tasks()
                with pcsc.open_reader(self.reader_name, power_down_timeout=None) as reader:
                    try:
                        reader.connect(timeout=2).disconnect(Disposition.LEAVE)
                        reader.device.ioctl_on_lane(IOCTL.GET_STATE, b"", 4, timeout=2)
                    except BaseException as exc:  # reported
                        failures.append(f"{type(exc).__name__}: {exc}")
                    if tasks() > base:
                        lane += 1
                    else:
                        inline += 1
        finally:
            stop.set()
            th.join(30)
        return {"failures": failures, "contexts_made": made[0], "lane": lane,
                "inline": inline}


def main() -> None:
    work, sim = sys.argv[1:3]
    s = Scenarios(Path(work), sim)
    try:
        report = run_scenarios(s, ["hung_daemon", "close_while_hung", "many_short_bounds",
                                   "ambiguous_contexts"])
    finally:
        s.pcscd.stop()
    print(json.dumps(report, default=str))


if __name__ == "__main__":
    main()
