"""Watch several readers for card arrivals and removals on one thread.

Run:  python examples/monitor.py                      (two simulated readers)
      python examples/monitor.py "NAME" ["NAME"...]   (real readers, 30 s)

scardio.Monitor keeps one tracking request pending per reader and waits on
all their completion descriptors at once: no polling loop, no thread per
reader.  With simulated readers, a helper thread inserts and removes cards.
"""

import sys
import threading
import time

import scardio
from scardio.sim import SimControl

names = sys.argv[1:] or ["scardio Simulated Reader 0", "scardio Simulated Reader 1"]
simulated = not sys.argv[1:]

readers = [scardio.open_reader(n, sim=2 if simulated else 0) for n in names]
try:
    with scardio.Monitor(readers) as monitor:
        # Callbacks run on the monitor's thread, in event order; keep them short.
        monitor.add_callback(lambda e: print(f"  callback: {e.kind} in {e.reader_name}"))

        if simulated:
            def play() -> None:  # what a person would do with two readers
                for reader in readers:
                    sim = SimControl(reader.device)
                    time.sleep(0.1)
                    sim.insert()
                    time.sleep(0.1)
                    sim.remove()
            threading.Thread(target=play, daemon=True).start()

        # events() ends after `count` events or `timeout` seconds in all.
        for event in monitor.events(timeout=30, count=4 if simulated else None):
            print(f"{event.seq}: {event.kind:9} {event.reader_name}")
finally:
    for reader in readers:
        reader.close()
