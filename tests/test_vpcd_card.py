"""Tests of the vpcd virtual card (tests/vpcd_card.py).

Three groups:

* the card model alone (every command and status word);
* the VirtualCard transport against a fake vpcd driver in this process;
* ``@pytest.mark.pcscd``: the real Debian vpcd driver loaded by pcscd, with
  pyscard (``/usr/bin/python3`` only) as the client in a subprocess.  These
  skip with a reason when pcscd, vpcd, pyscard or root are missing.

pcscd runs isolated: socket-activated on a private socket in the test's temp
directory (PCSCLITE_CSOCK_NAME points the client at it), in a private mount
and network namespace (tests/pcscd_namespace.py: its own /run/pcscd and
loopback), so it neither needs nor disturbs a system pcscd and vpcd's ports
are its own.  The virtual cards plug into vpcd from inside that network
namespace (``pcscd_namespace.in_network_of``).
"""

from __future__ import annotations

import json
import os
import selectors
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

import pytest

try:
    import vpcd_card as vc
    import pcscd_namespace
except ImportError:  # tests/ imported as a package
    from tests import vpcd_card as vc  # type: ignore[no-redef]
    from tests import pcscd_namespace  # type: ignore[no-redef]


def h(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))


SEQ = bytes(i & 0xFF for i in range(4096))


# ---------------------------------------------------------------------------
# The card model alone
# ---------------------------------------------------------------------------

@pytest.fixture
def card() -> vc.CardModel:
    return vc.CardModel(seed=1)


def run(model: vc.CardModel, *apdus: str) -> List[bytes]:
    return [model.process(h(a)) for a in apdus]


SELECT_AID = "00 A4 04 0C 08 F07363617264696F"


@pytest.mark.parametrize("apdu, expected", [
    # length checks come first
    ("", "6700"),
    ("00", "6700"),
    ("00 A4 04", "6700"),
    # class byte
    ("FF CA 00 00 00", "6E00"),
    ("20 A4 00 0C", "6E00"),
    ("A0 A4 00 0C", "6E00"),
    ("FE EE 00 00 00", "6E00"),
    ("01 A4 00 0C 02 3F00", "6881"),          # logical channel 1
    ("83 EE 00 00 00", "6881"),
    ("40 A4 00 0C", "6881"),                  # further interindustry: channel 4+
    ("04 A4 00 0C", "6882"),                  # secure messaging
    ("8C EE 00 00 00", "6882"),
    ("10 A4 00 0C", "6884"),                  # command chaining
    ("90 A4 04 0C", "6884"),
    # malformed bodies, before the instruction is looked at
    ("00 12 00 00 05 01", "6700"),
    ("00 A4 00 0C 03 3F00", "6700"),          # Lc says 3, 2 bytes follow
    ("00 A4 00 0C 01 3F00 00 00", "6700"),
    ("80 EE 00 00 00 00", "6700"),            # extended header truncated
    ("80 EE 00 00 00 00 00 00", "6700"),      # extended Lc = 0
    ("80 EE 00 00 00 00 02 AA", "6700"),      # extended Lc says 2, 1 byte
    # instruction
    ("00 EE 00 00 00", "6D00"),
    ("80 A4 00 0C 02 3F00", "6D00"),
    ("00 12 00 00", "6D00"),
    ("80 00 00 00", "6D00"),
    # SELECT
    ("00 A4 00 0C", "9000"),                  # P1 00, no data: MF
    ("00 A4 00 0C 02 3F00", "9000"),
    ("00 A4 00 00 02 3F00 00", "9000"),       # Le present: still no data
    ("00 A4 00 04 02 3F00", "9000"),
    ("00 A4 00 08 02 3F00", "9000"),
    ("00 A4 00 0C 02 2F01", "9000"),
    ("00 A4 02 0C 02 2F01", "6A86"),          # only P1 00 and 04
    ("00 A4 08 0C 02 2F01", "6A86"),
    ("00 A4 00 0C 02 0101", "6A82"),          # app EF while in the MF
    ("00 A4 00 0C 02 1234", "6A82"),
    ("00 A4 00 0C 03 3F0000", "6700"),
    ("00 A4 00 0C 01 3F", "6700"),
    ("00 A4 04 0C 08 F07363617264696F", "9000"),
    ("00 A4 04 00 08 F07363617264696F 00", "9000"),
    ("00 A4 04 0C 07 F07363617264 69", "6A82"),
    ("00 A4 04 0C 05 A000000003", "6A82"),
    ("00 A4 04 0C 10 " + "F0" * 16, "6A82"),
    ("00 A4 04 0C 11 " + "F0" * 17, "6700"),
    ("00 A4 04 0C", "6700"),
    ("00 A4 01 0C 02 3F00", "6A86"),
    ("00 A4 00 01 02 3F00", "6A86"),
    ("00 A4 00 0E 02 3F00", "6A86"),
    ("00 A4 00 1C 02 3F00", "6A86"),
    # READ / UPDATE BINARY without a current EF
    ("00 B0 00 00 10", "6986"),
    ("00 B0 80 00 10", "6986"),
    ("00 B0 00 00", "6700"),
    ("00 D6 00 00 01 AA", "6986"),
    ("00 D6 00 00", "6700"),
    # GET CHALLENGE
    ("00 84 00 00", "6700"),
    ("00 84 00 00 02 AAAA 08", "6700"),
    ("00 84 01 00 08", "6A86"),
    ("00 84 00 01 08", "6A86"),
    # GET RESPONSE with nothing pending
    ("00 C0 00 00 10", "6985"),
    ("00 C0 00 00", "6700"),
    ("00 C0 01 00 10", "6A86"),
    # ECHO without Le
    ("80 EE 00 00", "9000"),
    ("80 EE 12 34 03 010203", "9000"),
])
def test_status_words(card: vc.CardModel, apdu: str, expected: str) -> None:
    assert card.process(h(apdu)).hex().upper() == expected


def test_read_binary_mf_ef(card: vc.CardModel) -> None:
    assert run(card, "00 A4 00 0C 02 2F01")[0] == h("9000")
    assert card.process(h("00 B0 00 00 10")) == SEQ[:16] + h("9000")
    assert card.process(h("00 B0 00 00 00")) == SEQ[:256] + h("9000")
    assert card.process(h("00 B0 01 02 04")) == SEQ[0x102:0x106] + h("9000")
    assert card.process(h("00 B0 0F F0 10")) == SEQ[0xFF0:] + h("9000")
    # fewer bytes left than Ne (T=1): the rest and 6282
    assert card.process(h("00 B0 0F F8 10")) == SEQ[0xFF8:] + h("6282")
    assert card.process(h("00 B0 10 00 01")) == h("6B00")
    assert card.process(h("00 B0 7F FF 01")) == h("6B00")
    assert card.process(h("00 B0 81 00 01")) == h("6A86")  # short EF id
    assert card.process(h("00 B0 00 00")) == h("6700")     # no Le
    assert card.process(h("00 B0 00 00 01 AA 01")) == h("6700")
    # extended Le
    assert card.process(h("00 B0 00 00 00 10 00")) == SEQ + h("9000")
    assert card.process(h("00 B0 00 00 00 00 00")) == SEQ + h("6282")  # Ne 65536


def test_update_binary(card: vc.CardModel) -> None:
    assert run(card, "00 A4 00 0C 02 2F01", "00 D6 00 10 03 AABBCC") == [h("9000")] * 2
    assert card.process(h("00 B0 00 0F 05")) == h("0F AABBCC 13 9000")
    assert card.process(h("00 D6 0F FF 01 EE")) == h("9000")
    assert card.process(h("00 D6 0F FF 02 EEEE")) == h("6A84")
    assert card.process(h("00 D6 10 00 01 EE")) == h("6B00")
    assert card.process(h("00 D6 81 00 01 EE")) == h("6A86")
    assert card.process(h("00 D6 00 00")) == h("6700")
    # the other EF is untouched; contents survive a reset
    assert run(card, SELECT_AID, "00 A4 00 0C 02 0101", "00 B0 00 10 01") == [
        h("9000"), h("9000"), h("10 9000")]
    card.reset()
    assert run(card, "00 A4 00 0C 02 2F01", "00 B0 00 10 01") == [h("9000"), h("AA 9000")]


def test_application_and_its_ef(card: vc.CardModel) -> None:
    assert run(card, SELECT_AID, "00 A4 00 0C 02 0101") == [h("9000")] * 2
    assert card.process(h("00 B0 00 20 02")) == SEQ[0x20:0x22] + h("9000")
    # the MF's EF is not visible from the application ...
    assert card.process(h("00 A4 00 0C 02 2F01")) == h("6A82")
    # ... and the selection survives the failed SELECT
    assert card.process(h("00 B0 00 00 01")) == SEQ[:1] + h("9000")
    # selecting the AID alone leaves no current EF
    assert run(card, SELECT_AID, "00 B0 00 00 01") == [h("9000"), h("6986")]
    # back to the MF
    assert run(card, "00 A4 00 0C 02 3F00", "00 A4 00 0C 02 0101",
               "00 A4 00 0C 02 2F01") == [h("9000"), h("6A82"), h("9000")]
    # selecting the MF leaves no current EF
    assert run(card, "00 A4 00 0C 02 3F00", "00 B0 00 00 01") == [h("9000"), h("6986")]


def test_reset_forgets_selection(card: vc.CardModel) -> None:
    run(card, SELECT_AID, "00 A4 00 0C 02 0101")
    card.reset()
    assert card.process(h("00 B0 00 00 01")) == h("6986")
    assert card.process(h("00 A4 00 0C 02 0101")) == h("6A82")


@pytest.mark.parametrize("ne", [1, 8, 255, 256, 1000, 65536])
def test_echo_without_data(card: vc.CardModel, ne: int) -> None:
    if ne <= 256:
        apdu = h("80 EE 00 00") + bytes([ne & 0xFF])
    else:
        apdu = h("80 EE 00 00 00") + struct.pack(">H", ne & 0xFFFF)
    n = min(ne, 65535)  # Ne 65536 is capped
    assert card.process(apdu) == bytes(i & 0xFF for i in range(n)) + h("9000")


@pytest.mark.parametrize("data_len, ne", [(1, 1), (1, 5), (3, 256), (255, 255),
                                          (255, 256), (7, 3), (300, 1000)])
def test_echo_repeats_data(card: vc.CardModel, data_len: int, ne: int) -> None:
    data = bytes((0xA0 + i) & 0xFF for i in range(data_len))
    if data_len <= 255 and ne <= 256:
        apdu = h("80 EE 01 02") + bytes([data_len]) + data + bytes([ne & 0xFF])
    else:
        apdu = (h("80 EE 01 02 00") + struct.pack(">H", data_len) + data
                + struct.pack(">H", ne & 0xFFFF))
    expected = (data * (ne // data_len + 1))[:ne]
    assert card.process(apdu) == expected + h("9000")


def test_get_challenge(card: vc.CardModel) -> None:
    a = card.process(h("00 84 00 00 08"))
    b = card.process(h("00 84 00 00 08"))
    assert len(a) == len(b) == 10 and a[-2:] == b[-2:] == h("9000")
    assert a != b
    assert len(card.process(h("00 84 00 00 00"))) == 258
    assert len(card.process(h("00 84 00 00 00 00 00"))) == 65537  # Ne capped
    # the same seed gives the same challenges; the default start state is
    # the C card's (xorshift32 from 0x05CA2D10, top byte of each step)
    assert vc.CardModel(seed=1).process(h("00 84 00 00 08")) == a
    assert vc.CardModel().process(h("00 84 00 00 02")) == h("4D 73 9000")


def test_t0_behaviour() -> None:
    card = vc.CardModel(vc.ATR_T0)
    assert card.protocol == 0
    # case 4: data then GET RESPONSE
    assert card.process(h("80 EE 00 00 02 ABCD 05")) == h("6105")
    assert card.process(h("00 C0 00 00 05")) == h("ABCDABCDAB 9000")
    assert card.process(h("00 C0 00 00 05")) == h("6985")
    # 256 bytes announced as 61 00, fetched in two parts
    assert card.process(h("80 EE 00 00 01 11 00")) == h("6100")
    assert card.process(h("00 C0 00 00 80")) == b"\x11" * 128 + h("6180")
    assert card.process(h("00 C0 00 00 80")) == b"\x11" * 128 + h("9000")
    # asking for too much: 6Cxx and the data stays
    assert card.process(h("80 EE 00 00 01 33 03")) == h("6103")
    assert card.process(h("00 C0 00 00 10")) == h("6C03")
    assert card.process(h("00 C0 00 00 03")) == h("333333 9000")
    # case 2 answers directly
    assert card.process(h("80 EE 00 00 03")) == h("000102 9000")
    # a wrong GET RESPONSE keeps the data; another command drops it
    assert card.process(h("80 EE 00 00 01 22 02")) == h("6102")
    assert card.process(h("00 C0 00 00")) == h("6700")
    assert card.process(h("00 C0 00 00 02")) == h("2222 9000")
    assert card.process(h("80 EE 00 00 01 22 02")) == h("6102")
    assert card.process(h("00 A4 00 0C 02 3F00")) == h("9000")
    assert card.process(h("00 C0 00 00 02")) == h("6985")
    assert card.process(h("80 EE 00 00 01 22 02")) == h("6102")
    assert card.process(h("80 C0 00 00 02")) == h("6D00")   # proprietary C0
    assert card.process(h("00 C0 00 00 02")) == h("6985")
    # case 4 with only a status word stays 9000
    assert card.process(h("00 A4 00 00 02 3F00 00")) == h("9000")
    # READ BINARY past the end: the exact length
    assert run(card, "00 A4 00 0C 02 2F01", "00 B0 0F F8 10") == [h("9000"), h("6C08")]
    # extended APDUs need T=1
    assert card.process(h("80 EE 00 00 00 00 10")) == h("6700")


def test_t1_case4_answers_directly() -> None:
    card = vc.CardModel()
    assert card.protocol == 1
    assert card.process(h("80 EE 00 00 02 ABCD 05")) == h("ABCDABCDAB 9000")
    assert card.process(h("00 C0 00 00 05")) == h("6985")


def test_atr_and_protocol_choice() -> None:
    assert vc.CardModel().atr == vc.ATR_T1
    assert vc.atr_protocols(vc.ATR_T1) == [1]
    assert vc.atr_protocols(vc.ATR_T0) == [0]
    assert vc.atr_protocols(h("3B 80 80 01 01")) == [0, 1]  # TD1 T=0, TD2 T=1
    assert vc.CardModel(h("3B 80 80 01 01")).protocol == 1
    assert vc.CardModel(vc.ATR_T1, protocol=0).protocol == 0
    assert vc.CardModel(bytes(40)).atr == bytes(33)
    with pytest.raises(ValueError):
        vc.CardModel(b"")
    with pytest.raises(ValueError):
        vc.CardModel(protocol=2)


@pytest.mark.parametrize("apdu, parsed", [
    ("00 A4 04 0C", (0, None, False)),
    ("00 B0 00 00 00", (0, 256, False)),
    ("00 B0 00 00 10", (0, 16, False)),
    ("00 A4 04 0C 02 3F00", (2, None, False)),
    ("00 A4 04 0C 02 3F00 00", (2, 256, False)),
    ("00 B0 00 00 00 00 00", (0, 65536, True)),
    ("00 B0 00 00 00 01 00", (0, 256, True)),
    ("80 EE 00 00 00 00 01 AA", (1, None, True)),
    ("80 EE 00 00 00 00 01 AA 00 00", (1, 65536, True)),
    ("80 EE 00 00 00 00 01 AA 01 02", (1, 258, True)),
])
def test_parse_apdu(apdu: str, parsed: tuple) -> None:
    _, _, _, _, data, ne, ext = vc.parse_apdu(h(apdu))
    assert (len(data), ne, ext) == parsed


# ---------------------------------------------------------------------------
# The transport, against a fake vpcd in this process
# ---------------------------------------------------------------------------

class FakeDriver:
    """The driver side of the vpcd protocol, for one slot."""

    def __init__(self) -> None:
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(1)
        self.port = self.listener.getsockname()[1]
        self.conn: Optional[socket.socket] = None

    def accept(self, timeout: float = 5.0) -> None:
        self.listener.settimeout(timeout)
        self.conn, _ = self.listener.accept()
        self.conn.settimeout(timeout)

    def send(self, payload: bytes) -> None:
        assert self.conn is not None
        self.conn.sendall(struct.pack(">H", len(payload)))  # two writes, like vpcd
        self.conn.sendall(payload)

    def recv(self) -> Optional[bytes]:
        """The card's answer, or None on EOF."""
        assert self.conn is not None
        header = self._exact(2)
        if header is None:
            return None
        body = self._exact(struct.unpack(">H", header)[0])
        return body

    def _exact(self, n: int) -> Optional[bytes]:
        assert self.conn is not None
        buf = b""
        while len(buf) < n:
            chunk = self.conn.recv(n - len(buf))
            if not chunk:
                return None
            buf += chunk
        return buf

    def transact(self, payload: bytes) -> Optional[bytes]:
        self.send(payload)
        return self.recv()

    def close_conn(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def close(self) -> None:
        self.close_conn()
        self.listener.close()


@pytest.fixture
def fake() -> Iterator[FakeDriver]:
    drv = FakeDriver()
    yield drv
    drv.close()


def card_threads() -> List[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("vpcd-card-")]


def test_transport_controls_and_apdus(fake: FakeDriver) -> None:
    with vc.VirtualCard(fake.port, seed=3) as card:
        fake.accept()
        assert card.inserted
        sock = card._sock
        assert sock is not None
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        assert fake.transact(b"\x04") == vc.ATR_T1          # presence poll
        fake.send(b"\x01")                                   # power on: no answer
        assert fake.transact(b"\x04") == vc.ATR_T1
        assert card.wait_for(lambda c: c["power_ons"] == 1, 2)
        assert card.powered
        assert fake.transact(h(SELECT_AID)) == h("9000")
        assert fake.transact(h("80 EE 00 00 00")) == bytes(range(256)) + h("9000")
        fake.send(b"\x02")                                   # reset
        assert fake.transact(b"\x04") == vc.ATR_T1
        fake.send(b"\x00")                                   # power off
        assert card.wait_for(lambda c: c["power_offs"] == 1, 2)
        assert not card.powered
        c = card.counters()
        assert c["atr_requests"] == 3 and c["resets"] == 1 and c["apdus"] == 2
        assert [m[1] for m in card.messages] == ["atr", "on", "atr", "apdu", "apdu",
                                                 "reset", "atr", "off"]
        assert card.apdu_log[0] == (h(SELECT_AID), h("9000"))
    assert card_threads() == []
    assert not card.inserted
    # the driver sees the removal as EOF
    assert fake.recv() is None


def test_transport_reset_drops_selection(fake: FakeDriver) -> None:
    with vc.VirtualCard(fake.port) as card:
        fake.accept()
        assert fake.transact(h("00 A4 00 0C 02 2F01")) == h("9000")
        assert fake.transact(h("00 B0 00 00 01")) == h("00 9000")
        fake.send(b"\x02")
        assert fake.transact(h("00 B0 00 00 01")) == h("6986")
        assert card.resets == 1


def test_transport_custom_atr_and_large_frames(fake: FakeDriver) -> None:
    with vc.VirtualCard(fake.port, atr=vc.ATR_T0) as card:
        fake.accept()
        assert fake.transact(b"\x04") == vc.ATR_T0
        assert card.model.protocol == 0
    fake.close_conn()
    with vc.VirtualCard(fake.port) as card:
        fake.accept()
        big = h("80 EE 00 00 00 FF F0")  # Ne 65520: response of 65522 bytes
        assert fake.transact(big) == bytes(i & 0xFF for i in range(0xFFF0)) + h("9000")
        too_big = h("80 EE 00 00 00 00 00")  # 65535 + 2 bytes cannot be framed
        assert fake.transact(too_big) == h("6700")


def test_transport_unknown_controls_get_no_answer(fake: FakeDriver) -> None:
    with vc.VirtualCard(fake.port) as card:
        fake.accept()
        fake.send(b"\x07")
        fake.send(b"")
        assert fake.transact(b"\x04") == vc.ATR_T1  # next answer is the ATR
        assert card.unknown_controls == 2


def test_stop_answering_keeps_connection(fake: FakeDriver) -> None:
    with vc.VirtualCard(fake.port) as card:
        fake.accept()
        assert fake.transact(b"\x04") == vc.ATR_T1
        card.stop_answering()
        assert not card.answering
        fake.send(b"\x04")
        assert card.wait_for(lambda c: c["unanswered"] == 1, 2)
        assert fake.conn is not None
        fake.conn.settimeout(0.3)
        with pytest.raises(socket.timeout):
            fake.conn.recv(1)
        assert card.inserted
    # removing a silent card closes the connection
    fake.conn.settimeout(2)
    assert fake.conn.recv(1) == b""
    assert card.removals == 1 and card.peer_closes == 0


def test_remove_and_reinsert(fake: FakeDriver) -> None:
    card = vc.VirtualCard(fake.port)
    try:
        for i in range(3):
            card.insert()
            fake.accept()
            assert fake.transact(b"\x04") == vc.ATR_T1
            card.remove()
            assert fake.recv() is None
            fake.close_conn()
            assert not card.inserted
        c = card.counters()
        assert c["insertions"] == 3 and c["removals"] == 3 and c["peer_closes"] == 0
        card.remove()  # removing a removed card is a no-op
        assert card.removals == 3
    finally:
        card.remove()
    assert card_threads() == []


def test_driver_closing_is_seen(fake: FakeDriver) -> None:
    card = vc.VirtualCard(fake.port)
    try:
        card.insert()
        fake.accept()
        assert fake.transact(b"\x04") == vc.ATR_T1
        fake.close_conn()
        assert card.wait_for(lambda c: c["peer_closes"] == 1, 2)
        deadline = time.monotonic() + 2
        while card.inserted and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not card.inserted
        card.insert()  # a closed card can be inserted again
        fake.accept()
        assert fake.transact(b"\x04") == vc.ATR_T1
    finally:
        card.remove()
    assert card.removals == 1
    assert card_threads() == []


def test_insert_twice_is_an_error(fake: FakeDriver) -> None:
    with vc.VirtualCard(fake.port) as card:
        with pytest.raises(RuntimeError):
            card.insert()


def test_insert_waits_for_the_driver() -> None:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    card = vc.VirtualCard(port)
    t0 = time.monotonic()
    with pytest.raises(TimeoutError):
        card.insert(timeout=0.3)
    assert 0.25 < time.monotonic() - t0 < 3
    assert not card.inserted and card.insertions == 0
    # the driver starts listening late: insert() retries until it does
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)

    def listen_later() -> None:
        time.sleep(0.3)
        listener.bind(("127.0.0.1", port))
        listener.listen(1)

    t = threading.Thread(target=listen_later)
    t.start()
    try:
        card.insert(timeout=5)
        t.join()
        conn, _ = listener.accept()
        conn.close()
    finally:
        t.join()
        card.remove()
        listener.close()
    assert card.insertions == 1


def test_cli_help_and_timeout() -> None:
    path = Path(vc.__file__)
    r = subprocess.run([sys.executable, str(path), "--help"], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 0 and "--port" in r.stdout
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    assert vc.main(["--port", str(port), "--timeout", "0.2"]) == 1


# ---------------------------------------------------------------------------
# The real vpcd driver, through pcscd and pyscard
# ---------------------------------------------------------------------------

VPCD_LIB = "/usr/lib/pcsc/drivers/serial/libifdvpcd.so"
SYSTEM_PYTHON = "/usr/bin/python3"
FRIENDLY = "scardio test vpcd"

# The pyscard side, run by /usr/bin/python3: one JSON request per line in,
# one JSON answer per line out.
CLIENT_SCRIPT = r'''
import json, sys, time
from smartcard import scard as S

U32 = 0xFFFFFFFF
hr, ctx = S.SCardEstablishContext(S.SCARD_SCOPE_USER)
handles = {}

def state(reader):
    hr, st = S.SCardGetStatusChange(ctx, 0, [(reader, S.SCARD_STATE_UNAWARE)])
    if hr & U32:
        return hr & U32, 0, b""
    return 0, st[0][1], bytes(st[0][2])

def op_readers(req):
    hr, rs = S.SCardListReaders(ctx, [])
    return {"hr": hr & U32, "readers": list(rs or [])}

def op_wait(req):
    """Wait until the reader is present (True) or empty (False)."""
    reader, want = req["reader"], req["present"]
    t0 = time.monotonic()
    deadline = t0 + req["timeout"]
    hr, cur, atr = state(reader)
    while True:
        if not (hr & U32):
            present = bool(cur & S.SCARD_STATE_PRESENT)
            if present == want:
                return {"ok": True, "state": cur, "atr": atr.hex(),
                        "elapsed": time.monotonic() - t0}
        left = deadline - time.monotonic()
        if left <= 0:
            return {"ok": False, "state": cur, "atr": atr.hex(), "hr": hr & U32}
        hr, st = S.SCardGetStatusChange(ctx, max(1, int(left * 1000)),
                                        [(reader, cur & ~S.SCARD_STATE_CHANGED)])
        if not (hr & U32):
            cur, atr = st[0][1], bytes(st[0][2])

def op_state(req):
    hr, cur, atr = state(req["reader"])
    return {"hr": hr, "state": cur, "atr": atr.hex()}

def op_connect(req):
    hr, hcard, proto = S.SCardConnect(ctx, req["reader"], S.SCARD_SHARE_SHARED,
                                      S.SCARD_PROTOCOL_T0 | S.SCARD_PROTOCOL_T1)
    if hr & U32:
        return {"hr": hr & U32}
    handles[req["reader"]] = (hcard, proto)
    return {"hr": 0, "protocol": proto}

def op_transmit(req):
    hcard, proto = handles[req["reader"]]
    apdu = list(bytes.fromhex(req["apdu"]))
    times = []
    for _ in range(req.get("repeat", 1)):
        t0 = time.perf_counter()
        hr, resp = S.SCardTransmit(hcard, proto, apdu)
        times.append(time.perf_counter() - t0)
        if hr & U32:
            return {"hr": hr & U32, "times": times}
    return {"hr": 0, "resp": bytes(resp).hex(), "times": times}

def op_disconnect(req):
    hcard, _ = handles.pop(req["reader"])
    return {"hr": S.SCardDisconnect(hcard, req.get("disposition", S.SCARD_LEAVE_CARD)) & U32}

OPS = {k[3:]: v for k, v in globals().items() if k.startswith("op_")}
print(json.dumps({"hr": hr & U32}), flush=True)
for line in sys.stdin:
    req = json.loads(line)
    if req["op"] == "quit":
        break
    try:
        out = OPS[req["op"]](req)
    except Exception as exc:
        out = {"error": repr(exc)}
    print(json.dumps(out), flush=True)
for hcard, _ in handles.values():
    S.SCardDisconnect(hcard, S.SCARD_LEAVE_CARD)
S.SCardReleaseContext(ctx)
'''


def _prerequisites() -> Optional[str]:
    """Why the pcscd tests cannot run here, or None."""
    why = pcscd_namespace.unavailable()
    if why is not None:
        return why
    if not os.path.exists(VPCD_LIB):
        return f"vpcd driver not installed ({VPCD_LIB}; Debian package vsmartcard-vpcd)"
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        return f"{SYSTEM_PYTHON} not found (needed for pyscard)"
    r = subprocess.run([SYSTEM_PYTHON, "-c", "import smartcard.scard"],
                       capture_output=True, timeout=60)
    if r.returncode != 0:
        return f"pyscard not importable by {SYSTEM_PYTHON} (Debian package python3-pyscard)"
    return None


class Pcscd:
    """pcscd with a private reader.conf and a private client socket, in a
    private mount and network namespace of its own."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = vc.DEFAULT_PORT  # the namespace's own: always free
        self.conf = workdir / "reader.conf"
        self.conf.write_text(
            f'FRIENDLYNAME "{FRIENDLY}"\n'
            f"DEVICENAME   /dev/null:0x{self.port:04X}\n"
            f"LIBPATH      {VPCD_LIB}\n"
            f"CHANNELID    0x{self.port:04X}\n")
        self.socket_path = workdir / "pcscd.comm"
        self.log_path = workdir / "pcscd.log"
        self.proc: Optional[subprocess.Popen] = None

    def start(self) -> None:
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(self.socket_path))
        listener.listen(64)
        # Systemd-style socket activation: the listening socket becomes pcscd's
        # fd 3 (handed over as the shell's stdin), LISTEN_PID is pcscd's pid
        # because the shell execs it.
        script = (f"LISTEN_PID=$$ LISTEN_FDS=1 exec {pcscd_namespace.pcscd_path()} -f -d "
                  f"-c '{self.conf}' 3<&0 0</dev/null")
        log = open(self.log_path, "wb")
        try:
            self.proc = pcscd_namespace.spawn(script, stdin=listener.fileno(),
                                              stdout=log, stderr=subprocess.STDOUT)
        finally:
            listener.close()
            log.close()

    def card(self, slot: int = 0, **kw: Any) -> "vc.VirtualCard":
        """A virtual card for vpcd's *slot*, plugging in from pcscd's network."""
        assert self.proc is not None
        return NamespacedCard(self.proc.pid, self.port + slot, **kw)

    def env(self) -> Dict[str, str]:
        return dict(os.environ, PCSCLITE_CSOCK_NAME=str(self.socket_path))

    def log_tail(self, n: int = 60) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-n:])

    def stop(self) -> None:
        if self.proc is None:
            return
        pcscd_namespace.kill(self.proc)
        self.proc = None
        try:
            self.socket_path.unlink()
        except OSError:
            pass


class NamespacedCard(vc.VirtualCard):
    """A VirtualCard whose connection to vpcd is made inside the network
    namespace of process *netns_pid* (pcscd's): vpcd listens there."""

    def __init__(self, netns_pid: int, port: int, **kw: Any) -> None:
        super().__init__(port, **kw)
        self._netns_pid = netns_pid

    def insert(self, timeout: Optional[float] = None) -> None:
        pcscd_namespace.in_network_of(self._netns_pid, super().insert, timeout)


class Client:
    """The pyscard subprocess."""

    def __init__(self, pcscd: Pcscd) -> None:
        self.pcscd = pcscd
        self.stderr = open(pcscd.workdir / f"client-{time.monotonic_ns()}.err", "w+b")
        self.proc = subprocess.Popen([SYSTEM_PYTHON, "-c", CLIENT_SCRIPT],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.stderr, env=pcscd.env())
        self._sel = selectors.DefaultSelector()
        assert self.proc.stdout is not None
        self._sel.register(self.proc.stdout, selectors.EVENT_READ)
        self._buf = b""
        hello = self._read(15)
        assert hello["hr"] == 0, f"SCardEstablishContext: {hello}"

    def _read(self, timeout: float) -> Dict[str, Any]:
        deadline = time.monotonic() + timeout
        assert self.proc.stdout is not None
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not self._sel.select(left):
                raise AssertionError(f"pyscard client gave no answer in {timeout} s\n"
                                     + self._diagnostics())
            chunk = os.read(self.proc.stdout.fileno(), 1 << 20)
            if not chunk:
                raise AssertionError("pyscard client exited\n" + self._diagnostics())
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return json.loads(line)

    def _diagnostics(self) -> str:
        self.stderr.seek(0)
        err = self.stderr.read().decode(errors="replace")
        return f"client stderr:\n{err}\npcscd log tail:\n{self.pcscd.log_tail()}"

    def call(self, op: str, **kw: Any) -> Dict[str, Any]:
        """One request; ``timeout`` in kw is the request's own (wait)."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(dict(kw, op=op)).encode() + b"\n")
        self.proc.stdin.flush()
        out = self._read(15 + float(kw.get("timeout", 0)))
        assert "error" not in out, out["error"] + "\n" + self._diagnostics()
        return out

    def transmit(self, reader: str, apdu: bytes, repeat: int = 1) -> bytes:
        out = self.call("transmit", reader=reader, apdu=apdu.hex(), repeat=repeat)
        assert out["hr"] == 0, f"SCardTransmit: 0x{out['hr']:08X}"
        return bytes.fromhex(out["resp"])

    def close(self) -> None:
        try:
            if self.proc.poll() is None and self.proc.stdin is not None:
                self.proc.stdin.write(b'{"op": "quit"}\n')
                self.proc.stdin.close()
                self.proc.wait(10)
        except (OSError, subprocess.TimeoutExpired):
            pass
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._sel.close()
        self.stderr.close()


@pytest.fixture(scope="module")
def pcscd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pcscd]:
    why = _prerequisites()
    if why:
        pytest.skip(why)
    daemon = Pcscd(tmp_path_factory.mktemp("pcscd"))
    try:
        daemon.start()
        # ready when both slots are listed
        deadline = time.monotonic() + 20
        client = Client(daemon)
        try:
            while True:
                out = client.call("readers")
                if out["hr"] == 0 and len(out["readers"]) >= 2:
                    break
                assert daemon.proc is not None
                if daemon.proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError("pcscd did not list the vpcd readers\n"
                                         + daemon.log_tail())
                time.sleep(0.1)
        finally:
            client.close()
        yield daemon
    finally:
        daemon.stop()


@pytest.fixture
def client(pcscd: Pcscd) -> Iterator[Client]:
    c = Client(pcscd)
    try:
        yield c
    finally:
        c.close()


READER0 = f"{FRIENDLY} 00 00"
READER1 = f"{FRIENDLY} 00 01"
PRESENCE_TIMEOUT = 5.0  # pcscd polls vpcd every 400 ms


@pytest.fixture
def slot0(pcscd: Pcscd, client: Client) -> Iterator[vc.VirtualCard]:
    """A card for slot 0, not inserted; the reader is empty to begin with."""
    assert client.call("wait", reader=READER0, present=False, timeout=PRESENCE_TIMEOUT)["ok"]
    card = pcscd.card(0)
    try:
        yield card
    finally:
        card.remove()


def insert_and_wait(client: Client, card: vc.VirtualCard, reader: str) -> Dict[str, Any]:
    card.insert()
    out = client.call("wait", reader=reader, present=True, timeout=PRESENCE_TIMEOUT)
    assert out["ok"], f"insertion not seen: {out}"
    return out


@pytest.mark.pcscd
def test_pcscd_lists_both_vpcd_slots(client: Client) -> None:
    out = client.call("readers")
    assert out["hr"] == 0
    assert READER0 in out["readers"] and READER1 in out["readers"]


@pytest.mark.pcscd
def test_pcscd_sees_insertion_with_atr(client: Client, slot0: vc.VirtualCard) -> None:
    out = insert_and_wait(client, slot0, READER0)
    assert bytes.fromhex(out["atr"]) == vc.ATR_T1
    c = slot0.counters()
    # vpcd polls presence with ATR requests; pcscd powers a new card up
    assert c["atr_requests"] >= 2 and c["power_ons"] >= 1
    kinds = [m[1] for m in slot0.messages]
    assert kinds[0] == "atr"
    for i, kind in enumerate(kinds):
        if kind in ("on", "reset"):
            assert kinds[i + 1] == "atr", kinds  # power-up and reset read the ATR
    assert "apdu" not in kinds


@pytest.mark.pcscd
def test_pcscd_apdu_round_trips(client: Client, slot0: vc.VirtualCard) -> None:
    insert_and_wait(client, slot0, READER0)
    out = client.call("connect", reader=READER0)
    assert out["hr"] == 0 and out["protocol"] == 2  # SCARD_PROTOCOL_T1
    assert slot0.powered
    tx = lambda a: client.transmit(READER0, a)  # noqa: E731
    assert tx(h(SELECT_AID)) == h("9000")
    assert tx(h("80 EE 00 00 01 5A 01")) == h("5A 9000")                    # 1 byte
    assert tx(h("80 EE 00 00 FF")) == bytes(range(255)) + h("9000")          # 255
    assert tx(h("80 EE 00 00 00")) == bytes(range(256)) + h("9000")          # 256
    data = bytes(range(1, 256))
    assert tx(h("80 EE 00 00 FF") + data + b"\x00") == (data * 2)[:256] + h("9000")
    ext = bytes((i * 7) & 0xFF for i in range(1000))
    assert tx(h("80 EE 00 00 00 03 E8") + ext + h("03 E8")) == ext + h("9000")
    assert tx(h("00 A4 00 0C 02 0101")) == h("9000")
    assert tx(h("00 B0 00 10 08")) == SEQ[16:24] + h("9000")
    assert tx(h("00 B0 10 00 01")) == h("6B00")
    assert len(tx(h("00 84 00 00 08"))) == 10
    assert tx(h("00 77 00 00")) == h("6D00")
    assert tx(h("A0 A4 00 00")) == h("6E00")
    assert tx(h("01 A4 00 0C")) == h("6881")
    assert tx(h("80 EE 00 00 05 01")) == h("6700")
    assert slot0.apdus == 14
    assert slot0.apdu_log[0] == (h(SELECT_AID), h("9000"))
    assert client.call("disconnect", reader=READER0)["hr"] == 0


@pytest.mark.pcscd
def test_pcscd_t0_card_in_second_slot(pcscd: Pcscd, client: Client) -> None:
    assert client.call("wait", reader=READER1, present=False, timeout=PRESENCE_TIMEOUT)["ok"]
    with pcscd.card(1, atr=vc.ATR_T0) as card:
        out = client.call("wait", reader=READER1, present=True, timeout=PRESENCE_TIMEOUT)
        assert out["ok"] and bytes.fromhex(out["atr"]) == vc.ATR_T0
        out = client.call("connect", reader=READER1)
        assert out["hr"] == 0 and out["protocol"] == 1  # SCARD_PROTOCOL_T0
        # T=0 case 4: vpcd passes APDUs through and neither it nor pcscd
        # fetches the response: the application sends GET RESPONSE
        assert client.transmit(READER1, h("80 EE 00 00 02 ABCD 03")) == h("6103")
        assert client.transmit(READER1, h("00 C0 00 00 03")) == h("ABCDAB 9000")
        assert [a[0][:2] for a in card.apdu_log] == [h("80EE"), h("00C0")]
        assert client.call("disconnect", reader=READER1)["hr"] == 0
    assert client.call("wait", reader=READER1, present=False, timeout=PRESENCE_TIMEOUT)["ok"]


@pytest.mark.pcscd
def test_pcscd_sees_removal_and_reinsertion(client: Client, slot0: vc.VirtualCard) -> None:
    insert_and_wait(client, slot0, READER0)
    slot0.remove()
    out = client.call("wait", reader=READER0, present=False, timeout=PRESENCE_TIMEOUT)
    assert out["ok"], f"removal not seen: {out}"
    out = insert_and_wait(client, slot0, READER0)
    assert bytes.fromhex(out["atr"]) == vc.ATR_T1
    assert client.call("connect", reader=READER0)["hr"] == 0
    assert client.transmit(READER0, h("80 EE 00 00 02")) == h("0001 9000")
    assert client.call("disconnect", reader=READER0)["hr"] == 0
    c = slot0.counters()
    assert c["insertions"] == 2 and c["removals"] == 1 and c["peer_closes"] == 0


@pytest.mark.pcscd
def test_pcscd_transmit_after_removal(client: Client, slot0: vc.VirtualCard) -> None:
    insert_and_wait(client, slot0, READER0)
    assert client.call("connect", reader=READER0)["hr"] == 0
    slot0.remove()
    # vpcd's receive sees the closed connection at once: the transmit fails
    # before pcscd's next presence poll (SCARD_E_NOT_TRANSACTED) ...
    out = client.call("transmit", reader=READER0, apdu="80EE000002")
    assert out["hr"] == 0x80100016
    assert client.call("wait", reader=READER0, present=False, timeout=PRESENCE_TIMEOUT)["ok"]
    # ... and the old handle stays dead after a new card arrives
    insert_and_wait(client, slot0, READER0)
    out = client.call("transmit", reader=READER0, apdu="80EE000002")
    assert out["hr"] == 0x80100069  # SCARD_W_REMOVED_CARD
    client.call("disconnect", reader=READER0)


@pytest.mark.pcscd
def test_pcscd_silent_card_blocks_until_removed(client: Client,
                                                slot0: vc.VirtualCard) -> None:
    insert_and_wait(client, slot0, READER0)
    slot0.stop_answering()
    # the next presence poll sends an ATR request that is never answered:
    # vpcd has no receive timeout, so pcscd's poll of this slot hangs
    assert slot0.wait_for(lambda c: c["unanswered"] >= 1, PRESENCE_TIMEOUT)
    time.sleep(1.2)  # three poll periods
    assert slot0.unanswered == 1
    out = client.call("wait", reader=READER0, present=False, timeout=0.5)
    assert not out["ok"]  # still reported present: nobody noticed
    # pulling the card ends the blocked receive: vpcd reports it removed
    slot0.remove()
    out = client.call("wait", reader=READER0, present=False, timeout=PRESENCE_TIMEOUT)
    assert out["ok"], f"removal not seen: {out}"
