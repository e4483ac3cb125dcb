"""What the commands print: lines or JSON on stdout, notes and --trace on
stderr, and an ATR as every command shows it."""

from __future__ import annotations

import json
import threading
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from typing import IO, Any, Optional, Sequence

    from ..reader import TraceRecord

__all__ = ["Output", "atr_lines"]


class Output:
    """One command's output: --json or lines, each write whole (the monitor's
    threads write too)."""

    def __init__(self, args: argparse.Namespace, stdout: IO[str], stderr: IO[str]) -> None:
        self.json = bool(args.json)
        self.stdout, self.stderr = stdout, stderr
        self._lock = threading.Lock()
        self.t0 = time.monotonic()

    def line(self, text: str = "") -> None:
        with self._lock:
            print(text, file=self.stdout, flush=True)

    def doc(self, obj: Any) -> None:
        with self._lock:
            print(json.dumps(obj, indent=2, default=str), file=self.stdout, flush=True)

    def jsonl(self, obj: Any) -> None:
        with self._lock:
            print(json.dumps(obj, default=str), file=self.stdout, flush=True)

    def err(self, text: str) -> None:
        with self._lock:
            print(text, file=self.stderr, flush=True)

    def ms(self, t: float) -> float:
        return round((t - self.t0) * 1000.0, 3)

    def trace(self, rec: TraceRecord) -> None:
        if self.json:
            d = rec.as_dict()
            d["t_ms"] = self.ms(rec.timestamp)
            del d["t"]
            with self._lock:
                print(json.dumps({"trace": d}), file=self.stderr, flush=True)
            return
        self.err(f"[trace {self.ms(rec.timestamp):10.3f} ms] {rec.name:<14} "
                 f"{rec.input_text()} {rec.output_text()} {rec.status} "
                 f"{rec.duration_us:.1f} us{' (overlapped)' if rec.overlapped else ''}")

def atr_lines(atr: bytes, description: Optional[Sequence[str]], error: Optional[str],
              label: str = "ATR: ", pad: str = "") -> list[str]:
    """An ATR as every command prints it: its bytes after `label`, then
    `description` (``ATR.describe()``, whose first line is the bytes again)
    or why it is not a valid ATR (`error`), each line after `pad`."""
    lines = [f"{label}{atr.hex(' ').upper()} ({len(atr)} bytes)"]
    if description is not None:
        fields = list(description)
        if fields and fields[0].startswith("ATR:"):
            fields = fields[1:]  # the bytes again: printed just above
        lines += [pad + field for field in fields]
    else:
        lines.append(f"{pad}(not a valid ATR: {error})")
    return lines
