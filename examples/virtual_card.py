"""A card written in Python, inserted into the simulated reader and used
through the ordinary reader API.

Run:  python examples/virtual_card.py

The card below routes SELECT by AID between two applets (AppletRouter from
scardio.sim.cards): a PIN-protected counter and a greeting.  The simulated
reader calls the card's apdu() for every command; it is a T=0 card, and the
reader does the T=0 framing.  See docs/virtual-cards.md.
"""

import logging

import scardio
from scardio.sim import ATR_T0, SimControl
from scardio.sim.cards import Applet, AppletRouter

logging.basicConfig(format="log: %(message)s", level=logging.ERROR)


class CounterApplet(Applet):
    """INS 20: VERIFY the PIN "1234"; INS 10: increment (after VERIFY) and
    read the counter.  State lasts across APDUs, until a reset."""

    aid = bytes.fromhex("F000000001")

    def __init__(self) -> None:
        self.count = 0
        self.verified = False

    def select(self, command: bytes) -> bytes:
        self.verified = False
        return b"\x90\x00"

    def deselect(self) -> None:
        self.verified = False

    def apdu(self, command: bytes) -> bytes:
        ins = command[1]
        if ins == 0x20:                       # VERIFY
            self.verified = command[5:] == b"1234"
            return b"\x90\x00" if self.verified else b"\x63\xc0"
        if ins == 0x10:                       # INCREMENT, answers the value
            if not self.verified:
                return b"\x69\x82"            # security status not satisfied
            self.count += 1
            return self.count.to_bytes(2, "big") + b"\x90\x00"
        if ins == 0xEE:
            raise RuntimeError("a bug in the card")
        return b"\x6d\x00"


class GreetingApplet(Applet):
    aid = bytes.fromhex("F000000002")

    def apdu(self, command: bytes) -> bytes:
        # Asked for 256 bytes (Le 00), it answers 17: under T=0 the reader
        # says 6C11, and Card.transmit asks again with Le 17 by itself.
        return b"hello from Python" + b"\x90\x00"


card_object = AppletRouter([CounterApplet(), GreetingApplet()], atr=ATR_T0)

with scardio.open_reader("scardio Simulated Reader 0", sim=1,
                         power_down_timeout=0) as reader:
    sim = SimControl(reader.device)
    sim.insert(card=card_object)
    reader.wait_for_card(timeout=5)

    with reader.connect() as card:
        print(f"ATR: {card.atr_bytes.hex(' ')}  protocol: {card.protocol_name}")

        def send(label: str, apdu: str) -> None:
            data, sw1, sw2 = card.transmit(bytes.fromhex(apdu))
            print(f"{label:9} SW={sw1:02X}{sw2:02X} {bytes(data).hex(' ')}".rstrip())

        send("SELECT", "00 A4 04 00 05 F0 00 00 00 01")
        send("INCREMENT", "00 10 00 00 02")        # refused: no PIN yet
        send("VERIFY", "00 20 00 00 04 31 32 33 34")
        send("INCREMENT", "00 10 00 00 02")
        send("INCREMENT", "00 10 00 00 02")
        send("BUG", "00 EE 00 00")                  # raises: 6F00, logged
        send("INCREMENT", "00 10 00 00 02")         # the card carries on
        send("SELECT", "00 A4 04 00 05 F0 00 00 00 02")
        data, sw1, sw2 = card.transmit(bytes.fromhex("00 CA 00 00 00"))
        print(f"GREETING  SW={sw1:02X}{sw2:02X} {bytes(data).decode()}")

    sim.remove()
