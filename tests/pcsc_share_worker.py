"""One PC/SC client process of tests/pcsc_share_scenarios.py: opens the
reader it is given through pcscd and runs the commands its stdin sends, one
per line, answering each with one JSON line (timestamps are
time.monotonic(), CLOCK_MONOTONIC: one clock for every process here).

commands: connect SHARE|default | transmit N TAG [START [UNTIL]] |
          begin [TIMEOUT] | end | disconnect | remove | insert | state | quit
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from typing import Any, Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from scardio import errors, pcsc  # noqa: E402
from scardio.card import Card, Transaction  # noqa: E402
from scardio.sim import SimControl  # noqa: E402


def describe(exc: BaseException) -> dict[str, Any]:
    return {"type": type(exc).__name__, "message": str(exc),
            "mro": [c.__name__ for c in type(exc).__mro__]}


def main() -> None:
    reader = pcsc.open_reader(sys.argv[1], power_down_timeout=None)
    card: Optional[Card] = None
    txn: Optional[Transaction] = None
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        cmd, *args = line.split()
        out: dict[str, Any] = {"cmd": cmd}
        try:
            if cmd == "connect":
                card = reader.connect(share=None if args[0] == "default" else args[0],
                                      timeout=20)
                out["share"] = card.share
            elif cmd == "transmit":
                assert card is not None
                n, tag = int(args[0]), int(args[1])
                if len(args) > 2:  # a common start time: all clients go together
                    time.sleep(max(0.0, float(args[2]) - time.monotonic()))
                until = float(args[3]) if len(args) > 3 else 0.0  # and go on until then
                apdus = []
                i = 0
                while i < n or time.monotonic() < until:
                    payload = bytes([tag, i & 0xFF])
                    i += 1
                    t0 = time.monotonic()
                    r = card.transmit(b"\x80\xEE\x00\x00\x02" + payload + b"\x02")
                    t1 = time.monotonic()
                    apdus.append([t0, t1, r.data == payload and r.sw == 0x9000])
                out["apdus"] = apdus
            elif cmd == "begin":
                assert card is not None
                txn = card.transaction(float(args[0]) if args else None)
                out["t0"] = time.monotonic()
                try:
                    txn.__enter__()
                except BaseException:
                    txn = None
                    out["t1"] = time.monotonic()
                    raise
                out["t1"] = time.monotonic()
            elif cmd == "end":
                assert txn is not None
                out["t0"] = time.monotonic()
                t, txn = txn, None
                t.__exit__(None, None, None)
                out["t1"] = time.monotonic()
            elif cmd == "disconnect":
                assert card is not None
                card.disconnect()
            elif cmd == "remove":
                SimControl(reader.device).remove()
            elif cmd == "insert":
                SimControl(reader.device).insert()
            elif cmd == "state":
                out["state"] = reader.state().name
                out["in_transaction"] = reader.session.transaction is not None
            elif cmd == "quit":
                break
            out["ok"] = True
        except errors.ScardioError as exc:
            out["ok"] = False
            out["error"] = describe(exc)
        except BaseException:  # noqa: BLE001 - reported to the scenario
            out["ok"] = False
            out["error"] = {"type": "crash", "message": traceback.format_exc()}
        print(json.dumps(out), flush=True)
    reader.close()


if __name__ == "__main__":
    main()
