"""What a misbehaving IFD handler can do to scardio, and what it must not:
the hostile driver (tests/hostile/hostile_ifd.c, modes chosen per reader by
the device name) against the IFD backend.  Cases that could hang run in
child processes with timeouts."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import textwrap
import threading

import pytest

import scardio
from scardio import errors
from scardio.constants import IOCTL, PowerAction, Protocol

from hostile_driver import CTL_CONCURRENT_ENTRIES, build, transmit_input


@pytest.fixture(scope="module")
def hostile() -> str:
    return build()


def connect(dev: scardio.Device) -> None:
    """Power the hostile card and set T=0 (its only protocol)."""
    dev.ioctl(IOCTL.POWER, struct.pack("<I", PowerAction.COLD_RESET), 64)
    dev.ioctl(IOCTL.SET_PROTOCOL, struct.pack("<I", Protocol.T0), 4)


def run_child(code: str, *args: str, timeout: float = 30) -> str:
    """Run `code` in a fresh interpreter; its stdout (fails on a hang)."""
    try:
        proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args],
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"child process hung for {timeout} s: {e.stdout!r} {e.stderr!r}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


# ---- one library, whatever path names it -----------------------------------

def spellings(lib: str, tmp_path) -> list[str]:
    """Three names of one file: as built, with a ./ inside, a symlink."""
    link = tmp_path / "linked_driver.so"
    link.symlink_to(lib)
    return [lib, os.path.join(os.path.dirname(lib), ".", os.path.basename(lib)), str(link)]


def test_the_same_reader_through_another_path_spelling_is_in_use(hostile, tmp_path) -> None:
    first, *others = spellings(hostile, tmp_path)
    with scardio.Device.open_ifd(first, "", 0x51):
        for other in others:
            with pytest.raises(errors.ReaderInUseError):
                scardio.Device.open_ifd(other, "", 0x51).close()


def test_a_driver_that_is_not_thread_safe_gets_one_call_at_a_time_by_any_name(
        hostile, tmp_path) -> None:
    names = spellings(hostile, tmp_path)
    devices = [scardio.Device.open_ifd(name, "exclusive", 0x60 + i)
               for i, name in enumerate(names)]
    failures: list[BaseException] = []

    def hammer(dev: scardio.Device) -> None:
        for _ in range(20):
            try:
                dev.ioctl(IOCTL.GET_STATE, b"", 4)
            except errors.DriverError as e:  # the driver saw a concurrent entry
                failures.append(e)

    try:
        before = struct.unpack("<I", devices[0].ioctl(CTL_CONCURRENT_ENTRIES, b"", 4))[0]
        threads = [threading.Thread(target=hammer, args=(d,)) for d in devices]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        after = struct.unpack("<I", devices[0].ioctl(CTL_CONCURRENT_ENTRIES, b"", 4))[0]
    finally:
        for d in devices:
            d.close()
    assert after - before == 0 and not failures, (after - before, failures[:3])


# ---- output buffers hold only what the driver wrote ------------------------

SECRET = bytes([0x80, 0xEC, 0x00, 0x00]) + bytes([0xA5]) * 296   # echoed back whole


@pytest.mark.parametrize("overlapped", [False, True], ids=["sync", "overlapped"])
def test_a_driver_claiming_more_than_it_wrote_exposes_no_earlier_response(
        hostile, overlapped) -> None:
    with scardio.Device.open_ifd(hostile, "short-write", 0x70 + overlapped) as dev:
        connect(dev)

        def call(code: int, data: bytes, size: int) -> bytes:
            if overlapped:
                return dev.submit(code, data, size).wait(10)
            return dev.ioctl(code, data, size)

        # A buffer for the largest response: the driver writes into it directly
        # (smaller ones go through the backend's own, where a claim past the
        # caller's capacity is BUFFER_TOO_SMALL).
        size = scardio._core.MAX_OUTPUT
        for _ in range(3):
            assert call(IOCTL.TRANSMIT, transmit_input(SECRET), size)[8:] == SECRET
            # claims `size - 8` bytes, writes 90 00
            short = call(IOCTL.TRANSMIT, transmit_input(b"\x00\xB0\x00\x00"), size)
            assert short[8:10] == b"\x90\x00"
            assert len(short) == size
            assert short[10:] == bytes(size - 10), short[10:40].hex()
            assert call(IOCTL.TRANSMIT, transmit_input(SECRET), size)[8:] == SECRET
            ctl = call(scardio.constants.vendor_ctl_pcsc(7), b"", size)
            assert ctl[:2] == b"\x90\x00" and ctl[2:] == bytes(len(ctl) - 2), ctl[:40].hex()


# ---- a polling function that returns at once --------------------------------

def test_a_polling_function_that_returns_at_once_does_not_burn_a_core(hostile) -> None:
    out = run_child("""
        import sys, time
        import scardio
        from scardio.constants import IOCTL
        dev = scardio.Device.open_ifd(sys.argv[1], "busy-poll", 0)
        op = dev.submit(IOCTL.IS_ABSENT)    # the card stays in: polls for good
        t0, c0 = time.monotonic(), time.process_time()
        time.sleep(2)
        cpu = time.process_time() - c0
        assert not op.done()
        op.cancel()
        dev.close()
        print(f"{cpu:.3f}")
    """, hostile)
    cpu = float(out.split()[-1])
    assert cpu < 0.4, f"{cpu:.2f} s of CPU in a 2 s wait"


# ---- re-entry from a driver's log call --------------------------------------

def test_a_log_callback_calling_the_logging_reader_gets_a_reentry_error(hostile) -> None:
    out = run_child("""
        import struct, sys
        import scardio
        from scardio import errors
        from scardio.constants import IOCTL, PowerAction, Protocol
        sys.path.insert(0, sys.argv[2])
        from hostile_driver import transmit_input
        dev = scardio.Device.open_ifd(sys.argv[1], "log-reenter", 0)
        seen = []
        def on_log(priority, text):
            try:
                dev.ioctl(IOCTL.GET_STATE, b"", 4)
                seen.append("no error")
            except errors.ReentryError as e:
                seen.append(f"ReentryError {e.status_name}")
        dev.ioctl(IOCTL.POWER, struct.pack("<I", PowerAction.COLD_RESET), 64)
        dev.ioctl(IOCTL.SET_PROTOCOL, struct.pack("<I", Protocol.T0), 4)
        scardio._core.set_driver_log(on_log)
        dev.ioctl(IOCTL.TRANSMIT, transmit_input(b"\\x00\\xB0\\x00\\x00"), 16)
        dev.submit(IOCTL.TRANSMIT, transmit_input(b"\\x00\\xB0\\x00\\x00"), 16).wait(10)
        scardio._core.set_driver_log(None)
        # the reader still works afterwards
        dev.ioctl(IOCTL.GET_STATE, b"", 4)
        dev.close()
        print(seen)
    """, hostile, os.path.dirname(os.path.abspath(__file__)))
    assert out.strip() == str(["ReentryError POSSIBLE_DEADLOCK"] * 2), out


# ---- card-event counts that go back ------------------------------------------

def test_card_event_counts_going_back_make_no_events_and_one_log(hostile) -> None:
    logged: list[str] = []
    scardio._core.set_driver_log(lambda priority, text: logged.append(text))
    try:
        with scardio.Device.open_ifd(hostile, "backwards", 0x80) as dev:
            for _ in range(20):   # the card is in: each completes, reading the counts
                dev.submit(IOCTL.IS_PRESENT).wait(5)
            departure = dev.submit(IOCTL.IS_ABSENT)
            with pytest.raises(errors.TimeoutError):
                departure.wait(0.5)   # the card never left: no departure
            departure.cancel()
            assert dev.ioctl(IOCTL.GET_STATE, b"", 4) != struct.pack("<I", 1)  # not ABSENT
    finally:
        scardio._core.set_driver_log(None)
    went_back = [t for t in logged if "went back" in t]
    assert len(went_back) == 1, logged
