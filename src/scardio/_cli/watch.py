"""``scardio monitor`` and ``scardio scan``: card arrivals and removals (and,
through a resource manager, readers coming and going) as they happen; scan
also decodes and names each card's ATR, like pcsc_scan."""

from __future__ import annotations

import contextlib
import threading
import time

from .. import errors
from .atr_report import atr_report, atr_report_lines
from .opening import hotplug_list, open_watched
from .outcome import EXIT_OK, UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from typing import Any, Iterator, Optional

    from ..monitor import Monitor
    from ..reader import Reader
    from .output import Output

__all__ = ["cmd_monitor", "cmd_scan"]


@contextlib.contextmanager
def _watching(args: argparse.Namespace, out: Output,
              command: str) -> Iterator[tuple[Monitor, list[Reader]]]:
    """The Monitor `command` runs, over the readers it names (or every
    reader, following the resource manager's reader list where one is
    reachable); the monitor, the list and the readers are closed on exit."""
    from ..monitor import Monitor
    reader_list = hotplug_list(args, out)
    try:
        readers = open_watched(args, out, command, allow_none=reader_list is not None)
    except BaseException:
        if reader_list is not None:
            reader_list.close()
        raise
    monitor: Optional[Monitor] = None
    try:
        monitor = Monitor(readers, reader_list=reader_list)
        reader_list = None  # the monitor's now
        yield monitor, readers
    finally:
        if monitor is not None:
            monitor.close()
        if reader_list is not None:
            reader_list.close()
        for r in readers:
            r.close()


def cmd_monitor(args: argparse.Namespace, out: Output) -> int:
    with _watching(args, out, "monitor") as (monitor, _):
        if not out.json:
            out.line(f"monitoring {len(monitor.readers)} reader(s)"
                     f"{'' if args.timeout is None else f' for {args.timeout} s'}; Ctrl-C stops")
        for ev in monitor.events(timeout=args.timeout, count=args.count):
            if out.json:
                record = ev.as_dict()
                record["t_ms"] = out.ms(ev.timestamp)
                del record["t"]
                out.jsonl(record)
            else:
                extra = f": {ev.error}" if ev.error else ""
                out.line(f"{out.ms(ev.timestamp):10.3f} ms  {ev.kind:<9}  {ev.reader.name}{extra}")
    return EXIT_OK


def _wall_clock(monotonic_ts: float) -> str:
    """Local time of a time.monotonic() timestamp, ISO 8601 with ms."""
    import datetime
    wall = time.time() - (time.monotonic() - monotonic_ts)
    return datetime.datetime.fromtimestamp(wall).astimezone().isoformat(
        sep=" ", timespec="milliseconds")


class _SimToggler:
    """--sim-toggle: a card goes in and out of every simulated reader."""

    def __init__(self, readers: list[Reader], period: float, t0: bool) -> None:
        from ..sim import SimControl
        self._sims = [SimControl(r.device) for r in readers
                      if r.descriptor is not None and r.descriptor.source == "sim"]
        self._period, self._t0 = period, t0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="scardio-sim-toggle",
                                        daemon=True)

    def start(self) -> None:
        if self._sims:
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._period):
            for sim in self._sims:
                try:
                    if sim.counters().present:
                        sim.remove()
                    else:
                        sim.insert(t0=self._t0)
                except errors.ScardioError:
                    return  # the reader closed under us: scan is ending

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5.0)


def cmd_scan(args: argparse.Namespace, out: Output) -> int:
    from ..atr_list import find_atr_list
    from ..monitor import ARRIVAL
    from ..probe import probe_atr
    if args.sim_toggle is not None and args.sim_toggle <= 0:
        raise UsageError("--sim-toggle needs a period > 0 seconds")
    list_file = args.atr_list or find_atr_list()
    toggler: Optional[_SimToggler] = None
    with _watching(args, out, "scan") as (monitor, readers):
        try:
            if not out.json:
                watched = monitor.readers
                out.line(f"scanning {len(watched)} reader(s)"
                         f"{'' if args.timeout is None else f' for {args.timeout} s'}; "
                         f"card list: {list_file or 'none'}; Ctrl-C stops")
                for r in watched:
                    out.line(f"  {r.name}")
            if args.sim_toggle is not None:
                toggler = _SimToggler(readers, args.sim_toggle, args.card == "t0")
                toggler.start()
            for ev in monitor.events(timeout=args.timeout, count=args.count):
                record: dict[str, Any] = {"time": _wall_clock(ev.timestamp), "event": ev.kind,
                                          "reader": ev.reader.name, "seq": ev.seq}
                if ev.error is not None:
                    record["error"] = str(ev.error)
                probe_error: Optional[str] = None
                if ev.kind == ARRIVAL:
                    try:
                        probe = probe_atr(ev.reader, timeout=10.0)
                    except errors.NoCardError:
                        probe_error = "the card left before its ATR was read"
                    except errors.ScardioError as exc:
                        probe_error = f"could not read the ATR: {exc}"
                    else:
                        record["card_state"] = probe.state.name
                        record["actions"] = probe.actions
                        record.update(atr_report(probe.atr, list_file))
                    if probe_error is not None:
                        record["atr_error"] = probe_error
                if out.json:
                    out.jsonl(record)
                    continue
                extra = f": {record['error']}" if "error" in record else ""
                lines = [f"{record['time']}  {ev.kind:<9}  {ev.reader.name}{extra}"]
                if probe_error is not None:
                    lines.append(f"    ({probe_error})")
                elif "atr" in record:
                    lines += atr_report_lines(record, "    ")
                out.line("\n".join(lines))
        finally:
            if toggler is not None:
                toggler.stop()
    return EXIT_OK
