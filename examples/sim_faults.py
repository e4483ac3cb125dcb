"""The simulated reader's fault injection: see how scardio reports each
failure a real driver can produce, without the hardware that produces it.

Run:  python examples/sim_faults.py

A fault is armed for the *next* call of one driver entry point (one-shot).
See native/sim/README.md for every control and fault kind.
"""

import time

import scardio
from scardio import errors
from scardio.sim import EntryPoint, Fault, SimControl

IFD_COMMUNICATION_ERROR = 612  # a pcsc-lite IFD handler return code

with scardio.open_reader("scardio Simulated Reader 0", sim=1,
                         power_down_timeout=0) as reader:  # power down at disconnect
    sim = SimControl(reader.device)
    sim.insert()
    reader.wait_for_card(timeout=5)

    with reader.connect() as card:
        # RETURN: the driver call fails with the given IFD code.
        sim.fault(EntryPoint.TRANSMIT, Fault.RETURN, IFD_COMMUNICATION_ERROR)
        try:
            card.transmit("00 84 00 00 08")
        except errors.DriverError as exc:
            print("RETURN      ->", type(exc).__name__, "-", exc)

        # REMOVE_CARD: the card is pulled out just as the driver is called.
        sim.fault(EntryPoint.TRANSMIT, Fault.REMOVE_CARD)
        try:
            card.transmit("00 84 00 00 08")
        except errors.NoCardError as exc:
            print("REMOVE_CARD ->", type(exc).__name__, "-", exc)

    # LONG_ATR: the driver reports a 40-byte ATR (more than ISO 7816-3 allows).
    sim.insert()
    reader.wait_for_card(timeout=5)
    sim.fault(EntryPoint.POWER_ICC, Fault.LONG_ATR, 40)
    try:
        reader.connect()
    except errors.DriverDataError as exc:
        print("LONG_ATR    ->", type(exc).__name__, "-", exc)

    # Latency: every later driver call of this reader sleeps 5 ms first.
    sim.set_latency(5000)
    start = time.perf_counter()
    with reader.connect() as card:
        card.transmit("00 84 00 00 08")
    print(f"latency     -> connect + transmit took {1000 * (time.perf_counter() - start):.0f} ms")
    sim.set_latency(0)

    # The driver counts its calls: useful to check what a sequence costs.
    c = sim.counters()
    print(f"counters    -> {c.power_ups} power-ups, {c.insertions} insertions, "
          f"{c.removals} removal(s), {c.calls[EntryPoint.TRANSMIT]} transmits")
