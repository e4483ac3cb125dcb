"""Record a session on one card, then replay it as a card.

The session is recorded on the built-in simulated card (give a reader's
name to record on a real one instead: ``python record_replay.py "ACS"``),
written to session.jsonl, and played back by scardio.sim.ReplayCard in a
second simulated reader: the application gets the same answers, and a
command the recording did not expect answers 6F 00 and is reported.
"""

import sys

import scardio
from scardio.sim import ReplayCard, SimControl

COMMANDS = ["00 A4 04 0C 08 F0 73 63 61 72 64 69 6F",   # SELECT the application
            "00 A4 00 0C 02 01 01",                      # SELECT EF 0101
            "00 B0 00 00 08"]                            # READ BINARY, 8 bytes


def run(reader: scardio.Reader, label: str) -> None:
    with reader.connect() as card:
        for command in COMMANDS:
            print(f"{label}: {command}  ->  {card.transmit(command)}")


# 1. Record.
name = sys.argv[1] if len(sys.argv) > 1 else "scardio Simulated Reader 0"
with scardio.open_reader(name, sim=2) as reader:
    if reader.descriptor is not None and reader.descriptor.source == "sim":
        SimControl(reader.device).insert()
    reader.wait_for_card(timeout=5)
    with reader.connect() as card, card.record("session.jsonl") as recorder:
        for command in COMMANDS:
            card.transmit(command)
    print(f"recorded {recorder.exchanges} exchanges to session.jsonl")

# 2. Replay: the recording is now the card.
replay = ReplayCard("session.jsonl")
with scardio.open_reader("scardio Simulated Reader 1", sim=2) as reader:
    SimControl(reader.device).insert(card=replay)
    run(reader, "replayed")
    print(f"replayed to the end: {replay.remaining == []}")
    replay.rewind()
    with reader.connect() as card:
        # out of order: strict mode answers 6F 00 and says what it expected
        print(f"out of order: 00 B0 00 00 08  ->  {card.transmit('00 B0 00 00 08')}")
for mismatch in replay.mismatches:
    print(f"mismatch: {mismatch}")
