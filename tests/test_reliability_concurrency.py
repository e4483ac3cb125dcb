"""Reliability, part 3: concurrency.

Eight threads transmitting on one card are serialised, each response
matched to its command (ECHO with per-thread data); synchronous and
overlapped calls mixed; a monitor tracking the card while threads transmit;
many readers used from many threads; a device closed under the feet of
busy threads; the same reader opened from several threads at once.  The
thread-safety notes in docs/reliability.md summarise what these show.
"""

from __future__ import annotations

import itertools
import struct
import threading
import time

import pytest

import scardio.sim
from scardio import IOCTL, Device, Protocol, State, errors
from scardio.sim import EntryPoint, SimControl

_luns = itertools.count(0x23000)
WAIT = 10.0


def dword(v: int) -> bytes:
    return struct.pack("<I", v)


def connect(dev: Device) -> None:
    dev.ioctl(IOCTL.POWER, dword(1), 33)
    assert dev.ioctl(IOCTL.SET_PROTOCOL, dword(Protocol.T0 | Protocol.T1), 4) == dword(2)


def echo_apdu(data: bytes) -> bytes:
    return bytes([0x80, 0xEE, 0, 0, len(data)]) + data + bytes([len(data)])


def tx_request(data: bytes) -> bytes:
    return struct.pack("<II", 2, 8) + echo_apdu(data)


def tx_expected(data: bytes) -> bytes:
    return struct.pack("<II", 2, 8) + data + b"\x90\x00"


def run_threads(target, n: int, timeout: float = 60.0) -> list:
    errors_seen: list = []

    def wrap(i: int) -> None:
        try:
            target(i)
        except BaseException as exc:  # noqa: BLE001 - collected for the assert
            errors_seen.append((i, exc))

    threads = [threading.Thread(target=wrap, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + timeout
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    assert not any(t.is_alive() for t in threads), "threads still running"
    return errors_seen


def test_eight_threads_on_one_card_every_response_matches(sim_device, sim):
    sim.insert()
    connect(sim_device)
    sim.reset_counters()
    per_thread = 400
    mismatches: list = []

    def worker(i: int) -> None:
        for k in range(per_thread):
            # per-thread, per-call data of varying length
            data = bytes([i]) * (1 + (k + i) % 40) + struct.pack(">H", k)
            if k % 2:
                out = sim_device.ioctl(IOCTL.TRANSMIT, tx_request(data), 300)
            else:
                out = sim_device.submit(IOCTL.TRANSMIT, tx_request(data), 300).wait(WAIT)
            if out != tx_expected(data):
                mismatches.append((i, k, out))

    assert run_threads(worker, 8) == []
    assert mismatches == []
    assert sim.counters().calls[EntryPoint.TRANSMIT] == 8 * per_thread


def test_overlapped_flood_from_threads_harvested_in_order(sim_device, sim):
    """Threads submit; one harvester sees every completion exactly once."""
    sim.insert()
    connect(sim_device)
    submitted: list = []
    lock = threading.Lock()

    def worker(i: int) -> None:
        for k in range(250):
            data = bytes([i, k & 0xFF])
            op = sim_device.submit(IOCTL.TRANSMIT, tx_request(data), 300)
            with lock:
                submitted.append((op, data))

    assert run_threads(worker, 8) == []
    harvested = []
    deadline = time.monotonic() + WAIT
    while len(harvested) < len(submitted) and time.monotonic() < deadline:
        harvested += sim_device.harvest(0.2)
    assert len(harvested) == len(submitted) == 2000
    assert len({op.id for op in harvested}) == 2000
    # one I/O lane: each thread's operations complete in the order it
    # submitted them (ids are drawn before queueing, so only per thread)
    pos = {op.id: n for n, op in enumerate(harvested)}
    for i in range(8):
        mine = [pos[op.id] for op, data in submitted if data[0] == i]
        assert mine == sorted(mine)
    for op, data in submitted:
        assert op.result() == tx_expected(data)


def test_monitor_and_transmit_at_the_same_time():
    mon_mod = pytest.importorskip("scardio.monitor")
    from scardio.reader import Reader
    dev = scardio.sim.open_device(next(_luns))
    sim = SimControl(dev)
    reader = Reader(dev, power_down_timeout=None)
    mon = mon_mod.Monitor([reader])
    try:
        sim.insert()
        assert mon.get(WAIT).kind == mon_mod.ARRIVAL
        card = reader.connect(timeout=WAIT)
        bad: list = []

        def worker(i: int) -> None:
            for k in range(300):
                data = bytes([i, k & 0xFF, 0x42])
                r = card.transmit(echo_apdu(data), timeout=WAIT)
                if bytes(r) != data + b"\x90\x00":
                    bad.append(bytes(r))

        assert run_threads(worker, 4) == []
        assert bad == []
        with pytest.raises(errors.TimeoutError):
            mon.get(0.05)       # transmits are no card events
        sim.remove()
        assert mon.get(WAIT).kind == mon_mod.DEPARTURE
        with pytest.raises(errors.ScardioError):
            card.transmit(echo_apdu(b"\x01"), timeout=WAIT)
    finally:
        mon.close()
        reader.close()


def test_many_readers_in_many_threads():
    rounds, nthreads = 5, 16

    def worker(i: int) -> None:
        for r in range(rounds):
            with scardio.sim.open_device(next(_luns)) as dev:
                sim = SimControl(dev)
                track = dev.submit(IOCTL.IS_PRESENT)
                sim.insert()
                track.wait(WAIT)
                connect(dev)
                for k in range(50):
                    data = bytes([i, r, k])
                    assert dev.ioctl(IOCTL.TRANSMIT, tx_request(data), 300) == tx_expected(data)
                dev.submit(IOCTL.IS_ABSENT)  # left pending: close cancels it

    assert run_threads(worker, nthreads) == []


def test_readers_api_in_many_threads():
    pytest.importorskip("scardio.reader")
    from scardio.reader import Reader

    def worker(i: int) -> None:
        for r in range(3):
            with Reader(scardio.sim.open_device(next(_luns)), power_down_timeout=0.01) as reader:
                SimControl(reader.device).insert()
                reader.wait_for_card(timeout=WAIT)
                card = reader.connect(timeout=WAIT)
                for k in range(20):
                    data = bytes([i, r, k])
                    assert bytes(card.transmit(echo_apdu(data), timeout=WAIT)) == \
                        data + b"\x90\x00"
                card.disconnect()

    assert run_threads(worker, 8) == []


def test_close_under_busy_threads_gives_typed_errors_only():
    dev = scardio.sim.open_device(next(_luns))
    sim = SimControl(dev)
    sim.insert()
    connect(dev)
    stop = threading.Event()
    unexpected: list = []
    counts = {"ok": 0, "closed": 0, "cancelled": 0}
    lock = threading.Lock()

    def worker(i: int) -> None:
        k = 0
        while not stop.is_set():
            k += 1
            data = bytes([i, k & 0xFF])
            try:
                if k % 2:
                    out = dev.ioctl(IOCTL.TRANSMIT, tx_request(data), 300)
                else:
                    out = dev.submit(IOCTL.TRANSMIT, tx_request(data), 300).wait(WAIT)
                assert out == tx_expected(data)
                key = "ok"
            except errors.CancelledError:
                key = "cancelled"
            except errors.DeviceGoneError:  # ClosedError is one
                key = "closed"
            except BaseException as exc:  # noqa: BLE001
                unexpected.append(exc)
                return
            with lock:
                counts[key] += 1
            if key == "closed":
                return

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(8)]
    for t in threads:
        t.start()
    time.sleep(0.2)
    t0 = time.monotonic()
    dev.close()
    assert time.monotonic() - t0 < 1.0
    time.sleep(0.05)
    stop.set()
    for t in threads:
        t.join(WAIT)
    assert not any(t.is_alive() for t in threads)
    assert unexpected == []
    assert counts["ok"] > 0 and counts["closed"] > 0


def test_same_reader_opened_from_many_threads_at_once():
    lun = next(_luns)
    barrier = threading.Barrier(8)
    opened: list = []
    busy: list = []
    lock = threading.Lock()

    def worker(i: int) -> None:
        barrier.wait(WAIT)
        try:
            d = scardio.sim.open_device(lun)
        except errors.ReaderInUseError:
            with lock:
                busy.append(i)
        else:
            with lock:
                opened.append(d)

    assert run_threads(worker, 8) == []
    assert len(opened) == 1 and len(busy) == 7
    dev = opened[0]
    assert dev.ioctl(IOCTL.GET_STATE, b"", 4) == dword(State.ABSENT)
    dev.close()
    with scardio.sim.open_device(lun):    # free again
        pass


def test_concurrent_close_from_many_threads_is_idempotent():
    for _ in range(20):
        dev = scardio.sim.open_device(next(_luns))
        dev.submit(IOCTL.IS_PRESENT)
        assert run_threads(lambda i: dev.close(), 6, timeout=WAIT) == []
        assert dev.closed


def test_cancel_and_release_race_with_completion():
    """Operations cancelled, dropped and waited for while they complete."""
    dev = scardio.sim.open_device(next(_luns))
    sim = SimControl(dev)
    sim.insert()
    connect(dev)
    try:
        def worker(i: int) -> None:
            for k in range(500):
                op = dev.submit(IOCTL.TRANSMIT, tx_request(bytes([i, k & 0xFF])), 300)
                if k % 3 == 0:
                    op.cancel()
                if k % 3 == 1:
                    del op          # released while pending or done
                    continue
                try:
                    op.wait(WAIT)
                except errors.CancelledError:
                    pass

        assert run_threads(worker, 8) == []
        # the queue holds only completions of operations still referenced
        dev.harvest(0.1)
        assert dev.ioctl(IOCTL.TRANSMIT, tx_request(b"\x01"), 300) == tx_expected(b"\x01")
    finally:
        dev.close()
