"""``scardio card serve --replay FILE``: a recorded session served on a Unix
socket, reached by a simulated reader opened as ``socket:PATH`` in this
process and, through pcscd (in a private namespace), by pyscard.

The sessions are recorded with ``scardio apdu --record`` on the built-in
simulated card, all as a user runs the commands."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

import pytest

from scardio import Device, Reader
from scardio.recording import read_recording
from scardio.sim import AID, ATR_T0, SIM_LIBRARY

import pcscd_namespace

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="socket cards: Unix sockets, tested on Linux")

SELECT_APP = bytes.fromhex("00A4040C08") + AID
SELECT_EF = bytes.fromhex("00A4000C020101")
READ16 = bytes.fromhex("00B0000010")
ECHO4 = bytes.fromhex("80EE000004CAFEBABE04")
CHALLENGE = bytes.fromhex("0084000008")
SESSION = [SELECT_APP, SELECT_EF, READ16, ECHO4, CHALLENGE]
SYSTEM_PYTHON = "/usr/bin/python3"

_luns = itertools.count(0x7A00)


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "SCARDIO_SIM"}


def _record(work: Path, t0: bool) -> tuple[Path, list[dict]]:
    """Record SESSION with the CLI; the file and the responses it printed."""
    path = work / ("t0.jsonl" if t0 else "t1.jsonl")
    proc = subprocess.run(
        [sys.executable, "-m", "scardio", "--sim", "1", "--insert", "--json",
         *(["--card", "t0"] if t0 else []), "apdu", "Simulated Reader 0",
         *(c.hex() for c in SESSION), "--record", str(path)],
        cwd=work, env=_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return path, json.loads(proc.stdout)["responses"]


class Served:
    """``scardio card serve --replay FILE`` in a subprocess; its log in log()."""

    def __init__(self, recording: Path, socket_path: str, *extra: str) -> None:
        self.err = tempfile.TemporaryFile("w+")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "scardio", "card", "serve", "--replay", str(recording),
             "--socket", socket_path, *extra],
            stdout=subprocess.DEVNULL, stderr=self.err, env=_env())
        deadline = time.monotonic() + 30
        while "serving" not in self.log():
            assert self.proc.poll() is None, self.log()
            assert time.monotonic() < deadline, self.log()
            time.sleep(0.02)

    def log(self) -> str:
        if self.err.closed:
            return self.final_log
        self.err.seek(0)
        return self.err.read()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(30)
        if not self.err.closed:
            self.final_log = self.log()
            self.err.close()
        return code


@pytest.fixture
def work() -> Iterator[Path]:
    # short: a Unix socket's path has ~100 bytes at most
    with tempfile.TemporaryDirectory(prefix="scardio-replay-") as d:
        yield Path(d)


def _socket_reader(path: str) -> Reader:
    dev = Device.open_ifd(SIM_LIBRARY, f"socket:{path}?timeout=2000,retry=20", next(_luns))
    return Reader(dev, power_down_timeout=0)


def _connect(reader: Reader, timeout: float = 10.0):
    reader.wait_for_card(timeout)
    return reader.connect()


@pytest.mark.parametrize("t0", [False, True], ids=["T=1", "T=0"])
def test_serve_replay_answers_the_recorded_session(work, t0):
    recording, printed = _record(work, t0)
    sock = str(work / "s")
    served = Served(recording, sock)
    try:
        with _socket_reader(sock) as reader:
            card = _connect(reader)
            assert card.atr_bytes == read_recording(recording).header.atr
            if t0:
                assert card.atr_bytes == ATR_T0 and card.protocol_name == "T=0"
            got = [card.transmit(c) for c in SESSION]
            assert [(r.data.hex().upper(), f"{r.sw:04X}") for r in got] == \
                [(p["data"], p["sw"]) for p in printed]
    finally:
        assert served.stop() == 0, served.log()
    assert "not the recorded one" not in served.log()


def test_serve_replay_strict_mismatch_is_6f00_and_logged_with_the_expected(work):
    recording, _ = _record(work, t0=False)
    sock = str(work / "s")
    served = Served(recording, sock)
    try:
        with _socket_reader(sock) as reader:
            card = _connect(reader)
            assert card.transmit(SELECT_APP).sw == 0x9000
            assert card.transmit(READ16).sw == 0x6F00     # SELECT EF was expected
            assert card.transmit(SELECT_EF).sw == 0x9000  # and still is
            assert card.transmit(READ16).data == bytes(range(16))
    finally:
        assert served.stop() == 0
    log = served.log()
    assert "command 2 (00 B0 00 00 10) is not the recorded one: expected " \
           "00 A4 00 0C 02 01 01 (line 3)" in log, log


def test_serve_replay_loose(work):
    recording, printed = _record(work, t0=False)
    sock = str(work / "s")
    served = Served(recording, sock, "--loose")
    try:
        with _socket_reader(sock) as reader:
            card = _connect(reader)
            echo = card.transmit(ECHO4)                   # out of order
            assert echo.data.hex().upper() == printed[3]["data"] == "CAFEBABE"
            assert card.transmit(SELECT_APP).sw == 0x9000
            assert card.transmit("00CA9F7F00").sw == 0x6F00   # never recorded
    finally:
        assert served.stop() == 0
    assert "is not in the recording" in served.log()


@pytest.mark.parametrize("content, message", [
    ('{"format": "scardio-session", "version": 1, "time": "t", "reader": "r", '
     '"atr": "3B00", "protocol": "T=1"}\n{"type": "apdu", "t": 0, "command": "00A4"}\n',
     "bad.jsonl, line 2: 'response' must be a hex string"),
    ("", "bad.jsonl: empty file"),
    (None, "cannot read"),
])
def test_serve_replay_bad_files_are_usage_errors(work, content, message):
    path = work / "bad.jsonl"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    proc = subprocess.run([sys.executable, "-m", "scardio", "card", "serve", "--replay",
                           str(path), "--socket", str(work / "s")], env=_env(),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and "--replay:" in proc.stderr
    assert not (work / "s").exists()


# ---- through pcscd -----------------------------------------------------------

CHILD = r'''
import json, os, signal, subprocess, sys, time
from smartcard import scard as S
from pcscd_namespace import Pcscd

python, recording, sock, conf, wire_path = sys.argv[1:6]
U32 = 0xFFFFFFFF
report = {}
server = subprocess.Popen([python, "-m", "scardio", "card", "serve", "--replay", recording,
                           "--socket", sock], stderr=subprocess.PIPE, text=True)
try:
    deadline = time.monotonic() + 30
    while not os.path.exists(sock) and time.monotonic() < deadline:
        time.sleep(0.05)
    pcscd = Pcscd(conf)
    try:
        reader, ctx = None, None
        while time.monotonic() < deadline and reader is None:
            hr, ctx = S.SCardEstablishContext(S.SCARD_SCOPE_USER)
            if not hr & U32:
                hr, rs = S.SCardListReaders(ctx, [])
                if not hr & U32 and rs:
                    reader = rs[0]
                    break
                S.SCardReleaseContext(ctx)
            time.sleep(0.1)
        report["reader"] = reader
        hr, hcard, proto = S.SCARD_E_NO_SMARTCARD, None, None
        while time.monotonic() < deadline:
            hr, hcard, proto = S.SCardConnect(ctx, reader, S.SCARD_SHARE_SHARED,
                                              S.SCARD_PROTOCOL_T0 | S.SCARD_PROTOCOL_T1)
            if not hr & U32:
                break
            time.sleep(0.1)
        report["connect"] = hr & U32
        report["t0"] = proto == S.SCARD_PROTOCOL_T0
        hr, _, _, _, atr = S.SCardStatus(hcard)
        report["atr"] = bytes(atr).hex().upper()
        answers = []
        for command in json.load(open(wire_path)):
            hr, resp = S.SCardTransmit(hcard, proto, list(bytes.fromhex(command)))
            answers.append(bytes(resp).hex().upper() if not hr & U32 else f"error {hr & U32:#x}")
        hr, resp = S.SCardTransmit(hcard, proto, [0x00, 0xCA, 0x9F, 0x7F, 0x00])
        answers.append(bytes(resp).hex().upper())
        report["answers"] = answers
        S.SCardDisconnect(hcard, S.SCARD_UNPOWER_CARD)
        S.SCardReleaseContext(ctx)
    finally:
        report["pcscd_alive"] = pcscd.stop()
finally:
    server.send_signal(signal.SIGTERM)
    report["server_exit"] = server.wait(30)
    report["server_log"] = server.stderr.read()[-3000:]
print(json.dumps(report))
'''


def _pcscd_prerequisites() -> "str | None":
    why = pcscd_namespace.unavailable()
    if why is not None:
        return why
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        return f"{SYSTEM_PYTHON} not found (needed for pyscard)"
    r = subprocess.run([SYSTEM_PYTHON, "-c", "import smartcard.scard"], capture_output=True,
                       timeout=60)
    if r.returncode != 0:
        return f"pyscard not importable by {SYSTEM_PYTHON} (Debian package python3-pyscard)"
    return None


@pytest.mark.pcscd
@pytest.mark.parametrize("t0", [False, True], ids=["T=1", "T=0"])
def test_serve_replay_through_pcscd_to_pyscard(work, t0):
    why = _pcscd_prerequisites()
    if why:
        pytest.skip(why)
    recording, _ = _record(work, t0)
    # pyscard sends raw TPDUs (no GET RESPONSE of its own): it sends what
    # the recorded card saw and must get what that card answered
    wire = [pair for e in read_recording(recording).exchanges for pair in e.wire]
    if t0:
        assert len(wire) == len(SESSION) + 1  # ECHO's 61 04 and its GET RESPONSE
    wire_path = work / "wire.json"
    wire_path.write_text(json.dumps([c.hex() for c, _ in wire]))
    sock = str(work / "s")
    conf = work / "reader.conf"
    conf.write_text(f'FRIENDLYNAME "scardio replay"\nDEVICENAME socket:{sock}\n'
                    f'LIBPATH {SIM_LIBRARY}\nCHANNELID 0\n')
    child = work / "child.py"
    child.write_text(CHILD)
    report = pcscd_namespace.run_child(
        [SYSTEM_PYTHON, str(child), sys.executable, str(recording), sock, str(conf),
         str(wire_path)], timeout=120)
    assert report["reader"] and report["connect"] == 0, report
    assert report["t0"] == t0, report
    assert report["atr"] == read_recording(recording).header.atr.hex().upper(), report
    assert report["answers"][:-1] == [r.hex().upper() for _, r in wire], report
    assert report["answers"][-1] == "6F00", report       # strict: not in the recording
    assert "is not in the recording" in report["server_log"], report
    assert report["pcscd_alive"] and report["server_exit"] == 0, report
