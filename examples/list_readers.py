"""List every reader scardio can open, with two simulated readers added.

Run:  python examples/list_readers.py

Real readers (pcsc-lite driver bundles matching the USB devices present,
reader.conf entries such as vpcd) are listed first; the simulated ones come
last, so this prints at least two lines on any machine.
"""

import scardio

# sim=2 adds "scardio Simulated Reader 0" and "... 1" to what discovery finds.
# include_unavailable=True also shows readers whose driver is missing.
readers = scardio.list_readers(sim=2, include_unavailable=True)

for index, reader in enumerate(readers):
    status = "ok" if reader.available else f"unavailable: {reader.extra.get('problem')}"
    print(f"{index}: {reader.name}  [{reader.source}] {reader.device_name} ({status})")

# find_reader() takes what a person types: an index, an exact name, or a
# unique part of a name (case-insensitive).
print("picked:", scardio.find_reader("simulated reader 1", readers).name)
