"""``scardio demo``: the spec's whole sequence on a simulated reader, step by
step with the time of each."""

from __future__ import annotations

import threading
import time

from .. import errors
from .opening import open_for
from .outcome import EXIT_OK

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from typing import Any, Optional

    from ..reader import ReaderEvent
    from .output import Output

__all__ = ["DEMO_APDUS", "cmd_demo"]

DEMO_APDUS = [
    ("SELECT application", "00 A4 04 0C 08 F0 73 63 61 72 64 69 6F"),
    ("SELECT EF 0101", "00 A4 00 0C 02 01 01"),
    ("READ BINARY 16 bytes", "00 B0 00 00 10"),
    ("GET CHALLENGE 8 bytes", "00 84 00 00 08"),
    ("ECHO (80 EE) 4 bytes", "80 EE 00 00 04 CA FE BA BE 04"),
]


def cmd_demo(args: argparse.Namespace, out: Output) -> int:
    from ..monitor import Monitor
    from ..sim import EntryPoint, SimControl
    from ..discovery import find_reader, list_readers
    pool = list_readers(max(1, args.sim), reader_conf_dirs=())
    desc = find_reader("scardio Simulated Reader 0", pool)
    timeline: list[dict[str, Any]] = []
    lock = threading.Lock()

    def note(what: str, t: Optional[float] = None, **detail: Any) -> None:
        ts = time.monotonic() if t is None else t
        with lock:
            timeline.append({"t_ms": out.ms(ts), "event": what, **detail})
            if not out.json:
                more = "  " + ", ".join(f"{k}={v}" for k, v in detail.items()) if detail else ""
                out.line(f"{out.ms(ts):10.3f} ms  {what}{more}")

    powered_down = threading.Event()

    def on_reader(ev: ReaderEvent) -> None:
        d = dict(ev.detail)
        if "ms" in d:
            d["ms"] = round(d["ms"], 3)
        note(f"reader: {ev.kind}", ev.timestamp, **d)
        if ev.kind == "power_down" and ev.detail.get("reason") == "timer":
            powered_down.set()

    arrivals: "list[Any]" = []
    seen = threading.Condition()

    def on_card(ev: Any) -> None:
        note(f"monitor: card {ev.kind}", ev.timestamp)
        with seen:
            arrivals.append(ev.kind)
            seen.notify_all()

    def wait_event(kind: str, timeout: float = 5.0) -> None:
        with seen:
            if not seen.wait_for(lambda: kind in arrivals, timeout):
                raise errors.TimeoutError(f"demo: no {kind} within {timeout} s")
            arrivals.remove(kind)

    args.insert = False
    note("start-up: opening the simulated reader", library="(scardio sim)",
         device=desc.device_name)
    reader = open_for(args, out, desc.name, pool, power_down_timeout=args.delay)
    monitor: Optional[Monitor] = None
    try:
        a = reader.attributes
        note("start-up: reader named", name=reader.name, vendor=a.vendor_name,
             ifd_type=a.ifd_type, unit=a.device_unit)
        note("start-up: characteristics", value=a.characteristics,
             flags="|".join(a.characteristics_flags) or "none")
        reader.add_listener(on_reader)
        sim = SimControl(reader.device)
        monitor = Monitor([reader], callback=on_card)
        note("monitor started (IS_PRESENT pending)")
        # noted first: the monitor may report the arrival before insert() returns
        note("sim: card inserted", card=args.card.upper().replace("T", "T="))
        sim.insert(t0=args.card == "t0")
        wait_event("arrival")
        card = reader.connect()
        note("connected", protocol=card.protocol_name, atr=card.atr_bytes.hex().upper())
        for label, hex_apdu in DEMO_APDUS:
            t0 = time.perf_counter()
            resp = card.transmit(hex_apdu)
            note(f"APDU {label}", command=hex_apdu.replace(" ", ""), response=str(resp),
                 us=round((time.perf_counter() - t0) * 1e6, 1))
        before = sim.counters()
        card.disconnect()
        note(f"disconnected: power-down timer started ({args.delay} s)" if args.delay else
             "disconnected: power-down timeout 0, powered down at once")
        card = reader.connect()
        after = sim.counters()
        note("reconnected before the timeout: powered card reused" if args.delay else
             "reconnected: the card was powered down, so it was reset",
             new_power_ups=after.power_ups - before.power_ups,
             new_resets=after.resets - before.resets, actions=" ".join(card.connect_actions))
        card.transmit(DEMO_APDUS[0][1])
        powered_down.clear()  # a timeout of 0 already powered down at the first disconnect
        card.disconnect()
        note(f"disconnected again: waiting for the power-down ({args.delay} s)")
        if not powered_down.wait(args.delay + 5.0):
            raise errors.TimeoutError("demo: the power-down timer did not fire")
        c = sim.counters()
        note("card state after the timer", state=reader.state().name, powered=c.powered)
        note("sim: card removed")
        sim.remove()
        wait_event("departure")
        c = sim.counters()
        note("done", power_ups=c.power_ups, resets=c.resets, power_downs=c.power_downs,
             apdus=c.calls[EntryPoint.TRANSMIT])
    finally:
        if monitor is not None:
            monitor.close()
        reader.close()
    if out.json:
        out.doc({"reader": reader.name, "timeline": timeline})
    return EXIT_OK
