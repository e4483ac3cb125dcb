"""scardio over PC/SC in a child process of its own, the counterpart of
pyscard_worker.py: the same JSON line protocol, the timing loop run here.

It connects with ``timeout=None`` on a reader without a power-down timer,
so that scardio starts no thread and the process stays single-threaded like
the pyscard worker's: the reference that shows what scardio's client costs
against pyscard's, apart from the threads of a bounded connect and of the
power-down timer.  Commands (``{"cmd": ...}``):

  open      match, apdus (name -> hex)  open the PC/SC reader named `match`
  connect                               Reader.connect(timeout=None), after
                                        letting go of an earlier card
  run       op, n                       -> {"ns": total, "threads": count}
                                        for n transmits of APDU `op`
  quit
"""

from __future__ import annotations

import os
import sys
import time

from line_protocol import serve


class Worker:
    def __init__(self) -> None:
        self.reader = None
        self.card = None
        self.apdus: dict = {}

    def cmd_open(self, match: str, apdus: dict) -> dict:
        from scardio import pcsc
        # No power-down timer either: its thread would make the process
        # multi-threaded at the first disconnect(LEAVE).
        self.reader = pcsc.open_reader(match, power_down_timeout=None)
        self.apdus = {k: bytes.fromhex(v) for k, v in apdus.items()}
        return {"reader": match}

    def cmd_connect(self) -> dict:
        from scardio import Disposition, errors
        if self.card is not None:  # stale after the card moved
            try:
                self.card.disconnect(Disposition.LEAVE)
            except errors.ScardioError:
                pass
            self.card = None
        self.card = self.reader.connect(timeout=None)
        return {"threads": _threads()}

    def cmd_run(self, op: str, n: int) -> dict:
        clock = time.perf_counter_ns
        transmit, apdu = self.card.transmit, self.apdus[op]
        rng = range(n)
        t0 = clock()
        for _ in rng:
            transmit(apdu)
        t1 = clock()
        return {"ns": t1 - t0, "threads": _threads()}


def _threads() -> int:
    return len(os.listdir("/proc/self/task"))


def main() -> int:
    w = Worker()
    serve(w, {"executable": sys.executable})
    if w.reader is not None:
        w.reader.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
