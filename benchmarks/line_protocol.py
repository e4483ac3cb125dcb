"""The worker side of the benchmarks' JSON line protocol (pcsc_peer's
workers): one command object per line on stdin, one answer per line on
stdout.  Standard library only, as the workers must import nothing else
of the project's."""

from __future__ import annotations

import json
import sys
from typing import Any


def reply(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def serve(worker: Any, ready: dict) -> None:
    """Answer `ready`, then run ``worker.cmd_<cmd>(**args)`` per command
    line until "quit" or the end of stdin; an exception is answered as
    {"error": ...} (the parent raises it)."""
    reply(dict(ready, ready=True))
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        msg = json.loads(line)
        cmd = msg.pop("cmd")
        if cmd == "quit":
            break
        try:
            reply(getattr(worker, "cmd_" + cmd)(**msg))
        except Exception as exc:
            reply({"error": f"{type(exc).__name__}: {exc}"})
