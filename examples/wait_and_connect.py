"""Wait for a card, connect, send APDUs, disconnect.

Run:  python examples/wait_and_connect.py            (simulated reader)
      python examples/wait_and_connect.py "NAME"     (a real reader: insert a card)

With the simulated reader, a timer "inserts" the card after 0.2 s, the way a
person would, so the script has something to wait for.
"""

import sys
import threading

import scardio
from scardio.sim import SimControl

APDUS = [
    "00 A4 04 00 08 F07363617264696F",  # SELECT the simulated card's application
    "00 A4 00 0C 02 0101",              # SELECT its elementary file 0101
    "00 B0 0000 04",                    # READ BINARY: 4 bytes at offset 0
]

name = sys.argv[1] if len(sys.argv) > 1 else "scardio Simulated Reader 0"
simulated = len(sys.argv) == 1

with scardio.open_reader(name, sim=1 if simulated else 0) as reader:
    print("reader:", reader.name)
    if simulated:
        threading.Timer(0.2, SimControl(reader.device).insert).start()

    reader.wait_for_card(timeout=30)      # scardio.errors.TimeoutError after 30 s
    with reader.connect() as card:        # power up, choose T=0 / T=1
        print("ATR:", card.atr_bytes.hex(" "), "protocol:", card.protocol_name)
        for apdu in APDUS:
            rsp = card.transmit(apdu)     # hex text, bytes or an APDU object
            print(f"> {scardio.parse_hex(apdu).hex(' ')}  < {rsp.data.hex(' ') or '-'}"
                  f"  SW={rsp.sw:04X}")
    # Leaving the block disconnects (LEAVE); the card stays powered for
    # reader.power_down_timeout seconds so a reconnect needs no reset.
    print("disconnected; power-down pending:", reader.power_down_pending)
