"""``scardio card serve``: a card written in Python on a Unix socket, reached
by simulated readers opened as ``socket:PATH`` (here in this process, with
scardio's IFD backend; tests/test_card_serve_pcscd.py goes through pcscd).
The server runs as a user runs it: ``python -m scardio card serve ...``."""

from __future__ import annotations

import gc
import itertools
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from typing import Iterator, Optional

import pytest

from helpers_reader import run_cli
from scardio import Device, Reader, errors
from scardio import card_protocol as wire
from scardio.card_server import CardServer, CardSpecError, load_card_class
from scardio.constants import State
from scardio.sim import SIM_LIBRARY

HERE = os.path.dirname(os.path.abspath(__file__))
_luns = itertools.count(0x5E00)

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="socket cards: Unix sockets, tested on Linux")


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = HERE + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


class Served:
    """``scardio card serve`` in a subprocess; its log in .log()."""

    def __init__(self, path: str, spec: str = "serve_cards:CounterCard",
                 *extra: str) -> None:
        self.path = path
        self.err = tempfile.TemporaryFile("w+")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "scardio", "card", "serve", spec, "--socket", path, *extra],
            stdout=subprocess.DEVNULL, stderr=self.err, env=_env())
        deadline = time.monotonic() + 30
        while "serving" not in self.log():
            assert self.proc.poll() is None, self.log()
            assert time.monotonic() < deadline, self.log()
            time.sleep(0.02)

    def log(self) -> str:
        self.err.seek(0)
        return self.err.read()

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(30)


class Hostile:
    """A stand-in server breaking the protocol (serve_cards.hostile)."""

    def __init__(self, mode: str, path: str) -> None:
        self.proc = subprocess.Popen([sys.executable, os.path.join(HERE, "serve_cards.py"),
                                      "hostile", mode, path], stdout=subprocess.PIPE,
                                     env=_env(), text=True)
        assert self.proc.stdout is not None and self.proc.stdout.readline() == "ready\n"

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(30)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@pytest.fixture
def sock_dir() -> Iterator[str]:
    d = tempfile.mkdtemp(prefix="scardio-serve-")
    yield d
    for name in os.listdir(d):
        os.unlink(os.path.join(d, name))
    os.rmdir(d)


def open_reader(path: str, options: str = "timeout=1000,retry=20") -> Reader:
    dev = Device.open_ifd(SIM_LIBRARY, f"socket:{path}?{options}", next(_luns))
    return Reader(dev, power_down_timeout=None)


def wait_state(reader: Reader, present: bool, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (reader.state() > State.ABSENT) == present:
            return True
        time.sleep(0.02)
    return False


# ---- the command line ------------------------------------------------------

def test_help_shows_the_options():
    p = run_cli("card", "serve", "--help", timeout=30)
    assert p.returncode == 0 and p.stderr == ""
    for item in ("--socket", "--replay", "--loose", "--verbose", "SPEC", "MODULE:CLASS",
                 "path/to/file.py:CLASS", "SIGTERM"):
        assert item in p.stdout, item


@pytest.mark.parametrize("spec, message", [
    ("nocolon", "expected MODULE:CLASS"),
    ("no_such_module_xyz:Card", "cannot import module 'no_such_module_xyz'"),
    ("serve_cards:Missing", "has no attribute 'Missing'"),
    ("serve_cards:ATR_T1", "is not a subclass of scardio.sim.VirtualCard"),
    ("serve_cards:BadAtrCard", "is not a valid ATR"),
    ("/no/such/file.py:Card", "no such file"),
])
def test_bad_specs_are_usage_errors(sock_dir, spec, message):
    path = os.path.join(sock_dir, "s")
    p = subprocess.run([sys.executable, "-m", "scardio", "card", "serve", spec,
                        "--socket", path], capture_output=True, text=True, env=_env(),
                       timeout=60)
    assert p.returncode == 2, p.stderr
    assert message in p.stderr
    assert not os.path.exists(path)


def test_spec_or_replay_is_required(sock_dir):
    p = run_cli("card", "serve", "--socket", os.path.join(sock_dir, "s"), timeout=30)
    assert p.returncode == 2 and "needs SPEC" in p.stderr


def test_a_file_path_spec_loads(tmp_path):
    f = tmp_path / "mycard.py"
    f.write_text("from scardio.sim import VirtualCard\n"
                 "class Mine(VirtualCard):\n    atr = bytes.fromhex('3B00')\n")
    cls = load_card_class(f"{f}:Mine")
    assert cls.__name__ == "Mine" and cls().atr == b"\x3b\x00"
    with pytest.raises(CardSpecError):
        load_card_class(f"{f}:Nope")


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 0), (signal.SIGINT, 130)])
def test_signals_stop_it_and_remove_the_socket(sock_dir, sig, code):
    path = os.path.join(sock_dir, "s")
    server = Served(path)
    assert os.path.exists(path)
    assert server.stop(sig) == code, server.log()
    assert not os.path.exists(path)
    assert f"stopped by {signal.Signals(sig).name}" in server.log()


def test_a_stale_socket_file_is_replaced_a_live_one_refused(sock_dir):
    path = os.path.join(sock_dir, "s")
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(path)
    stale.close()  # the file stays, nobody listens
    server = Served(path)
    try:
        p = subprocess.run([sys.executable, "-m", "scardio", "card", "serve",
                            "serve_cards:CounterCard", "--socket", path],
                           capture_output=True, text=True, env=_env(), timeout=60)
        assert p.returncode == 1 and "another server is listening" in p.stderr
        assert os.path.exists(path)  # the live server's socket is left alone
    finally:
        server.stop()


# ---- the protocol, spoken directly -------------------------------------------

class Client:
    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(10)
        self.sock.connect(path)

    def raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def reply(self) -> tuple[int, bytes]:
        hdr = self._exact(wire.HEADER_SIZE)
        if not hdr:
            return -1, b""
        kind, length = wire.decode_header(hdr)
        return kind, self._exact(length)

    def _exact(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                return data
            data += chunk
        return data

    def request(self, kind: int, payload: bytes = b"") -> tuple[int, bytes]:
        self.raw(wire.encode(kind, payload))
        return self.reply()

    def hello(self) -> tuple[int, bytes]:
        return self.request(wire.Message.HELLO, wire.hello_payload())


@pytest.fixture
def server(sock_dir) -> Iterator[tuple[CardServer, str]]:
    from serve_cards import CounterCard
    path = os.path.join(sock_dir, "s")
    srv = CardServer(CounterCard(), path)
    th = threading.Thread(target=srv.serve_forever)
    th.start()
    yield srv, path
    srv.shutdown()
    th.join(10)
    srv.close()
    assert not os.path.exists(path)


def test_protocol_exchange(server):
    srv, path = server
    c = Client(path)
    kind, payload = c.hello()
    assert kind == wire.Message.HELLO | wire.REPLY
    assert struct.unpack("<II", payload[:8]) == (wire.VERSION, wire.MAX_PAYLOAD)
    assert payload[8:] == srv.atr
    assert c.request(wire.Message.POWER_UP) == (wire.Message.POWER_UP | wire.REPLY, b"")
    assert c.request(wire.Message.RESET, b"\x01") == (wire.Message.RESET | wire.REPLY, b"")
    assert c.request(wire.Message.RESET, b"\x00") == (wire.Message.RESET | wire.REPLY, b"")
    assert c.request(wire.Message.APDU, bytes.fromhex("80100000")) == \
        (wire.Message.APDU | wire.REPLY, bytes.fromhex("000000019000"))
    assert c.request(wire.Message.APDU, bytes.fromhex("80300000")) == \
        (wire.Message.APDU | wire.REPLY, b"\x6f\x00")
    kind, text = c.request(wire.Message.APDU, bytes.fromhex("80310000"))
    assert kind == wire.Message.MALFORMED and b"1 bytes" in text
    kind, text = c.request(wire.Message.APDU, bytes.fromhex("80320000"))
    assert kind == wire.Message.MALFORMED and b"str" in text
    assert c.request(wire.Message.POWER_DOWN) == (wire.Message.POWER_DOWN | wire.REPLY, b"")
    assert srv.card.hooks == ["up", "warm", "cold", "down"]  # type: ignore[attr-defined]


@pytest.mark.parametrize("frame, why", [
    (wire.encode(wire.Message.APDU, b"\x00\xa4\x00\x00"), b"expected HELLO"),
    (struct.pack("<II", wire.Message.HELLO, wire.MAX_PAYLOAD + 1), b"payload bytes"),
    (wire.encode(wire.Message.HELLO, struct.pack("<II", 99, wire.MAX_PAYLOAD)), b"version 99"),
    (wire.encode(wire.Message.HELLO, b"\x01"), b"8 bytes"),
])
def test_bad_frames_get_an_error_and_the_connection_closed(server, frame, why):
    _, path = server
    c = Client(path)
    c.raw(frame)
    kind, text = c.reply()
    assert kind == wire.Message.ERROR and why in text, text
    assert c.reply() == (-1, b"")  # closed
    assert Client(path).hello()[0] == wire.Message.HELLO | wire.REPLY  # still serving


def test_bad_request_after_hello_closes(server):
    _, path = server
    c = Client(path)
    c.hello()
    kind, text = c.request(9)
    assert kind == wire.Message.ERROR and b"bad request" in text
    c = Client(path)
    c.hello()
    kind, text = c.request(wire.Message.POWER_UP, b"x")
    assert kind == wire.Message.ERROR


def test_one_reader_holds_the_card(server):
    _, path = server
    first = Client(path)
    assert first.hello()[0] == wire.Message.HELLO | wire.REPLY
    second = Client(path)
    kind, text = second.hello()
    assert kind == wire.Message.ERROR and b"another reader" in text
    first.sock.close()
    time.sleep(0.05)
    assert Client(path).hello()[0] == wire.Message.HELLO | wire.REPLY  # free again


def test_frames_split_and_joined(server):
    _, path = server
    c = Client(path)
    data = wire.encode(wire.Message.HELLO, wire.hello_payload()) + \
        wire.encode(wire.Message.APDU, bytes.fromhex("80100000"))
    for b in data:  # one byte at a time
        c.raw(bytes([b]))
    assert c.reply()[0] == wire.Message.HELLO | wire.REPLY
    assert c.reply() == (wire.Message.APDU | wire.REPLY, bytes.fromhex("000000019000"))


# ---- through the simulated reader ---------------------------------------------

def test_reader_sees_the_card_and_its_answers(sock_dir):
    path = os.path.join(sock_dir, "s")
    server = Served(path)
    reader = open_reader(path)
    try:
        assert wait_state(reader, True)
        card = reader.connect(timeout=10)
        assert card.atr_bytes.hex() == "3bf81300008131fe457363617264696f31b0"
        assert int(card.protocol) == 2
        assert card.transmit("80100000").data == b"\0\0\0\1"
        assert card.transmit("80100000").data == b"\0\0\0\2"  # state across APDUs
        assert card.transmit("80EE000004CAFEBABE").data == bytes.fromhex("CAFEBABE")
        # an exception in the card's code: 6F00, logged, the reader usable
        assert card.transmit("80300000").sw == 0x6F00
        assert card.transmit("80100000").data == b"\0\0\0\3"
        for malformed in ("80310000", "80320000"):
            with pytest.raises(errors.DriverDataError):
                card.transmit(malformed)
        assert card.transmit("80100000").data == b"\0\0\0\4"
        card.disconnect(2)  # unpower
        card = reader.connect(timeout=10)
        hooks = card.transmit("80200000").data.decode()
        assert hooks.startswith("up") and "down,up" in hooks, hooks
    finally:
        reader.close()
        server.stop()
    log = server.log()
    assert "reader connected" in log and "the card's code failed on purpose" in log
    assert "apdu() returned 1 bytes" in log


def test_t0_card_is_framed_by_the_reader(sock_dir):
    path = os.path.join(sock_dir, "s")
    server = Served(path, "serve_cards:T0Card")
    reader = open_reader(path)
    try:
        assert wait_state(reader, True)
        card = reader.connect(timeout=10)
        assert int(card.protocol) == 1
        # the reader answers 61 08 and the data comes with GET RESPONSE
        assert card.transmit("80CA00000100", auto_get_response=False).sw == 0x6108
        assert card.transmit("00C0000008").data == bytes(range(8))
        assert card.transmit("80CA00000100").data == bytes(range(8))
    finally:
        reader.close()
        server.stop()


def test_stop_and_restart_are_removal_and_arrival(sock_dir):
    path = os.path.join(sock_dir, "s")
    server = Served(path)
    reader = open_reader(path)
    try:
        assert wait_state(reader, True)
        card = reader.connect(timeout=10)
        assert card.transmit("80100000").ok
        server.stop()
        assert wait_state(reader, False)
        with pytest.raises(errors.ScardioError):
            card.transmit("80100000")
        server = Served(path)
        assert wait_state(reader, True)
        card = reader.connect(timeout=10)
        # the same server process was restarted: a fresh card object
        assert card.transmit("80100000").data == b"\0\0\0\1"
    finally:
        reader.close()
        server.stop()


def test_no_server_no_card_and_close_is_prompt(sock_dir):
    path = os.path.join(sock_dir, "nobody")
    reader = open_reader(path)
    time.sleep(0.2)
    assert reader.state() == State.ABSENT
    t = time.monotonic()
    reader.close()
    assert time.monotonic() - t < 2


def test_bad_device_names_fail_to_open(sock_dir):
    for name in ("socket:", "socket:/x?timeout=0", "socket:/x?timeout=abc",
                 "socket:/x?retry=5", "socket:/" + "x" * 200):
        with pytest.raises(errors.ScardioError):
            Device.open_ifd(SIM_LIBRARY, name, next(_luns)).close()


def test_two_readers_two_cards(sock_dir):
    paths = [os.path.join(sock_dir, n) for n in ("a", "b")]
    servers = [Served(p) for p in paths]
    readers = [open_reader(p) for p in paths]
    try:
        cards = []
        for r in readers:
            assert wait_state(r, True)
            cards.append(r.connect(timeout=10))
        assert cards[0].transmit("80100000").data == b"\0\0\0\1"
        assert cards[0].transmit("80100000").data == b"\0\0\0\2"
        assert cards[1].transmit("80100000").data == b"\0\0\0\1"  # its own card
    finally:
        for r in readers:
            r.close()
        for s in servers:
            s.stop()


def test_a_second_reader_on_the_same_server_sees_no_card(sock_dir):
    path = os.path.join(sock_dir, "s")
    server = Served(path)
    first, second = open_reader(path), open_reader(path)
    try:
        assert wait_state(first, True) or wait_state(second, True)
        time.sleep(0.3)
        assert sorted([first.state() > State.ABSENT, second.state() > State.ABSENT]) == \
            [False, True]
    finally:
        first.close()
        second.close()
        server.stop()
    assert "the card is in another reader" in server.log()


# ---- hostile servers ------------------------------------------------------------

@pytest.mark.parametrize("mode, error", [
    # a timeout, or the removal it causes when the core sees that first
    ("hang", (errors.TimeoutError, errors.NoCardError)),
    ("drop", errors.NoCardError),
    ("oversize", errors.ScardioError),
    ("wrongtype", errors.ScardioError),
])
def test_hostile_servers_give_typed_errors_and_the_reader_recovers(sock_dir, mode, error):
    path = os.path.join(sock_dir, "s")
    bad = Hostile(mode, path)
    reader = open_reader(path, "timeout=300,retry=20")
    try:
        assert wait_state(reader, True)
        card = reader.connect(timeout=10)
        t = time.monotonic()
        with pytest.raises(error) as got:
            card.transmit("80100000")
        assert time.monotonic() - t < 3  # bounded by the timeout option
        if mode == "hang":
            assert "driver code 613" in str(got.value)  # IFD_RESPONSE_TIMEOUT
        card.disconnect(2)
        bad.stop()
        assert wait_state(reader, False)  # (it may have reconnected to the hostile one)
        # a good server at the same path: the reader inserts its card
        server = Served(path)
        try:
            assert wait_state(reader, True)
            deadline = time.monotonic() + 10
            while True:  # the first look may still see the hostile server's card leave
                try:
                    card = reader.connect(timeout=10)
                    break
                except errors.ScardioError:
                    assert time.monotonic() < deadline
                    time.sleep(0.05)
            assert card.transmit("80100000").data == b"\0\0\0\1"
        finally:
            reader.close()
            server.stop()
    finally:
        bad.stop() if bad.proc.poll() is None else None
        if not reader.closed:
            reader.close()


def test_a_garbage_hello_is_no_card(sock_dir):
    path = os.path.join(sock_dir, "s")
    bad = Hostile("badhello", path)
    reader = open_reader(path, "timeout=300,retry=20")
    try:
        time.sleep(0.5)
        assert reader.state() == State.ABSENT
    finally:
        reader.close()
        bad.stop()


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _threads() -> int:
    return len(os.listdir("/proc/self/task"))


def test_nothing_leaks_over_reader_and_server_cycles(sock_dir):
    path = os.path.join(sock_dir, "s")
    server: Optional[Served] = Served(path)
    try:
        reader = open_reader(path)  # warm-up: the library and the core loaded
        assert wait_state(reader, True)
        reader.close()
        # Objects earlier tests dropped in reference cycles (devices with
        # their eventfds, capture files) would otherwise be collected in
        # the middle of the count.
        gc.collect()
        fds, threads = _fds(), _threads()
        for i in range(8):
            reader = open_reader(path)
            assert wait_state(reader, True)
            card = reader.connect(timeout=10)
            assert card.transmit("80100000").ok
            if i % 2:
                server.stop()
                assert wait_state(reader, False)
                server = Served(path)
                assert wait_state(reader, True)
            reader.close()
        gc.collect()
        deadline = time.monotonic() + 5
        while (_fds(), _threads()) != (fds, threads) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert (_fds(), _threads()) == (fds, threads)
    finally:
        if server is not None:
            server.stop()


def test_a_refused_socket_leaks_no_descriptor(sock_dir):
    from serve_cards import CounterCard
    path = os.path.join(sock_dir, "s")
    with open(path, "w"):
        pass  # not a socket
    fds = _fds()
    for _ in range(5):
        with pytest.raises(OSError, match="is not a socket"):
            CardServer(CounterCard(), path)
    assert _fds() == fds


def test_verbose_logs_every_apdu(sock_dir):
    path = os.path.join(sock_dir, "s")
    server = Served(path, "serve_cards:CounterCard", "--verbose")
    try:
        c = Client(path)
        c.hello()
        assert c.request(wire.Message.APDU, bytes.fromhex("80100000"))[1] == \
            bytes.fromhex("000000019000")
    finally:
        server.stop()
    log = server.log()
    assert "> 80 10 00 00" in log and "< 00 00 00 01 90 00" in log


def test_quiet_by_default(sock_dir):
    path = os.path.join(sock_dir, "s")
    server = Served(path)
    try:
        c = Client(path)
        c.hello()
        c.request(wire.Message.APDU, bytes.fromhex("80100000"))
    finally:
        server.stop()
    assert "80 10 00 00" not in server.log()
