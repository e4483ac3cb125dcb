"""A vpcd test card in its own process (so that every path under comparison
talks to the same card implementation, and no path shares its interpreter
with the card).  Wraps tests/vpcd_card.py's VirtualCard; one JSON command
per stdin line, one JSON answer per stdout line:

  insert  -> {"t0": ns}   t0 = CLOCK_MONOTONIC just before connecting
  remove  -> {"t0": ns}   t0 = just before closing the connection
  quit

Usage: python card_proc.py PORT
"""

from __future__ import annotations

import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "tests"))

from vpcd_card import VirtualCard  # noqa: E402


def reply(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def main() -> int:
    card = VirtualCard(port=int(sys.argv[1], 0), connect_timeout=15.0)
    reply({"ready": True})
    try:
        for line in sys.stdin:
            cmd = line.strip()
            try:
                if cmd == "insert":
                    t0 = time.monotonic_ns()
                    card.insert()
                    reply({"t0": t0})
                elif cmd == "remove":
                    t0 = time.monotonic_ns()
                    card.remove()
                    reply({"t0": t0})
                elif cmd == "quit":
                    break
                elif cmd:
                    reply({"error": f"unknown command {cmd}"})
            except Exception as exc:
                reply({"error": f"{type(exc).__name__}: {exc}"})
    finally:
        card.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
