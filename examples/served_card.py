"""A card written in Python, served on a Unix socket to simulated readers
(pcscd's, or scardio's own).

To test any PC/SC program against it, serve it and point pcscd at it::

    scardio card serve examples/served_card.py:PinCard --socket /tmp/pin.sock

    # reader.conf (LIBPATH: python -c "import scardio.sim; print(scardio.sim.SIM_LIBRARY)")
    FRIENDLYNAME "Python PIN card"
    DEVICENAME   socket:/tmp/pin.sock
    LIBPATH      /path/to/site-packages/scardio/libscardio_sim.so
    CHANNELID    0

Run on its own (``python examples/served_card.py``), it serves the card on a
temporary socket with ``scardio card serve``, opens the simulated reader
``socket:PATH`` in this process (what pcscd does with the reader.conf entry)
and talks to the card; then it stops the server and sees the card leave.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time

from scardio.sim import VirtualCard


class PinCard(VirtualCard):
    """VERIFY (00 20 00 80 04 PIN) with 3 tries, then GET DATA (80 CA) of a
    secret once verified."""

    atr = bytes.fromhex("3BF81300008131FE457363617264696F31B0")

    def __init__(self) -> None:
        self.tries = 3
        self.verified = False

    def reset(self, warm: bool) -> None:
        self.verified = False

    def apdu(self, command: bytes) -> bytes:
        if command[:4] == b"\x00\x20\x00\x80":
            if self.tries == 0:
                return b"\x69\x83"
            if command[5:9] == b"1234":
                self.tries, self.verified = 3, True
                return b"\x90\x00"
            self.tries -= 1
            return bytes([0x63, 0xC0 | self.tries])
        if command[:2] == b"\x80\xca":
            return (b"the secret" + b"\x90\x00") if self.verified else b"\x69\x82"
        return b"\x6d\x00"


def main() -> None:
    from scardio import Device, Reader
    from scardio.sim import SIM_LIBRARY

    work = tempfile.mkdtemp(prefix="scardio-served-")
    path = os.path.join(work, "pin.sock")
    server = subprocess.Popen([sys.executable, "-m", "scardio", "card", "serve",
                               f"{os.path.abspath(__file__)}:PinCard", "--socket", path],
                              stderr=subprocess.DEVNULL)
    try:
        while not os.path.exists(path):
            time.sleep(0.02)
        reader = Reader(Device.open_ifd(SIM_LIBRARY, f"socket:{path}", 0))
        with reader:
            reader.wait_for_card(10)
            card = reader.connect(timeout=10)
            print(f"ATR: {card.atr_bytes.hex(' ')}  protocol: T={int(card.protocol) - 1}")
            for label, apdu in (("GET DATA ", "80CA000000"), ("VERIFY 9 ", "002000800439393939"),
                                ("VERIFY   ", "002000800431323334"),
                                ("GET DATA ", "80CA000000")):
                r = card.transmit(apdu)
                print(f"{label} SW={r.sw:04X} {r.data.decode(errors='replace')}".rstrip())
            card.disconnect()
            server.send_signal(signal.SIGTERM)
            server.wait(10)
            deadline = time.monotonic() + 10
            while reader.state().name != "ABSENT" and time.monotonic() < deadline:
                time.sleep(0.02)
            print(f"server stopped: reader {reader.state().name}, "
                  f"socket removed: {not os.path.exists(path)}")
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(10)
        os.rmdir(work)


if __name__ == "__main__":
    main()
