"""The client side of a PC/SC transmit alone: scardio's Card.transmit and
pyscard's SCardTransmit in this one process, both over the same scripted
client library (native/pcsc/tests/fake_pcsc.c, which answers at once: no
daemon, no socket), interleaved.  Started by test_bench_pcsc_client.py
with the library on SCARDIO_PCSC_LIBRARY (scardio) and LD_LIBRARY_PATH
(pyscard opens libpcsclite.so.1 by name) and the system pyscard on its
path; prints one JSON object: {op: {path: [ns per call, one per round]}}.

    python pcsc_client_worker.py ROUNDS CALLS_PER_ROUND
"""

from __future__ import annotations

import ctypes
import json
import os
import sys
import time

from apdus import APDUS

READER = "Fake Reader 0"  # fake_pcsc.c's one reader


def main(argv: list) -> int:
    rounds, calls = int(argv[1]), int(argv[2])
    ctypes.CDLL(os.environ["SCARDIO_PCSC_LIBRARY"]).fake_set_present(1)
    from smartcard import scard as S
    from scardio import pcsc
    hr, ctx = S.SCardEstablishContext(S.SCARD_SCOPE_USER)
    hr |= S.SCardConnect(ctx, READER, S.SCARD_SHARE_SHARED, S.SCARD_PROTOCOL_T1)[0]
    handle = S.SCardConnect(ctx, READER, S.SCARD_SHARE_SHARED, S.SCARD_PROTOCOL_T1)[1]
    if hr != S.SCARD_S_SUCCESS:
        raise RuntimeError(f"pyscard over the scripted library: {hr:#x}")
    # Like the pyscard side, a process that starts no thread.
    reader = pcsc.open_reader(READER, power_down_timeout=None)
    card = reader.connect(timeout=None)

    def scardio_loop(apdu: bytes, n: int) -> int:
        transmit = card.transmit
        t0 = time.perf_counter_ns()
        for _ in range(n):
            transmit(apdu)
        return time.perf_counter_ns() - t0

    def pyscard_loop(apdu: bytes, n: int) -> int:
        transmit, pci, h, a = S.SCardTransmit, S.SCARD_PCI_T1, handle, list(apdu)
        t0 = time.perf_counter_ns()
        for _ in range(n):
            transmit(h, pci, a)
        return time.perf_counter_ns() - t0

    loops = {"scardio": scardio_loop, "pyscard": pyscard_loop}
    out: dict = {}
    # The 5-byte APDU only: the scripted card echoes the whole command, so
    # a 261-byte one would get a 263-byte answer, which no short APDU has.
    for op in ("tx5",):
        apdu = APDUS[op]
        # the scripted card echoes the command, then 9000
        assert card.transmit(apdu).data == apdu, "scardio: unexpected answer"
        assert bytes(S.SCardTransmit(handle, S.SCARD_PCI_T1, list(apdu))[1][:-2]) == apdu
        names = list(loops)
        res: dict = {k: [] for k in names}
        for k in names:
            loops[k](apdu, calls)  # warm-up
        for r in range(rounds):
            for k in names[r % 2:] + names[:r % 2]:
                res[k].append(loops[k](apdu, calls) / calls)
        out[op] = res
    card.disconnect()
    reader.close()
    S.SCardDisconnect(handle, S.SCARD_LEAVE_CARD)
    S.SCardReleaseContext(ctx)
    sys.stdout.write(json.dumps(out) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
