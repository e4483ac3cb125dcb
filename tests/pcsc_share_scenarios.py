"""Sharing and transactions between processes through a real pcscd (run by
tests/test_pcsc_share.py inside a private mount and network namespace,
never on its own).

pcscd serves the simulated reader; each client is a process of its own
(tests/pcsc_share_worker.py) steered line by line, so the scenario decides
the order of events and every client reports its own timestamps.  The
report (one JSON document) is the last line of standard output.

usage: pcsc_share_scenarios.py WORKDIR SIM_LIBRARY
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from scardio import pcsc  # noqa: E402
from scardio.sim import SimControl  # noqa: E402
from pcscd_namespace import run_scenarios  # noqa: E402
from pcsc_scenarios import serve_sim_reader  # noqa: E402

HERE = Path(__file__).resolve().parent
WORKER = HERE / "pcsc_share_worker.py"
SIM_NAME = "scardio sim"


class Client:
    """A worker process: send() a command, reply() reads its answer."""

    def __init__(self, reader: str) -> None:
        self.proc = subprocess.Popen([sys.executable, str(WORKER), reader],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.reply()["ready"]

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def reply(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise AssertionError(f"worker exited ({self.proc.wait()})")
        got: dict[str, Any] = json.loads(line)
        return got

    def __call__(self, line: str) -> dict[str, Any]:
        self.send(line)
        return self.reply()

    def quit(self) -> None:
        if self.proc.poll() is None:
            try:
                self.send("quit")
                self.proc.wait(20)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()


def wait_until(what: Callable[[], Any], seconds: float = 20.0) -> Any:
    end = time.monotonic() + seconds
    while True:
        value = what()
        if value or time.monotonic() > end:
            return value
        time.sleep(0.05)


class Scenarios:
    def __init__(self, work: Path, sim: str) -> None:
        self.pcscd, self.reader = serve_sim_reader(work, sim, SIM_NAME)
        with pcsc.open_device(self.reader) as dev:
            SimControl(dev).insert()
        self.clients: list[Client] = []

    def client(self) -> Client:
        c = Client(self.reader)
        self.clients.append(c)
        return c

    def stop(self) -> None:
        for c in self.clients:
            c.quit()
        self.pcscd.stop()

    # ---- scenarios -------------------------------------------------------
    def three_shared(self) -> dict[str, Any]:
        """Three processes connected shared, transmitting at the same time."""
        clients = [self.client() for _ in range(3)]
        shares = [c("connect shared") for c in clients]
        start = time.monotonic() + 0.5
        for tag, c in enumerate(clients, 1):
            c.send(f"transmit 60 {tag} {start} {start + 0.5}")
        runs = [c.reply() for c in clients]
        for c in clients:
            c("disconnect")
            c.quit()
        return {"connects": shares, "runs": runs}

    def exclusive(self) -> dict[str, Any]:
        """An exclusive connection refused to the others, granted once
        released; one opened reader connects exclusive, then shared."""
        a, b, c = self.client(), self.client(), self.client()
        out: dict[str, Any] = {"a_exclusive": a("connect exclusive")}
        out["a_transmit"] = a("transmit 2 1")
        out["b_shared_refused"] = b("connect shared")
        out["c_exclusive_refused"] = c("connect exclusive")
        out["a_disconnect"] = a("disconnect")
        # a's reader keeps its handle (no power-down timer) but no longer
        # exclusively: the others get in at once.
        out["b_shared_after"] = b("connect shared")
        out["b_transmit"] = b("transmit 2 2")
        out["a_shared_now"] = a("connect shared")
        out["c_exclusive_while_shared"] = c("connect exclusive")
        # A LEAVE disconnect keeps the handle while the power-down timer
        # runs (none here): closing the readers lets every client go.
        a.quit()
        b.quit()
        out["c_exclusive_granted"] = c("connect exclusive")
        out["c_transmit"] = c("transmit 2 3")
        c("disconnect")
        c.quit()
        return out

    def transaction(self) -> dict[str, Any]:
        """A transaction in one process keeps another's APDUs out until it
        ends: B's first APDU is sent while A holds the transaction and
        completes only after A's end began."""
        a, b = self.client(), self.client()
        # b asks for nothing: the mode its reader was opened with (shared).
        out: dict[str, Any] = {"connects": [a("connect shared"), b("connect default")]}
        out["begin"] = a("begin")
        b.send("transmit 5 2")  # blocks in SCardTransmit until a ends
        time.sleep(0.3)  # let b's first APDU reach pcscd; the asserts use timestamps
        out["a_inside"] = a("transmit 10 1")
        time.sleep(0.2)
        out["end"] = a("end")
        out["b_run"] = b.reply()
        out["a_state"] = a("state")
        # After its end, another client's transaction is granted.
        out["b_begin"] = b("begin")
        out["b_end"] = b("end")
        # A begin with a timeout gives up while another client holds one,
        # and leaves nothing behind once that one ends.
        out["a_again"] = a("begin")
        out["b_begin_timeout"] = b("begin 0.3")
        out["a_end_again"] = a("end")
        out["b_after_timeout"] = b("transmit 2 2")
        out["b_begin_after"] = b("begin 5")
        out["b_end_after"] = b("end")
        a("disconnect")
        b("disconnect")
        a.quit()
        b.quit()
        return out

    def removed_inside(self) -> dict[str, Any]:
        """The card leaves inside a transaction: the no-card error, and the
        transaction ends (the other client is not locked out)."""
        a, b = self.client(), self.client()
        out: dict[str, Any] = {"connects": [a("connect shared"), b("connect shared")]}
        out["begin"] = a("begin")
        out["remove"] = a("remove")
        wait_until(lambda: a("state")["state"] == "ABSENT", 10)
        out["transmit"] = a("transmit 1 1")
        out["end"] = a("end")
        out["a_state"] = a("state")
        out["insert"] = a("insert")
        wait_until(lambda: a("state")["state"] != "ABSENT", 10)
        # b's handle went with the card it was connected to.
        out["b_stale"] = b("transmit 1 2")
        out["b_reconnect"] = b("connect shared")
        out["b_transmit"] = b("transmit 2 2")
        out["b_begin"] = b("begin")
        out["b_end"] = b("end")
        b("disconnect")
        a.quit()
        b.quit()
        return out


def main() -> None:
    work, sim = sys.argv[1:3]
    s = Scenarios(Path(work), sim)
    try:
        report = run_scenarios(s, ["three_shared", "exclusive", "transaction",
                                   "removed_inside"])
    finally:
        s.stop()
    print(json.dumps(report, default=str))

if __name__ == "__main__":
    main()
