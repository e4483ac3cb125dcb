"""APDUs to Debian's real virtual card, vicc (``vsmartcard-vpicc``), through
Debian's vpcd driver: scardio (whose driver quirks table sets TCP_NODELAY
on vpcd's sockets, native/ifd/ifd_quirks.h) next to pcscd + pyscard and to
the same driver called from a C loop (both without it: every message waits
behind Nagle's algorithm for vicc's delayed ACK), and next to scardio on
the project's own test card (tests/vpcd_card.py, which quick-ACKs and so
never showed the stall).

Every path has its own vicc process (vicc serves one connection) and sends
the same APDU, SELECT MF without response data (vicc answers 9000).
Skips with a reason when vicc, vpcd, pcscd or pyscard is missing; vpcd's
ports are fixed, so run it in a private network namespace (``unshare -mn``,
loopback up, a tmpfs on /run/pcscd for pcscd's socket).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from functools import partial

import pytest

import cfloor
import harness
import pcsc_peer
import paths
from apdus import IO_REQUEST_T1
from bench_common import VPCD_PCSCD_NAME, free_port
from harness import FuncPath, LineReader

pytestmark = pytest.mark.vpcd

ROUNDS = int(os.environ.get("SCARDIO_BENCH_ROUNDS", "25"))
BATCH_NS = float(os.environ.get("SCARDIO_BENCH_BATCH_MS", "4")) * 1e6 * 2
# The Nagle-bound paths take ~44 ms per APDU: a few per batch is enough.
SLOW_BATCH = int(os.environ.get("SCARDIO_BENCH_VICC_SLOW_BATCH", "5"))
WARMUP = 500
OP = "select"

DEVICE_VICC = "scardio Device.ioctl, vicc"
READER_VICC = "scardio Card.transmit, vicc"
DEVICE_CARD = "scardio Device.ioctl, test card"
READER_CARD = "scardio Card.transmit, test card"
FLOOR_VICC = "C floor (vpcd as is), vicc"
PCSCD_VICC = "pcscd+pyscard, vicc"
SCARDIO_PATHS = [DEVICE_VICC, READER_VICC, DEVICE_CARD, READER_CARD]


def _wait(pred, timeout=20.0, what="condition"):
    deadline = time.monotonic() + timeout
    while True:
        try:
            if pred():
                return
        except (OSError, RuntimeError):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.02)


def _wait_pcscd_sees_no_card(name: str, timeout: float = 10.0) -> None:
    """Until pcscd reports its reader *name* (a prefix of pcscd's name for
    it) empty, at most *timeout* seconds (a few of its 400 ms polls)."""
    from scardio import IOCTL, State, pcsc
    found = [n for n in pcsc.list_readers() if n.startswith(name)]
    if not found:
        return  # pcscd no longer lists it: no card of its can be seen either
    dev = pcsc.open_device(found[0])
    try:
        _wait(lambda: dev.ioctl(IOCTL.GET_STATE, b"", 4)[0] == State.ABSENT, timeout,
              what=f"pcscd to report {found[0]!r} empty")
    finally:
        dev.close()


class ViccFloor(cfloor.CFloor):
    """The C floor program with SELECT MF as its first APDU ("tx5")."""

    def __init__(self, library: str, device_name: str, lun: int, apdu: bytes,
                 timeout: float = 30.0):
        self.timeout = timeout
        self.proc = subprocess.Popen(
            [cfloor.build(), library, device_name, str(lun), apdu.hex(), apdu.hex(), apdu.hex()],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.reader = LineReader(self.proc)
        first = self._read()
        if not first.get("ready"):
            self.close()
            raise RuntimeError(f"C floor program failed to start: {first}")


class FloorPath(harness.Path):
    def __init__(self, floor, name):
        self.floor, self.name = floor, name

    def run(self, op, count):
        return self.floor.run("tx5", count)


class PyscardSelect(harness.Path):
    def __init__(self, worker, name):
        self.worker, self.name = worker, name

    def run(self, op, count):
        return self.worker.run(OP, count)


def _device_path(dev, name, apdu):
    from scardio import IOCTL
    return FuncPath(name, {OP: partial(dev.ioctl, IOCTL.TRANSMIT, IO_REQUEST_T1 + apdu, 8 + 258)})


def _reader_path(reader, name, apdu):
    card = reader.connect(timeout=10)
    assert card.transmit(apdu).ok, "the card does not answer SELECT MF with 9000"
    return FuncPath(name, {OP: partial(card.transmit, apdu)})


@pytest.fixture(scope="module")
def vicc_env(request):
    import vicc_support
    why = vicc_support.unavailable()
    if not why and not os.path.exists(harness.VPCD_LIBRARY):
        why = "vsmartcard-vpcd is not installed"
    if why:
        for name in TARGET_PATHS:
            harness.record_target(_target_name(name), None, TARGET_MS, "ms", target=4,
                                  note=f"skipped: {why}")
        pytest.skip(why)
    from scardio import IOCTL, Device, Reader, State
    apdu = vicc_support.SELECT_MF
    stack = contextlib.ExitStack()
    ps = {}
    try:
        # scardio, slot 0: vicc; slot 1 (port + 1): the project's test card
        port = free_port()
        dev = Device.open_ifd(harness.VPCD_LIBRARY, f"/dev/null:{port:#x}", 0)
        stack.callback(dev.close)
        vicc = vicc_support.Vicc(port)
        stack.callback(vicc.close)
        try:
            _wait(lambda: dev.ioctl(IOCTL.GET_STATE, b"", 4)[0] > State.ABSENT,
                  what="scardio sees vicc")
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}; vicc: {vicc.stderr_tail()}") from None
        reader = Reader(dev, power_down_timeout=None)
        stack.callback(reader.close)
        ps[READER_VICC] = _reader_path(reader, READER_VICC, apdu)
        ps[DEVICE_VICC] = _device_path(dev, DEVICE_VICC, apdu)

        dev_t = Device.open_ifd(harness.VPCD_LIBRARY, f"/dev/null:{port:#x}", 1)
        stack.callback(dev_t.close)
        card_t = pcsc_peer.CardProcess(port + 1)
        stack.callback(card_t.close)
        card_t.insert()
        _wait(lambda: dev_t.ioctl(IOCTL.GET_STATE, b"", 4)[0] > State.ABSENT,
              what="scardio sees the test card")
        reader_t = Reader(dev_t, power_down_timeout=None)
        stack.callback(reader_t.close)
        ps[READER_CARD] = _reader_path(reader_t, READER_CARD, apdu)
        ps[DEVICE_CARD] = _device_path(dev_t, DEVICE_CARD, apdu)

        # the driver from a C loop, in its own process: no quirk
        if cfloor.have_gcc():
            pc = free_port()
            floor = ViccFloor(harness.VPCD_LIBRARY, f"/dev/null:{pc:#x}", 0, apdu)
            stack.callback(floor.close)
            vicc_c = vicc_support.Vicc(pc)
            stack.callback(vicc_c.close)
            _wait(lambda: floor.command("run presence 1") and floor.power() == 0,
                  what="the C floor powers vicc up")
            ps[FLOOR_VICC] = FloorPath(floor, FLOOR_VICC)

        try:
            pe = request.getfixturevalue("pcscd_env")
        except pytest.skip.Exception as exc:
            pe = None
            harness.record("vicc", "pcscd_skipped", str(exc))
        if pe is not None and pe["vpcd_port"]:
            # pcscd polls vpcd every 400 ms: after vicc leaves the session's
            # vpcd slot (closed below, waiting for its exit), wait until
            # pcscd reports the slot empty, so that the next module's card
            # there is an arrival pcscd sees rather than a swap it misses.
            stack.callback(_wait_pcscd_sees_no_card, VPCD_PCSCD_NAME)
            vicc_p = vicc_support.Vicc(pe["vpcd_port"])
            stack.callback(vicc_p.close)
            w = pcsc_peer.PyscardWorker()
            stack.callback(w.close)
            w.call("open", match=VPCD_PCSCD_NAME, apdus={OP: apdu.hex()})
            w.call("connect", timeout=20, read_timeout=30)
            resp = w.call("apdu", op=OP)["resp"]
            assert resp.endswith("9000"), resp
            ps[PCSCD_VICC] = PyscardSelect(w, PCSCD_VICC)
        # A fresh connection answers slower for its first few hundred
        # APDUs (vicc's and the kernel's warm-up): not what is measured.
        for p in ps.values():
            if isinstance(p, FuncPath):
                p.run(OP, WARMUP)
        yield ps
    finally:
        stack.close()


TARGET_MS = 1.0
TARGET_PATHS = [READER_VICC, DEVICE_VICC]


def _target_name(path: str) -> str:
    return f"vicc through vpcd: median APDU, {path.split(', ')[0]}"


def _register(out: dict, sizes: dict) -> None:
    """Issue 12, target 4: scardio's median APDU to vicc, pcscd + pyscard's
    and the C loop's on the same driver and card beside it; the table."""
    def ms(name):
        return out[name]["median"] / 1e6 if name in out else None
    beside = []
    for name in (PCSCD_VICC, FLOOR_VICC):
        beside.append(f"{name.split(', ')[0]} {ms(name):.1f} ms" if name in out
                      else f"{name.split(', ')[0]} not run")
    skipped = harness.results().get("vicc", {}).get("pcscd_skipped")
    note = "on vicc: " + ", ".join(beside) + (f" (pcscd skipped: {skipped})" if skipped
                                             else "")
    for name in TARGET_PATHS:
        harness.record_target(_target_name(name), ms(name), TARGET_MS, "ms", target=4,
                              note=note + "; the project's test card: "
                                          f"{ms(name.replace('vicc', 'test card')):.3f} ms")
    base = out[DEVICE_VICC]["median"]
    rows = [[name, f"{s['median'] / 1e6:.3f}", f"{s['p10'] / 1e6:.3f}",
             f"{s['p90'] / 1e6:.3f}", sizes[name], f"{s['median'] / base:.1f}×"]
            for name, s in out.items() if not name.startswith("_")]
    harness.record_table(
        "vpcd + Debian's vicc: SELECT MF per APDU",
        ["path", "median ms", "p10 ms", "p90 ms", "APDUs per batch",
         f"÷ {DEVICE_VICC}"], rows,
        note=f"Medians over {ROUNDS} interleaved rounds; every path has its own vicc "
             "(or test card) process. scardio sets TCP_NODELAY on vpcd's sockets (driver "
             "quirks table); the C loop and pcscd use vpcd as is (Nagle waits for vicc's "
             "delayed ACK).")


def test_vicc_side_by_side(vicc_env):
    """Interleaved rounds of every path; medians per APDU."""
    ps = list(vicc_env.values())
    slow = {PCSCD_VICC, FLOOR_VICC}
    sizes = {p.name: SLOW_BATCH for p in ps if p.name in slow}
    sizes.update(paths.batch_sizes([p for p in ps if p.name not in slow], OP, BATCH_NS))
    res = harness.interleave(ps, OP, ROUNDS, 0, counts=sizes)
    out = {name: harness.summary(v) for name, v in res.items()}
    out["_samples"] = res
    out["_batch"] = sizes
    harness.record("vicc", OP, out)
    _register(out, sizes)
    print("\nSELECT MF to vicc through vpcd, median per APDU:")
    for name, s in out.items():
        if not name.startswith("_"):
            print(f"  {name:32s} {s['median'] / 1e6:9.3f} ms  (p10 {s['p10'] / 1e6:.3f}, "
                  f"p90 {s['p90'] / 1e6:.3f}, batch {sizes[name]})")
    scardio_vicc = out[DEVICE_VICC]["median"]
    for name in (PCSCD_VICC, FLOOR_VICC):
        if name in out:
            print(f"  {name} / {DEVICE_VICC}: {out[name]['median'] / scardio_vicc:.0f}x")


@pytest.mark.parametrize("name", SCARDIO_PATHS)
def test_vicc_scardio(vicc_env, name, benchmark):
    """pytest-benchmark's view of each scardio path (--benchmark-enable)."""
    fn = vicc_env[name].ops[OP]
    benchmark.extra_info["path"] = name
    benchmark.pedantic(fn, rounds=50, iterations=10, warmup_rounds=1)
