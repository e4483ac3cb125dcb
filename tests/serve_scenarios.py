"""Scenarios of cards served by ``scardio card serve`` through a real pcscd
(run by tests/test_card_serve_pcscd.py inside a private mount and network
namespace, never on its own).

pcscd loads the simulated reader three times from reader.conf, each with
``DEVICENAME socket:PATH``: two Python cards (tests/serve_cards.py) and a
slot for hostile servers.  Clients: pyscard (the system interpreter, in a
subprocess) and scardio's PC/SC backend.  Each scenario reports a JSON-able
dict or its traceback; the report is the last line of standard output.

usage: serve_scenarios.py WORKDIR SIM_LIBRARY SYSTEM_PYTHON|""
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from scardio import Monitor, errors, pcsc  # noqa: E402
from pcscd_namespace import Pcscd, run_scenarios  # noqa: E402

NAMES = {"a": "Python card A", "b": "Python card T0", "h": "Hostile server"}

#: pyscard: connect to argv[1], send the APDUs argv[2:], print the results.
PYSCARD_APDUS = r'''
import json, sys, time
from smartcard import scard as S
hr, ctx = S.SCardEstablishContext(S.SCARD_SCOPE_USER)
hr, readers = S.SCardListReaders(ctx, [])
name = next(r for r in readers if r.startswith(sys.argv[1]))
deadline = time.monotonic() + 10
while True:
    hr, card, proto = S.SCardConnect(ctx, name, S.SCARD_SHARE_SHARED,
                                     S.SCARD_PROTOCOL_T0 | S.SCARD_PROTOCOL_T1)
    if hr == 0 or time.monotonic() > deadline:
        break
    time.sleep(0.05)
out = {"connect": hr & 0xFFFFFFFF, "protocol": proto, "answers": []}
if hr == 0:
    hr2, reader_name, st, pr, atr = S.SCardStatus(card)
    out["atr"] = bytes(atr).hex()
    pci = S.SCARD_PCI_T1 if proto == S.SCARD_PROTOCOL_T1 else S.SCARD_PCI_T0
    for apdu in sys.argv[2:]:
        t = time.monotonic()
        hr, resp = S.SCardTransmit(card, pci, list(bytes.fromhex(apdu)))
        out["answers"].append([hr & 0xFFFFFFFF, bytes(resp).hex(), time.monotonic() - t])
    S.SCardDisconnect(card, S.SCARD_UNPOWER_CARD)
S.SCardReleaseContext(ctx)
print(json.dumps(out))
'''

#: pyscard: report the reader's present / empty changes (SCardGetStatusChange)
#: until `count` were seen; "ready" first.
PYSCARD_WATCH = r'''
import json, sys, time
from smartcard import scard as S
hr, ctx = S.SCardEstablishContext(S.SCARD_SCOPE_USER)
hr, readers = S.SCardListReaders(ctx, [])
name = next(r for r in readers if r.startswith(sys.argv[1]))
hr, states = S.SCardGetStatusChange(ctx, 0, [(name, S.SCARD_STATE_UNAWARE)])
current = states[0][1] & ~S.SCARD_STATE_CHANGED
print(json.dumps({"ready": True, "present": bool(current & S.SCARD_STATE_PRESENT)}), flush=True)
seen = 0
while seen < int(sys.argv[2]):
    hr, states = S.SCardGetStatusChange(ctx, 20000, [(name, current)])
    if hr != 0:
        print(json.dumps({"error": hr & 0xFFFFFFFF}), flush=True)
        break
    new = states[0][1] & ~S.SCARD_STATE_CHANGED
    was, now = bool(current & S.SCARD_STATE_PRESENT), bool(new & S.SCARD_STATE_PRESENT)
    current = new
    if was != now:
        seen += 1
        print(json.dumps({"present": now}), flush=True)
'''


def wait_until(what: Callable[[], Any], seconds: float = 10.0) -> Any:
    end = time.monotonic() + seconds
    while True:
        value = what()
        if value or time.monotonic() > end:
            return value
        time.sleep(0.02)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = HERE + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


class Server:
    def __init__(self, path: str, spec: str) -> None:
        self.log = tempfile.TemporaryFile("w+")
        self.proc = subprocess.Popen([sys.executable, "-m", "scardio", "card", "serve", spec,
                                      "--socket", path], stderr=self.log,
                                     stdout=subprocess.DEVNULL, env=_env())
        if not wait_until(lambda: os.path.exists(path), 30):
            raise RuntimeError(f"the server did not start: {self.text()}")

    def text(self) -> str:
        self.log.seek(0)
        return self.log.read()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(30)


class Hostile:
    def __init__(self, mode: str, path: str) -> None:
        self.proc = subprocess.Popen([sys.executable, os.path.join(HERE, "serve_cards.py"),
                                      "hostile", mode, path], stdout=subprocess.PIPE,
                                     env=_env(), text=True)
        assert self.proc.stdout is not None and self.proc.stdout.readline() == "ready\n"

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(30)


class Scenarios:
    def __init__(self, work: Path, sim: str, system_python: str) -> None:
        self.work = work
        self.system_python = system_python
        self.paths = {k: str(work / k) for k in NAMES}
        conf = work / "reader.conf"
        conf.write_text("".join(
            # pcscd's reader.conf takes '?', ',' and '=' only inside quotes
            f'FRIENDLYNAME "{NAMES[k]}"\nDEVICENAME "socket:{self.paths[k]}'
            f'{"?timeout=300,retry=20" if k == "h" else ""}"\nLIBPATH {sim}\nCHANNELID 0\n\n'
            for k in NAMES))
        self.servers = {"a": Server(self.paths["a"], "serve_cards:CounterCard"),
                        "b": Server(self.paths["b"], "serve_cards:T0Card")}
        self.pcscd = Pcscd(conf, work / "pcscd.log")
        self.names: list[str] = wait_until(self._readers, 20) or []
        if len(self.names) != 3:
            raise RuntimeError(f"pcscd lists {self.names}")

    def _readers(self) -> Optional[list[str]]:
        try:
            names = pcsc.list_readers()
        except errors.ScardioError:
            return None
        return names if len(names) >= 3 else None

    def reader_name(self, key: str) -> str:
        return next(n for n in self.names if n.startswith(NAMES[key]))

    def pyscard(self, key: str, *apdus: str) -> dict[str, Any]:
        p = subprocess.run([self.system_python, "-c", PYSCARD_APDUS, NAMES[key], *apdus],
                           capture_output=True, text=True, timeout=60)
        if p.returncode != 0:
            raise RuntimeError(p.stderr)
        result: dict[str, Any] = json.loads(p.stdout.strip().splitlines()[-1])
        return result

    def pcscd_usage(self) -> tuple[int, int]:
        pid = self.pcscd.pid
        return len(os.listdir(f"/proc/{pid}/fd")), len(os.listdir(f"/proc/{pid}/task"))

    def settled_usage(self) -> tuple[int, int]:
        """pcscd's usage once it stops changing: a client that just went
        away leaves pcscd's side of it (a thread, a socket) a moment later."""
        deadline = time.monotonic() + 10
        last = self.pcscd_usage()
        while time.monotonic() < deadline:
            time.sleep(0.3)
            now = self.pcscd_usage()
            if now == last:
                break
            last = now
        return last

    def stop(self) -> None:
        for s in self.servers.values():
            s.stop()
        self.pcscd.stop()

    # ---- scenarios -------------------------------------------------------
    def listing(self) -> dict[str, Any]:
        return {"names": self.names}

    def pyscard_answers(self) -> dict[str, Any]:
        a = self.pyscard("a", "80100000", "80100000", "80EE000004CAFEBABE", "80300000",
                         "80100000", "80310000", "80100000")
        b = self.pyscard("b", "80CA00000100", "00C0000008")
        return {"a": a, "b": b}

    def scardio_answers(self) -> dict[str, Any]:
        with pcsc.open_reader(self.reader_name("a"), power_down_timeout=0) as reader:
            wait_until(lambda: reader.state().name != "ABSENT")
            card = reader.connect(timeout=10)
            out = {"atr": card.atr_bytes.hex(), "protocol": int(card.protocol),
                   "count": card.transmit("80100000").data.hex(),
                   "echo": card.transmit("80EE000004CAFEBABE").data.hex(),
                   "raised": card.transmit("80300000").sw}
            try:
                card.transmit("80310000")
                out["malformed"] = None
            except errors.ScardioError as exc:
                out["malformed"] = type(exc).__name__
            out["after"] = card.transmit("80100000").data.hex()
            card.disconnect()
        with pcsc.open_reader(self.reader_name("b"), power_down_timeout=0) as reader:
            card = reader.connect(timeout=10)
            out["t0"] = {"protocol": int(card.protocol),
                         "data": card.transmit("80CA00000100").data.hex()}
            card.disconnect()
        return out

    def restart_seen(self) -> dict[str, Any]:
        """Server stop / restart: removal / arrival for scardio's Monitor and
        for pyscard's SCardGetStatusChange, each in its own client."""
        out: dict[str, Any] = {}
        watch = None
        if self.system_python:
            watch = subprocess.Popen([self.system_python, "-c", PYSCARD_WATCH, NAMES["a"],
                                      "2"], stdout=subprocess.PIPE, text=True)
            assert watch.stdout is not None
            out["pyscard_ready"] = json.loads(watch.stdout.readline())
        with pcsc.open_reader(self.reader_name("a")) as reader:
            with Monitor([reader]) as mon:
                out["initial"] = mon.get(timeout=10).kind  # the card already in
                t = time.monotonic()
                self.servers["a"].stop()
                ev = mon.get(timeout=10)
                out["departure"] = [ev.kind, time.monotonic() - t, str(ev.error)]
                t = time.monotonic()
                self.servers["a"] = Server(self.paths["a"], "serve_cards:CounterCard")
                ev = mon.get(timeout=10)
                out["arrival"] = [ev.kind, time.monotonic() - t, str(ev.error)]
        if watch is not None:
            assert watch.stdout is not None
            out["pyscard_events"] = [json.loads(watch.stdout.readline()) for _ in range(2)]
            watch.wait(30)
            watch.stdout.close()
            out["after_restart"] = self.pyscard("a", "80100000")
        return out

    def hostile(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for mode in ("hang", "drop", "oversize", "wrongtype"):
            bad = Hostile(mode, self.paths["h"])
            try:
                got = self.pyscard("h", "80100000", "80100000")
            finally:
                bad.stop()
            out[mode] = {"pyscard": got, "pcscd_alive": self.pcscd.alive(),
                         "other_reader": self.pyscard("a", "80100000")["answers"][0][0]}
        bad = Hostile("badhello", self.paths["h"])
        try:
            time.sleep(0.5)
            with pcsc.open_reader(self.reader_name("h")) as reader:
                out["badhello_state"] = reader.state().name
        finally:
            bad.stop()
        out["pcscd_alive"] = self.pcscd.alive()
        return out

    def leaks(self) -> dict[str, Any]:
        """pcscd's descriptors and threads over server restarts and a
        hostile server's cycles."""
        self.pyscard("a", "80100000")
        before = self.settled_usage()  # the last client's thread may still be ending
        for _ in range(4):
            self.servers["a"].stop()
            self.servers["a"] = Server(self.paths["a"], "serve_cards:CounterCard")
            assert self.pyscard("a", "80100000")["answers"][0][0] == 0
            bad = Hostile("drop", self.paths["h"])
            self.pyscard("h", "80100000")
            bad.stop()
        # The readers' links settle on their own threads: wait for them
        # (a leak never settles), as long as a loaded machine may need.
        deadline = time.monotonic() + 10
        after = self.pcscd_usage()
        while after != before and time.monotonic() < deadline:
            time.sleep(0.1)
            after = self.pcscd_usage()
        return {"before": before, "after": after}


def main() -> None:
    work, sim, system_python = sys.argv[1:4]
    s = Scenarios(Path(work), sim, system_python)
    try:
        names = ["listing", "scardio_answers", "restart_seen"]
        if system_python:
            names[1:1] = ["pyscard_answers"]
            names += ["hostile", "leaks"]
        report = run_scenarios(s, names)
    finally:
        s.stop()
    print(json.dumps(report, default=str))

if __name__ == "__main__":
    main()
