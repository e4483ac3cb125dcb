"""The vpcd entry of the driver quirks table (native/ifd/ifd_quirks.h): on
Debian's vpcd driver, the sockets the driver listens and accepts on get
TCP_NODELAY, so that an APDU round trip no longer waits for the card's
delayed ACK behind Nagle's algorithm (vpcd 0.8 writes each message's length
and payload in two send() calls).

The driver is loaded in this process's children, each in a private network
and mount namespace (``unshare -mn``: vpcd binds fixed TCP ports on all
interfaces).  The round trips use cards that do not hide Nagle: the stdlib
test card with TCP_QUICKACK off (tests/vpcd_card.py) and, when installed,
Debian's real vicc (tests/vicc_support.py).  What is checked is the socket
option, read back from the driver's own sockets (found by their local
port), not a time: the times are only reported.  The application's sockets
(another listener and its connection, made before the reader opened) must
keep the option they had.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from typing import Any

import pytest

import pcscd_namespace
from helpers_reader import VPCD_LIBRARY

pytestmark = pytest.mark.vpcd

HERE = os.path.dirname(os.path.abspath(__file__))
PORT = 0x8C7B  # free: the namespace is private
VICC_PORT = PORT + 8
COPY_PORT = PORT + 16

CHILD = r'''
import json, os, shutil, socket, statistics, sys, time
sys.path.insert(0, %(tests)r)
import scardio
import vpcd_card
from scardio import Device

conf_dir, copy_path, want_vicc = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
PORT, VICC_PORT, COPY_PORT = %(port)d, %(vicc_port)d, %(copy_port)d
SELECT_AID = "00 A4 04 0C 08 F07363617264696F"
out = {}


def tcp_sockets():
    """This process's TCP/IPv4 sockets: fd, local and peer port, listening, nodelay."""
    found = []
    for name in os.listdir("/proc/self/fd"):
        try:
            dup = os.dup(int(name))
        except OSError:
            continue  # the listing's own descriptor, already closed
        try:
            s = socket.socket(fileno=dup)  # a duplicate: closing it keeps the fd
        except OSError:
            os.close(dup)
            continue
        with s:
            if s.family != socket.AF_INET or s.type != socket.SOCK_STREAM:
                continue
            try:
                peer = s.getpeername()[1]
            except OSError:
                peer = None
            found.append({"fd": int(name), "local": s.getsockname()[1], "peer": peer,
                          "listening": bool(s.getsockopt(socket.SOL_SOCKET,
                                                         socket.SO_ACCEPTCONN)),
                          "nodelay": s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)})
    return found


def driver_sockets(port):
    """The driver's: local port `port` (the card's own has it as its peer)."""
    socks = [s for s in tcp_sockets() if s["local"] == port]
    return ([s for s in socks if s["listening"]], [s for s in socks if not s["listening"]])


def set_nodelay(fd, value):
    with socket.socket(fileno=os.dup(fd)) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, value)


def round_trips(card, apdu, n=20):
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        r = card.transmit(apdu)
        times.append(time.perf_counter() - t0)
        assert r.ok, r
    return round(statistics.median(times) * 1000, 3)


# The application's own sockets, made before any reader opens: untouched.
app_listen = socket.create_server(("127.0.0.1", 0))
app_client = socket.create_connection(app_listen.getsockname())
app_server, _ = app_listen.accept()
app_fds = [s.fileno() for s in (app_listen, app_client, app_server)]

# 1. the stdlib test card without TCP_QUICKACK, through the reader API
reader = scardio.open_reader("nodelay vpcd", reader_conf_dirs=[conf_dir],
                             power_down_timeout=None)
listen, accepted = driver_sockets(PORT)
out["listener"] = listen
test_card = vpcd_card.VirtualCard(port=PORT, quickack=False)
test_card.insert(timeout=10)
reader.wait_for_card(10)
card = reader.connect(timeout=10)
out["select_ok"] = card.transmit(SELECT_AID).ok
out["echo"] = card.transmit("80 EE 00 00 04").data.hex()
out["test_card_ms"] = round_trips(card, "80 EE 00 00 01")
listen, accepted = driver_sockets(PORT)
out["accepted"] = accepted

# 2. a card accepted later, from a listener that no longer has the option:
# set when the driver reports the new card
set_nodelay(listen[0]["fd"], 0)
card.disconnect()
test_card.remove()
reader.wait_for_removal(10)
test_card.insert(timeout=10)
reader.wait_for_card(10)
card = reader.connect(timeout=10)
out["reinserted_ok"] = card.transmit(SELECT_AID).ok
listen, accepted = driver_sockets(PORT)
out["reaccepted"] = accepted
out["relistener"] = listen
card.disconnect()
reader.close()
test_card.close()

# 3. a renamed copy of the driver: recognised by the symbols it exports
dev = Device.open_ifd(copy_path, "/dev/null:%%#x" %% COPY_PORT, 0)
out["copy_listener"] = driver_sockets(COPY_PORT)[0]
dev.close()

# 4. Debian's vicc, when installed
if want_vicc:
    import vicc_support
    vreader = scardio.open_reader("nodelay vicc", reader_conf_dirs=[conf_dir],
                                  power_down_timeout=None)
    vicc = vicc_support.Vicc(VICC_PORT)
    try:
        vreader.wait_for_card(20)
        vcard = vreader.connect(timeout=10)
        out["vicc_atr"] = vcard.atr_bytes.hex()
        out["vicc_sw"] = vcard.transmit(vicc_support.SELECT_MF).sw
        out["vicc_ms"] = round_trips(vcard, vicc_support.SELECT_MF)
        out["vicc_accepted"] = driver_sockets(VICC_PORT)[1]
        vcard.disconnect()
    finally:
        vreader.close()
        vicc.close()

out["app"] = [s for s in tcp_sockets() if s["fd"] in app_fds]
print(json.dumps(out))
'''


def _namespace_unavailable() -> str | None:
    """Why the driver cannot run in a private namespace here (None: it can)."""
    if not sys.platform.startswith("linux"):
        return "the TCP_NODELAY quirk acts on Linux only"
    if os.geteuid() != 0:
        return "needs root: unshare -mn"
    for tool in ("unshare", "ip"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    os.makedirs("/run/pcscd", exist_ok=True)  # run_child mounts a tmpfs there
    probe = subprocess.run(["unshare", "-mn", "--propagation", "private", "sh", "-c",
                            pcscd_namespace.SETUP], capture_output=True, text=True,
                           timeout=30)
    if probe.returncode != 0:
        return f"unshare -mn does not work here: {probe.stderr.strip()}"
    return None


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    if not os.path.exists(VPCD_LIBRARY):
        pytest.skip(f"vsmartcard-vpcd is not installed ({VPCD_LIBRARY})")
    why = _namespace_unavailable()
    if why is not None:
        pytest.skip(why)
    import vicc_support
    work = tmp_path_factory.mktemp("nodelay")
    conf = work / "reader.conf.d"
    conf.mkdir()
    for name, port in (("nodelay vpcd", PORT), ("nodelay vicc", VICC_PORT)):
        (conf / name.replace(" ", "-")).write_text(
            f'FRIENDLYNAME "{name}"\nDEVICENAME /dev/null:0x{port:X}\n'
            f"LIBPATH {VPCD_LIBRARY}\nCHANNELID 0x{port:X}\n")
    copy = work / "vsc-reader-driver.so"  # a name the table does not know
    shutil.copyfile(os.path.realpath(VPCD_LIBRARY), copy)
    child = work / "child.py"
    child.write_text(CHILD % {"tests": HERE, "port": PORT, "vicc_port": VICC_PORT,
                              "copy_port": COPY_PORT})
    vicc_skipped = vicc_support.unavailable()
    result = pcscd_namespace.run_child(
        [sys.executable, str(child), str(conf), str(copy), "0" if vicc_skipped else "1"],
        timeout=180)
    result["vicc_skipped"] = vicc_skipped
    return result


def test_the_listening_socket_has_tcp_nodelay(report: dict[str, Any]) -> None:
    (listener,) = report["listener"]
    assert listener["nodelay"] == 1


def test_the_accepted_socket_has_tcp_nodelay(report: dict[str, Any]) -> None:
    (accepted,) = report["accepted"]
    assert accepted["nodelay"] == 1
    # the round trip works on a card that does not quick-ACK
    assert report["select_ok"] and report["echo"] == "00010203"
    print(f"test card without TCP_QUICKACK: median APDU {report['test_card_ms']} ms")


def test_a_card_accepted_later_gets_it_on_arrival(report: dict[str, Any]) -> None:
    (accepted,) = report["reaccepted"]
    assert accepted["nodelay"] == 1 and report["reinserted_ok"]
    assert report["relistener"][0]["nodelay"] == 1  # set again too


def test_a_renamed_copy_is_recognised_by_its_symbols(report: dict[str, Any]) -> None:
    (listener,) = report["copy_listener"]
    assert listener["nodelay"] == 1


def test_the_applications_sockets_are_untouched(report: dict[str, Any]) -> None:
    assert len(report["app"]) == 3
    assert all(s["nodelay"] == 0 for s in report["app"]), report["app"]
    # (an application socket connected to the driver's port, as a card in
    # the same process, is left alone too: native/tests/test_quirks.c; the
    # test card here sets the option on its end itself)


def test_vicc_round_trip(report: dict[str, Any]) -> None:
    if report["vicc_skipped"]:
        pytest.skip(report["vicc_skipped"])
    import vicc_support
    assert report["vicc_atr"] == vicc_support.ATR.hex()
    assert report["vicc_sw"] == 0x9000
    (accepted,) = report["vicc_accepted"]
    assert accepted["nodelay"] == 1
    print(f"vicc: median APDU {report['vicc_ms']} ms")
