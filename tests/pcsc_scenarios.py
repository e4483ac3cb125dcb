"""Scenarios of the PC/SC backend against a real pcscd (run by
tests/test_pcsc_backend.py inside a private mount and network namespace,
never on its own).

pcscd serves the simulated reader and Debian's vpcd (with tests/vpcd_card.py
as the card).  Each scenario runs in turn and reports a JSON-able dict, or
its failure (the traceback); the last one stops pcscd.  The report is the
last line of standard output.

usage: pcsc_scenarios.py WORKDIR SIM_LIBRARY VPCD_LIBRARY|"" SYSTEM_PYTHON|""
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from scardio import IOCTL, Device, Monitor, errors, pcsc  # noqa: E402
from scardio.aio import AsyncReader  # noqa: E402
from scardio.discovery import ReaderNotFoundError  # noqa: E402
from scardio.monitor import ARRIVAL, DEPARTURE  # noqa: E402
from scardio.sim import ATR_T0, ATR_T1, SimControl  # noqa: E402

from pcscd_namespace import Pcscd, run_scenarios  # noqa: E402

SIM_NAME = "scardio sim"
VPCD_NAME = "Virtual PCD"
VPCD_PORT = 0x8C7B
ECHO4 = "80 EE 00 00 04 CAFEBABE 04"
SELECT_AID = "00 A4 04 00 08 F07363617264696F"

#: A pyscard client that holds an exclusive connection until its stdin closes.
HOLDER = r'''
import sys
from smartcard import scard as S
hr, ctx = S.SCardEstablishContext(S.SCARD_SCOPE_USER)
hr, card, proto = S.SCardConnect(ctx, sys.argv[1], S.SCARD_SHARE_EXCLUSIVE,
                                 S.SCARD_PROTOCOL_T0 | S.SCARD_PROTOCOL_T1)
print(hr & 0xFFFFFFFF, flush=True)
sys.stdin.read()
S.SCardDisconnect(card, S.SCARD_LEAVE_CARD)
S.SCardReleaseContext(ctx)
'''


def wait_until(what: Callable[[], Any], seconds: float = 10.0) -> Any:
    end = time.monotonic() + seconds
    while True:
        value = what()
        if value or time.monotonic() > end:
            return value
        time.sleep(0.02)


def serve_sim_reader(work: Path, sim: str, name: str) -> tuple[Pcscd, str]:
    """Start pcscd on one simulated reader called `name` (its reader.conf
    written into `work`): the daemon, and the reader's PC/SC name once
    pcscd lists it."""
    conf = work / "reader.conf"
    conf.write_text(f'FRIENDLYNAME "{name}"\nDEVICENAME sim:0\nLIBPATH {sim}\nCHANNELID 0\n')
    daemon = Pcscd(conf, work / "pcscd.log")

    def listed() -> str:
        try:
            return next((n for n in pcsc.list_readers() if n.startswith(name)), "")
        except errors.ScardioError:
            return ""
    reader = wait_until(listed, 20)
    if not reader:
        daemon.stop()
        raise RuntimeError(f"pcscd did not list the simulated reader {name!r}")
    return daemon, reader


def error_of(call: Callable[[], Any]) -> Optional[BaseException]:
    try:
        call()
    except BaseException as exc:  # the scenario reports what was raised
        return exc
    return None


def describe(exc: Optional[BaseException]) -> dict[str, Any]:
    if exc is None:
        return {"type": None}
    return {"type": type(exc).__name__, "message": str(exc),
            "mro": [c.__name__ for c in type(exc).__mro__]}


class Scenarios:
    def __init__(self, work: Path, sim: str, vpcd: str, system_python: str):
        self.work = work
        self.sim_library = sim
        self.vpcd = vpcd
        self.system_python = system_python
        conf = work / "reader.conf"
        text = f'FRIENDLYNAME "{SIM_NAME}"\nDEVICENAME sim:0\nLIBPATH {sim}\nCHANNELID 0\n'
        if vpcd:
            text += (f'\nFRIENDLYNAME "{VPCD_NAME}"\nDEVICENAME /dev/null:0x{VPCD_PORT:04X}\n'
                     f'LIBPATH {vpcd}\nCHANNELID 0x{VPCD_PORT:04X}\n')
        conf.write_text(text)
        self.pcscd = Pcscd(conf, work / "pcscd.log")
        want = 2 if vpcd else 1
        self.names: list[str] = wait_until(lambda: self._readers(want), 20) or []
        self.sim_reader = next(n for n in self.names if n.startswith(SIM_NAME))

    def _readers(self, want: int) -> Optional[list[str]]:
        try:
            names = pcsc.list_readers()
        except errors.ScardioError:
            return None
        return names if len(names) >= want else None

    # ---- scenarios -------------------------------------------------------
    def listing(self) -> dict[str, Any]:
        missing = error_of(lambda: pcsc.open_device("no such reader"))
        return {"names": self.names, "missing": describe(missing),
                "missing_is_lookup": isinstance(missing, LookupError),
                "missing_candidates": list(getattr(missing, "candidates", []))
                if isinstance(missing, ReaderNotFoundError) else None}

    def bad_input(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "empty_name": describe(error_of(lambda: pcsc.open_device(""))),
            "nul_name": describe(error_of(lambda: pcsc.open_device("a\0b"))),
            "bytes_name": describe(error_of(lambda: Device.open_pcsc(b"x"))),  # type: ignore
            "long_name": describe(error_of(lambda: pcsc.open_device("x" * 5000))),
            "share": describe(error_of(lambda: pcsc.open_device(self.sim_reader,
                                                                 share="bogus"))),
        }
        with pcsc.open_device(self.sim_reader) as dev:
            out["short_transmit"] = describe(error_of(
                lambda: dev.ioctl(IOCTL.TRANSMIT, b"\x02\0\0\0", 64)))
            out["power_action"] = describe(error_of(
                lambda: dev.ioctl(IOCTL.POWER, (7).to_bytes(4, "little"), 33)))
            out["power_short"] = describe(error_of(lambda: dev.ioctl(IOCTL.POWER, b"\x01", 33)))
            out["unknown_code"] = describe(error_of(lambda: dev.ioctl(0x00310000 | 99 << 2)))
            out["state_no_room"] = describe(error_of(lambda: dev.ioctl(IOCTL.GET_STATE, b"", 0)))
            out["transmit_no_card"] = describe(error_of(
                lambda: dev.ioctl(IOCTL.TRANSMIT, b"\x02\0\0\0\x08\0\0\0\x00\xa4\x00\x00",
                                  64)))
        out["after_close"] = describe(error_of(lambda: dev.ioctl(IOCTL.GET_STATE, b"", 4)))
        return out

    def sim_control(self) -> dict[str, Any]:
        with pcsc.open_reader(self.sim_reader) as reader:
            sim = SimControl(reader.device)
            sim.remove()
            empty = wait_until(lambda: reader.state().name == "ABSENT")
            sim.insert()
            present = wait_until(lambda: reader.state().name == "SWALLOWED")
            counters = sim.counters()
            sim.remove()
            gone = wait_until(lambda: reader.state().name == "ABSENT")
            return {"empty": bool(empty), "present": bool(present), "gone": bool(gone),
                    "sim_present": counters.present, "name": reader.name,
                    "attributes": reader.attributes.as_dict()}

    def dispositions(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        with pcsc.open_reader(self.sim_reader, power_down_timeout=None) as reader:
            sim = SimControl(reader.device)
            sim.insert()
            wait_until(lambda: reader.state().name == "SWALLOWED")
            card = reader.connect(timeout=10)
            out["first"] = {"atr": card.atr_bytes.hex(), "protocol": int(card.protocol),
                            "actions": card.connect_actions,
                            "state": reader.state().name}
            out["echo"] = card.transmit(ECHO4).data.hex()
            c0 = sim.counters()
            card.disconnect()  # LEAVE, no timer: stays powered, handle kept
            c1 = sim.counters()
            card = reader.connect(timeout=10)
            c2 = sim.counters()
            out["leave"] = {"powered": c1.powered, "power_downs": c1.power_downs - c0.power_downs,
                            "reconnect_power_ups": c2.power_ups - c1.power_ups,
                            "reconnect_resets": c2.resets - c1.resets,
                            "reconnect_actions": card.connect_actions}
            card.disconnect(1)  # RESET
            c3 = sim.counters()
            out["reset"] = {"resets": c3.resets - c2.resets, "powered": c3.powered,
                            "state": reader.state().name}
            card = reader.connect(timeout=10)
            c4 = sim.counters()
            card.disconnect(2)  # UNPOWER
            c5 = sim.counters()
            out["unpower"] = {"power_downs": c5.power_downs - c4.power_downs,
                              "powered": c5.powered, "state": reader.state().name}
            card = reader.connect(timeout=10)
            c6 = sim.counters()
            out["after_unpower"] = {"actions": card.connect_actions,
                                    "power_ups": c6.power_ups - c5.power_ups,
                                    "echo": card.transmit(ECHO4).data.hex()}
            # LEAVE with the power-down timer: through PC/SC the card is
            # released (LEAVE), its power left to pcscd, so that another
            # client connected to it at the time keeps its card.
            with pcsc.open_reader(self.sim_reader, power_down_timeout=None) as other:
                other_card = other.connect(timeout=10)
                reader.power_down_timeout = 0.3
                card.disconnect()
                pending = reader.power_down_pending
                fired = wait_until(lambda: not reader.power_down_pending, 5)
                c7 = sim.counters()
                out["timer"] = {"pending": pending, "fired": bool(fired),
                                "power_downs": c7.power_downs - c6.power_downs,
                                "resets": c7.resets - c6.resets,
                                "other_echo": describe(error_of(
                                    lambda: other_card.transmit(ECHO4).data.hex())),
                                "state": reader.state().name}
                other_card.disconnect()
            # The card leaves while connected: the no-card error.
            card = reader.connect(timeout=10)
            sim.remove()
            wait_until(lambda: reader.state().name == "ABSENT")
            out["removed"] = describe(error_of(lambda: card.transmit(ECHO4)))
            out["connect_empty"] = describe(error_of(lambda: reader.connect(timeout=2)))
        return out

    def t0_get_response(self) -> dict[str, Any]:
        with pcsc.open_reader(self.sim_reader, power_down_timeout=0) as reader:
            sim = SimControl(reader.device)
            sim.insert(t0=True)
            wait_until(lambda: reader.state().name == "SWALLOWED")
            card = reader.connect(timeout=10)
            auto = card.transmit(ECHO4)
            raw = card.transmit(ECHO4, auto_get_response=False)
            by_hand = card.transmit("00 C0 00 00 04")
            out = {"atr": card.atr_bytes.hex(), "protocol": int(card.protocol),
                   "auto": [auto.data.hex(), auto.sw], "raw": [raw.data.hex(), raw.sw],
                   "by_hand": [by_hand.data.hex(), by_hand.sw]}
            # T=1 asked of a T=0-only card: the protocol error, typed.
            card.disconnect()
            out["t1_only"] = describe(error_of(lambda: reader.connect(2, timeout=5)))
            sim.remove()
            return out

    def tracking(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        with pcsc.open_reader(self.sim_reader) as reader:
            sim = SimControl(reader.device)
            sim.remove()
            wait_until(lambda: reader.state().name == "ABSENT")
            with Monitor([reader]) as mon:
                kinds = []
                latencies = []
                for _ in range(3):
                    t = time.monotonic()
                    sim.insert()
                    ev = mon.get(timeout=5)
                    latencies.append(time.monotonic() - t)
                    kinds.append(ev.kind)
                    t = time.monotonic()
                    sim.remove()
                    ev = mon.get(timeout=5)
                    latencies.append(time.monotonic() - t)
                    kinds.append(ev.kind)
                out["monitor"] = [k == ARRIVAL for k in kinds]
                out["monitor_departures"] = [k == DEPARTURE for k in kinds]
                out["latency_max_ms"] = max(latencies) * 1000
                # A swap (a card inserted over the one in) is a removal then
                # an arrival to pcscd: the monitor reports both.
                sim.insert()
                first = mon.get(timeout=5).kind
                sim.insert(t0=True)
                swap = [mon.get(timeout=5).kind, mon.get(timeout=5).kind]
                out["swap"] = [first == ARRIVAL, swap == [DEPARTURE, ARRIVAL]]
                sim.remove()
                mon.get(timeout=5)
            # Without a monitor: the reader's own waits.
            threading.Timer(0.3, sim.insert).start()
            t = time.monotonic()
            reader.wait_for_card(timeout=5)
            out["wait_for_card_s"] = time.monotonic() - t
            threading.Timer(0.3, sim.remove).start()
            reader.wait_for_removal(timeout=5)
            out["wait_timeout"] = describe(error_of(lambda: reader.wait_for_card(timeout=0.3)))
        return out

    def cancel(self) -> dict[str, Any]:
        out: dict[str, Any] = {"cancel_ms": [], "busy": None}
        with pcsc.open_device(self.sim_reader) as dev:
            SimControl(dev).remove()
            for delay in (0.0, 0.001, 0.01, 0.05, 0.2):
                op = dev.submit(IOCTL.IS_PRESENT)
                time.sleep(delay)
                t = time.monotonic()
                op.cancel()
                err = error_of(lambda: op.wait(5))
                out["cancel_ms"].append([(time.monotonic() - t) * 1000, describe(err)["type"]])
            op = dev.submit(IOCTL.IS_PRESENT)
            second = dev.submit(IOCTL.IS_PRESENT)
            out["busy"] = describe(error_of(lambda: second.wait(5)))
            time.sleep(0.1)
            t = time.monotonic()
            dev.close()
            out["close_ms"] = (time.monotonic() - t) * 1000
            out["pending_after_close"] = describe(error_of(lambda: op.wait(5)))
        return out

    def asyncio_and_trace(self) -> dict[str, Any]:
        records: list[str] = []
        reader = pcsc.open_reader(self.sim_reader, power_down_timeout=0,
                                  trace=lambda r: records.append(r.name))
        sim = SimControl(reader.device)

        async def main() -> list[Any]:
            areader = AsyncReader(reader)
            sim.insert()
            await areader.wait_for_card(timeout=5)
            card = await areader.connect(timeout=5)
            r = await card.transmit(ECHO4)
            await card.disconnect()
            return [r.data.hex(), r.sw]
        try:
            result = asyncio.run(main())
            sim.remove()
        finally:
            reader.close()
        return {"async": result, "traced": sorted(set(records))}

    def vpcd_card(self) -> dict[str, Any]:
        from vpcd_card import VirtualCard
        name = next(n for n in self.names if n.startswith(VPCD_NAME))
        card_peer = VirtualCard(VPCD_PORT)
        card_peer.insert(timeout=20)
        try:
            with pcsc.open_reader(name, power_down_timeout=0) as reader:
                wait_until(lambda: reader.state().name != "ABSENT", 10)
                card = reader.connect(timeout=10)
                select = card.transmit(SELECT_AID)
                echo = card.transmit(ECHO4)
                out = {"name": name, "atr": card.atr_bytes.hex(), "select": select.sw,
                       "echo": [echo.data.hex(), echo.sw]}
                card.disconnect()
            return out
        finally:
            card_peer.remove()

    def in_use(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        with pcsc.open_reader(self.sim_reader, power_down_timeout=0) as reader:
            sim = SimControl(reader.device)
            sim.insert()
            wait_until(lambda: reader.state().name == "SWALLOWED")
            holder = subprocess.Popen([self.system_python, "-c", HOLDER, self.sim_reader],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            try:
                assert holder.stdout is not None and holder.stdin is not None
                out["holder_connect"] = int(holder.stdout.readline() or -1)
                out["connect"] = describe(error_of(lambda: reader.connect(timeout=5)))
                out["open_reader"] = describe(error_of(
                    lambda: pcsc.open_reader(self.sim_reader).close()))
                holder.stdin.close()
                holder.wait(20)
            finally:
                if holder.poll() is None:
                    holder.kill()
                    holder.wait()
            card = reader.connect(timeout=5)
            out["after_release"] = card.transmit(ECHO4).sw
            card.disconnect()
            # Our own exclusive connection keeps another client out.
            with pcsc.open_reader(self.sim_reader, share="exclusive",
                                  power_down_timeout=None) as mine:
                mine_card = mine.connect(timeout=5)
                other = describe(error_of(lambda: reader.connect(timeout=5)))
                out["exclusive_mine"] = other
                mine_card.disconnect()
            sim.remove()
        return out

    def vanish(self) -> dict[str, Any]:
        """pcscd stops under an open reader: every later call is typed."""
        out: dict[str, Any] = {}
        reader = pcsc.open_reader(self.sim_reader, power_down_timeout=None)
        sim = SimControl(reader.device)
        sim.insert()
        wait_until(lambda: reader.state().name == "SWALLOWED")
        card = reader.connect(timeout=5)
        waiting = reader.device.submit(IOCTL.IS_ABSENT)
        time.sleep(0.2)
        t = time.monotonic()
        self.pcscd.stop()
        out["pending"] = describe(error_of(lambda: waiting.wait(10)))
        out["pending_s"] = time.monotonic() - t
        out["transmit"] = describe(error_of(lambda: card.transmit(ECHO4)))
        out["state"] = describe(error_of(reader.state))
        out["list"] = describe(error_of(pcsc.list_readers))
        out["open"] = describe(error_of(lambda: pcsc.open_device(self.sim_reader)))
        t = time.monotonic()
        reader.close()
        out["close_s"] = time.monotonic() - t
        return out


def main() -> None:
    work, sim, vpcd, system_python = sys.argv[1:5]
    report: dict[str, Any] = {}
    s = Scenarios(Path(work), sim, vpcd, system_python)
    try:
        report["atrs"] = {"t1": ATR_T1.hex(), "t0": ATR_T0.hex()}
        names = ["listing", "bad_input", "sim_control", "dispositions", "t0_get_response",
                 "tracking", "cancel", "asyncio_and_trace"]
        if vpcd:
            names.append("vpcd_card")
        if system_python:
            names.append("in_use")
        names.append("vanish")
        report.update(run_scenarios(s, names))
    finally:
        s.pcscd.stop()
    print(json.dumps(report, default=str))


if __name__ == "__main__":
    main()
