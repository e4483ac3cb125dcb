"""The reader API's per-call paths (Card.transmit, Reader.state) take
shortcuts for speed; these tests pin that the shortcuts answer exactly what
the full checks answer: the same responses, the same typed errors, the same
messages (benchmarks/test_bench_reader_api.py measures the speed)."""

from __future__ import annotations

import contextlib
import struct
import subprocess
import sys
import time
from typing import Any, Optional

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scardio import apdu as apdu_module
from scardio import errors
from scardio.apdu import APDULengthError, MAX_APDU, check_length
from scardio.card import Card
from scardio.constants import IOCTL, Protocol, State
from scardio.reader import Reader
from scardio.sequences import decode_state
from scardio.sequences.transmit import Response

from helpers_reader import sim_reader

U32 = struct.Struct("<I")
PROTOCOLS = [Protocol.T0, Protocol.T1, Protocol.RAW, 0x4, 0]


def outcome(fn: Any, *args: Any) -> Optional[tuple[type, str]]:
    try:
        fn(*args)
    except APDULengthError as exc:
        return type(exc), str(exc)
    return None


def interesting_apdus() -> st.SearchStrategy[bytes]:
    """Around every length limit, with the fifth byte often 00 (an extended
    length on T=1, refused on T=0)."""
    lengths = st.sampled_from([0, 1, 3, 4, 5, 6, 7, 8, 9, 260, 261, 262, 263,
                               MAX_APDU - 1, MAX_APDU, MAX_APDU + 1])
    return st.builds(
        lambda n, fifth, seed: bytes((seed + i) & 0xFF if i != 4 else fifth
                                     for i in range(n)),
        lengths, st.sampled_from([0, 1, 0xFF]), st.integers(0, 255))


@settings(max_examples=400, deadline=None)
@given(interesting_apdus(), st.sampled_from(PROTOCOLS))
def test_check_length_shortcut_agrees_with_the_full_checks(raw: bytes, protocol: int) -> None:
    # The full checks are what check_length ran for every length before it
    # decided the common ones at once.
    assert outcome(check_length, raw, protocol) == \
        outcome(apdu_module._check_length_in_detail, raw, protocol)


@pytest.mark.parametrize("raw, protocol", [
    (bytes(261), Protocol.T1), (b"\x80\xEE\x00\x00\xFF" + bytes(256), Protocol.T0),
    (bytes(4105), Protocol.T1), (b"\x01", Protocol.RAW), (bytes(300), 0x4),
])
def test_check_length_builds_no_message_for_a_valid_apdu(monkeypatch: pytest.MonkeyPatch,
                                                         raw: bytes, protocol: int) -> None:
    def no_message(protocol: int) -> str:
        raise AssertionError("an error message was built for a valid APDU")
    monkeypatch.setattr(apdu_module, "_protocol_name", no_message)
    check_length(raw, protocol)


@pytest.mark.parametrize("raw, protocol, message", [
    (b"\x00\xA4", Protocol.T1, "APDU of 2 byte(s) is too short for T=1: at least the 4 "
     "header bytes CLA INS P1 P2 are needed"),
    (bytes(262), Protocol.T0, "APDU of 262 bytes is too long for T=0: at most 261 "
     "(extended APDUs need T=1)"),
    (bytes(MAX_APDU + 1), 0x4, f"APDU of {MAX_APDU + 1} bytes is too long for protocol "
     f"0x4: at most {MAX_APDU}"),
    (bytes.fromhex("80EE0000000400"), Protocol.T0, "extended APDU (case 2E) cannot be sent "
     "with T=0; extended APDUs need T=1"),
    (b"", Protocol.RAW, "empty command"),
])
def test_check_length_messages(raw: bytes, protocol: int, message: str) -> None:
    with pytest.raises(APDULengthError) as info:
        check_length(raw, protocol)
    assert str(info.value) == message


@pytest.mark.parametrize("value", list(range(len(State) + 2)) + [0xFFFFFFFF])
def test_decode_state_by_value(value: int) -> None:
    expected = State(value) if value < len(State) else State.UNKNOWN
    assert decode_state(U32.pack(value)) is expected
    # a longer answer is decoded from its first four bytes, as before
    assert decode_state(U32.pack(value) + b"\x00") is expected


def test_decode_state_short_output_is_a_driver_data_error() -> None:
    with pytest.raises(errors.DriverDataError, match="GET_STATE: driver returned 3 byte"):
        decode_state(b"\x06\x00\x00")


class AnsweringDevice:
    """A Device whose TRANSMIT answers come from a list (and GET_STATE from
    `state`), recording the IOCTLs it was asked."""

    closed = False

    def __init__(self, answers: list[bytes], state: bytes = U32.pack(6)) -> None:
        self.answers = list(answers)
        self.state = state
        self.calls: list[tuple[int, bytes, int]] = []

    def ioctl(self, code: int, input: bytes = b"", output_size: int = 0) -> bytes:
        self.calls.append((code, bytes(input), output_size))
        if code == IOCTL.GET_STATE:
            return self.state
        return self.answers.pop(0)

    def close(self) -> None:
        self.closed = True


def card_on(device: AnsweringDevice, protocol: Protocol = Protocol.T1) -> Card:
    reader = Reader(device, startup=False, power_down_timeout=None, name="answering")
    return Card(reader, bytes.fromhex("3B00"), protocol)


HEADER = bytes(8)


def test_transmit_answer_without_status_word_is_a_driver_data_error() -> None:
    card = card_on(AnsweringDevice([HEADER + b"\x90"]))
    with pytest.raises(errors.DriverDataError, match="response of 1 byte"):
        card.transmit(b"\x80\xEE\x00\x00\x01")
    assert card.connected


def test_transmit_returns_a_response_and_asks_the_right_sizes() -> None:
    dev = AnsweringDevice([HEADER + b"\x01\x90\x00", HEADER + b"\x90\x00",
                           HEADER + bytes(4096) + b"\x90\x00"])
    card = card_on(dev)
    rsp = card.transmit(b"\x80\xEE\x00\x00\x01")
    assert type(rsp) is Response and rsp == (b"\x01", 0x90, 0x00) and rsp.ok
    data, sw1, sw2 = rsp
    assert (data, sw1, sw2) == (b"\x01", 0x90, 0x00)
    card.transmit(b"\x80\xEE\x00\x00\x02\x01\x02")
    card.transmit(b"\x80\xEE\x00\x00\x00\x10\x00")  # extended Le: the large buffer
    header = struct.pack("<II", int(Protocol.T1), 8)
    assert dev.calls == [
        (int(IOCTL.TRANSMIT), header + b"\x80\xEE\x00\x00\x01", 8 + 256 + 2),
        (int(IOCTL.TRANSMIT), header + b"\x80\xEE\x00\x00\x02\x01\x02", 8 + 256 + 2),
        (int(IOCTL.TRANSMIT), header + b"\x80\xEE\x00\x00\x00\x10\x00", 8 + 65536 + 2),
    ]


def test_transmit_follow_ups_resolve_the_card_defaults() -> None:
    # 61xx: GET RESPONSE unless the card or the call turns it off
    dev = AnsweringDevice([HEADER + b"\x61\x02", HEADER + b"\xAB\xCD\x90\x00",
                           HEADER + b"\x61\x02", HEADER + b"\x61\x02"])
    card = card_on(dev)
    assert card.transmit(b"\x00\xB0\x00\x00") == (b"\xAB\xCD", 0x90, 0x00)
    card.auto_get_response = False
    assert card.transmit(b"\x00\xB0\x00\x00") == (b"", 0x61, 0x02)
    card.auto_get_response = True
    assert card.transmit(b"\x00\xB0\x00\x00", auto_get_response=False) == (b"", 0x61, 0x02)
    assert len(dev.calls) == 4 and dev.calls[1][1].endswith(b"\x00\xC0\x00\x00\x02")


def test_transmit_infinite_timeout_is_no_timeout() -> None:
    card = card_on(AnsweringDevice([HEADER + b"\x90\x00"]))
    assert card.transmit(b"\x00\xA4\x04\x00", timeout=float("inf")).ok
    with pytest.raises(ValueError):
        card.transmit(b"\x00\xA4\x04\x00", timeout=-1)


def test_transmit_releases_the_reader_lock_on_every_outcome() -> None:
    dev = AnsweringDevice([HEADER + b"\x90"])
    card = card_on(dev)
    with pytest.raises(errors.DriverDataError):
        card.transmit(b"\x80\xEE\x00\x00\x01")
    with pytest.raises(APDULengthError):
        card.transmit(b"\x80")
    card._mark_gone("test")
    with pytest.raises(errors.InvalidStateError, match="not connected: test"):
        card.transmit(b"\x80\xEE\x00\x00\x01")
    assert card.reader._lock.acquire(blocking=False)
    card.reader._lock.release()


def test_reader_state_on_a_closed_reader_is_a_closed_error() -> None:
    dev = AnsweringDevice([], state=U32.pack(4))
    reader = Reader(dev, startup=False, power_down_timeout=None, name="answering")
    assert reader.state() is State.POWERED
    reader.close(power_down=False)
    with pytest.raises(errors.ClosedError, match="'answering' is closed"):
        reader.state()


def test_sim_card_transmit_and_state_after_the_lanes_ran() -> None:
    """connect() runs through the device's lanes; the synchronous calls after
    it answer as before, and an overlapped call still completes."""
    with sim_reader() as (reader, sim):
        sim.insert()
        card = reader.connect(timeout=5)
        for _ in range(200):
            assert reader.state() is State.SPECIFIC
            assert card.transmit(b"\x80\xEE\x00\x00\x01") == (b"\x00", 0x90, 0x00)
        op = reader.device.submit(IOCTL.GET_STATE, b"", 4)
        assert decode_state(op.wait(5)) is State.SPECIFIC


# ---- the binding's transmit path (CardBase.transmit) against the full path --

import threading  # noqa: E402

from scardio._core import ReaderLock  # noqa: E402
from scardio.sim import EntryPoint, Fault  # noqa: E402


def outcome_of(fn: Any, *args: Any) -> tuple[str, Any, Any]:
    try:
        return ("ok", fn(*args), None)
    except Exception as exc:  # every error: its type and its message
        return ("error", type(exc), str(exc))


def lock_is_free(lock: Any) -> bool:
    """Whether another thread can take the lock (its owner always could)."""
    got: list[bool] = []

    def take_and_give_back() -> None:
        got.append(lock.acquire(timeout=2))
        if got[0]:
            lock.release()
    t = threading.Thread(target=take_and_give_back)
    t.start()
    t.join(5)
    return got == [True]


def command_apdus() -> st.SearchStrategy[bytes]:
    """The sim card's commands and others, every ISO case, lengths around
    the short limits and the fast path's own bound, the fifth byte often 00."""
    header = st.sampled_from([b"\x80\xEE\x00\x00", b"\x00\xA4\x04\x00", b"\x00\xB0\x00\x00",
                              b"\x00\xC0\x00\x00", b"\x00\x12\x00\x00", b"\x80\xEE\x01\x02",
                              b"\x00\xA4\x00\x00", b"\x00\xB0\x0F\xF0"])
    body = st.one_of(
        st.just(b""),
        st.integers(0, 255).map(lambda le: bytes([le])),
        st.builds(lambda nc, le: bytes([nc]) + bytes(range(nc)) + le,
                  st.integers(1, 255), st.sampled_from([b"", b"\x00", b"\x01", b"\x10"])),
        st.binary(min_size=0, max_size=600),
        st.just(b"\x00\x01\x00"), st.just(b"\x02\x2F\x01"),
        st.sampled_from([b"\xF0\x73\x63\x61\x72\x64\x69\x6F"]).map(lambda a: b"\x08" + a))
    short = st.binary(min_size=0, max_size=3)
    return st.one_of(st.builds(lambda h, b: h + b, header, body), short)


@pytest.fixture(scope="module")
def twin_cards() -> Any:
    """Two simulated readers with the same card: one for each path."""
    with contextlib.ExitStack() as stack:
        cards = {}
        for t0 in (False, True):
            pair = []
            for _ in range(2):
                reader, sim = stack.enter_context(sim_reader())
                sim.insert(t0=t0)
                pair.append(reader.connect(timeout=5))
            cards[t0] = pair
        yield cards


@settings(max_examples=300, deadline=None)
@given(st.lists(command_apdus(), min_size=1, max_size=6), st.booleans())
def test_fast_path_answers_what_the_full_path_answers(twin_cards: Any, apdus: list[bytes],
                                                      t0: bool) -> None:
    fast, full = twin_cards[t0]
    for raw in apdus:  # the same history on both cards: the same card state
        a = outcome_of(fast.transmit, raw)
        b = outcome_of(full._transmit_py, raw, None, None, None)
        assert a == b, raw.hex()
        assert type(a[1]) is type(b[1])
        if a[0] == "ok":  # a Response built in place is a whole tuple
            assert hash(a[1]) == hash(b[1]) and a[1][:] == b[1][:]
    assert fast.connected and full.connected


def calls_to_the_full_path(card: Card, monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    seen: list[Any] = []
    real = card._transmit_py

    def spy(*args: Any) -> Any:
        seen.append(args)
        return real(*args)
    monkeypatch.setattr(card, "_transmit_py", spy)
    return seen


def test_a_short_bytes_apdu_takes_the_fast_path_and_the_rest_the_full_path(
        monkeypatch: pytest.MonkeyPatch) -> None:
    with sim_reader() as (reader, sim):
        sim.insert()
        card = reader.connect(timeout=5)
        seen = calls_to_the_full_path(card, monkeypatch)
        for raw in (b"\x80\xEE\x00\x00\x01", b"\x80\xEE\x00\x00", b"\x80\xEE\x00\x00\x02\x01\x02",
                    b"\x80\xEE\x00\x00\xFF" + bytes(255) + b"\x00"):
            assert card.transmit(raw).ok
        assert seen == []
        echo = b"\x80\xEE\x00\x00\x01"
        slow = [bytearray(echo), echo.hex(), list(echo), b"\x80\xEE\x00\x00\x00\x00\x01"]
        for raw in slow:
            assert card.transmit(raw).ok  # type: ignore[arg-type]
        card.transmit(echo, timeout=5)
        card.transmit(echo, auto_get_response=False)
        card.transmit(echo, auto_resend=False)
        with pytest.raises(APDULengthError):
            card.transmit(b"\x80")
        assert len(seen) == len(slow) + 4


def test_a_traced_reader_takes_the_full_path(monkeypatch: pytest.MonkeyPatch) -> None:
    records: list[Any] = []
    with sim_reader(trace=records.append) as (reader, sim):
        sim.insert()
        card = reader.connect(timeout=5)
        seen = calls_to_the_full_path(card, monkeypatch)
        records.clear()
        assert card.transmit(b"\x80\xEE\x00\x00\x01") == (b"\x00", 0x90, 0x00)
        assert len(seen) == 1 and len(records) == 1


def test_fast_path_follow_ups_61xx_and_6cxx_as_the_full_path() -> None:
    with sim_reader() as (r1, s1), sim_reader() as (r2, s2):
        s1.insert(t0=True)
        s2.insert(t0=True)
        fast, full = r1.connect(Protocol.T0, timeout=5), r2.connect(Protocol.T0, timeout=5)
        select = b"\x00\xA4\x04\x00\x08\xF0\x73\x63\x61\x72\x64\x69\x6F"
        for raw in (select, b"\x80\xEE\x00\x00\x03\x01\x02\x03\x00",  # T=0 case 4: 61xx
                    b"\x00\xB0\x00\x00\x00", b"\x00\xB0\x00\x00\x10"):
            assert outcome_of(fast.transmit, raw) == outcome_of(full._transmit_py, raw, None,
                                                                None, None)
        # the 61xx answer was followed up with GET RESPONSE on both sides
        case4 = b"\x80\xEE\x00\x00\x03\x01\x02\x03\x00"
        assert fast.transmit(case4).data == full._transmit_py(case4, None, None, None).data
        fast.auto_get_response = False
        assert fast.transmit(case4).sw1 == 0x61
        # 6Cxx: READ BINARY past the end of EF 2F01 with too long an Le
        select_ef, read = b"\x00\xA4\x00\x00\x02\x2F\x01", b"\x00\xB0\x0F\xF0\x20"
        for card in (fast, full):
            assert card.transmit(b"\x00\xA4\x00\x00").ok  # the MF
            assert card.transmit(select_ef).ok
            assert card.transmit(read, auto_resend=False).sw == 0x6C10
        rsp = fast.transmit(read)
        assert rsp == full._transmit_py(read, None, None, None)
        assert rsp.ok and len(rsp.data) == 0x10


@pytest.mark.parametrize("kind, value", [(Fault.RETURN, c) for c in range(600, 619)]
                         + [(Fault.REMOVE_CARD, 0), (Fault.OVERLONG_LENGTH, 4)])
def test_fast_path_driver_errors_are_the_full_paths(kind: Fault, value: int) -> None:
    echo = b"\x80\xEE\x00\x00\x01"
    got = []
    for path in ("fast", "full"):
        with sim_reader() as (reader, sim):
            sim.insert()
            card = reader.connect(timeout=5)
            sim.fault(EntryPoint.TRANSMIT, kind, value)
            if path == "fast":
                result = outcome_of(card.transmit, echo)
            else:
                result = outcome_of(card._transmit_py, echo, None, None, None)
            got.append((result, card.connected, card._gone))
            assert lock_is_free(reader._lock), f"{path}: the lock is still held"
    assert got[0] == got[1]


def test_fast_path_on_a_closed_or_gone_card_is_typed_and_releases_the_lock() -> None:
    with sim_reader() as (reader, sim):
        sim.insert()
        card = reader.connect(timeout=5)
        sim.fault(EntryPoint.TRANSMIT, Fault.RETURN, 616)
        with pytest.raises(errors.NoCardError):
            card.transmit(b"\x80\xEE\x00\x00\x01")
        assert lock_is_free(reader._lock)
        with pytest.raises(errors.InvalidStateError, match="card is not connected: the card "
                           "was removed; connect again"):
            card.transmit(b"\x80\xEE\x00\x00\x01")
        assert lock_is_free(reader._lock)
    with sim_reader() as (reader, sim):
        sim.insert()
        card = reader.connect(timeout=5)
        reader.device.close()  # closed under the reader: the device's own error
        with pytest.raises(errors.ClosedError, match="device is closed"):
            card.transmit(b"\x80\xEE\x00\x00\x01")
        assert lock_is_free(reader._lock)


def test_threads_transmitting_while_another_closes_get_typed_errors() -> None:
    for _ in range(5):
        with sim_reader() as (reader, sim):
            sim.insert()
            card = reader.connect(timeout=5)
            start = threading.Barrier(5)
            seen: list[Any] = []

            def worker() -> None:
                start.wait(5)
                for _ in range(5000):
                    try:
                        assert card.transmit(b"\x80\xEE\x00\x00\x01").ok
                    except errors.ScardioError as exc:
                        seen.append(type(exc))
                        return
                seen.append(None)
            threads = [threading.Thread(target=worker) for _ in range(4)]
            for t in threads:
                t.start()
            start.wait(5)
            reader.close()
            for t in threads:
                t.join(10)
            assert not any(t.is_alive() for t in threads)
            assert len(seen) == 4
            for kind in seen:  # each stopped with a typed error (or finished first)
                assert kind is None or issubclass(kind, (errors.InvalidStateError,
                                                         errors.ClosedError)), kind
            assert lock_is_free(reader._lock)
            with pytest.raises(errors.InvalidStateError, match="the reader was closed"):
                card.transmit(b"\x80\xEE\x00\x00\x01")


# ---- ReaderLock: threading.RLock's behaviour ---------------------------------

@pytest.mark.parametrize("make", [ReaderLock, threading.RLock])
def test_reader_lock_behaves_as_rlock(make: Any) -> None:
    lock = make()
    assert lock.acquire() and lock.acquire(blocking=False) and lock.acquire(timeout=0.01)
    assert not lock_is_free(lock)
    for _ in range(3):
        lock.release()
    with pytest.raises(RuntimeError, match="cannot release un-acquired lock"):
        lock.release()
    with lock:
        assert lock._is_owned()
        other: list[Any] = []
        t = threading.Thread(target=lambda: other.append((lock.acquire(blocking=False),
                                                          lock.acquire(timeout=0.05))))
        t.start()
        t.join(5)
        assert other == [(False, False)]
        t = threading.Thread(target=lambda: other.append(outcome_of(lock.release)))
        t.start()
        t.join(5)
        assert other[1][:2] == ("error", RuntimeError)
    assert not lock._is_owned() and lock_is_free(lock)


@pytest.mark.parametrize("kwargs, same_message", [
    (dict(blocking=False, timeout=1), True), (dict(timeout=-2), True),
    (dict(timeout=float("nan")), True),
    (dict(timeout=1e300), False), (dict(timeout="1"), False), (dict(timeout=None), False)])
def test_reader_lock_refuses_what_rlock_refuses(kwargs: dict[str, Any],
                                                same_message: bool) -> None:
    # the same types; the same words where they are RLock's own (an
    # overflow's and a TypeError's come from the platform and the parser)
    mine = outcome_of(lambda: ReaderLock().acquire(**kwargs))
    theirs = outcome_of(lambda: threading.RLock().acquire(**kwargs))
    assert mine[0] == "error" and mine[:2] == theirs[:2]
    if same_message:
        assert mine == theirs


def test_reader_lock_waits_without_the_gil_and_hands_over() -> None:
    lock = ReaderLock()
    lock.acquire()
    ticks = []
    waiter_got: list[bool] = []
    t = threading.Thread(target=lambda: waiter_got.append(lock.acquire(timeout=5)))
    t.start()
    deadline = time.monotonic() + 0.3
    while time.monotonic() < deadline:  # the main thread runs while the other waits
        ticks.append(1)
    lock.release()
    t.join(5)
    assert waiter_got == [True] and len(ticks) > 100
    assert not lock.acquire(timeout=0.05)


def test_reader_lock_excludes_and_wakes_every_waiter_under_contention() -> None:
    # Threads that wait forever, with timeouts that run out, and re-enter:
    # never two inside, every waiter ends (a wake-up taken by one whose time
    # ran out must not strand the others), the lock free at the end.
    lock = ReaderLock()
    inside: list[int] = []
    done: list[str] = []
    gave_up = [0]

    def worker(n: int) -> None:
        for i in range(300):
            timeout = (-1, 0.0005, 0.002)[(n + i) % 3]
            if not lock.acquire(timeout=timeout):
                gave_up[0] += 1
                continue
            try:
                with lock:  # re-entered
                    inside.append(n)
                    assert len(inside) == 1, inside
                    time.sleep(0.0001 * (i % 3))  # hold it while the others wait
                    inside.pop()
            finally:
                lock.release()
        done.append(f"worker {n}")

    threads = [threading.Thread(target=worker, args=(n,), daemon=True) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(done) == sorted(f"worker {n}" for n in range(6)), (done, gave_up)
    assert not inside and lock_is_free(lock)
    assert lock.acquire(blocking=False)
    lock.release()


def test_reader_lock_hands_over_to_a_waiter_before_its_owner_takes_it_again() -> None:
    # A transmit loop takes the lock back at once after each release, with
    # the GIL held all along: a thread waiting for it (a power-down timer, a
    # close) still gets it at the next release instead of waiting the loop out.
    lock = ReaderLock()
    lock.acquire()
    queued = threading.Event()
    got_at: list[int] = []
    turns = [0]

    def waiter() -> None:
        queued.set()
        if lock.acquire(timeout=10):
            got_at.append(turns[0])
            lock.release()

    t = threading.Thread(target=waiter, daemon=True)
    t.start()
    assert queued.wait(10)
    time.sleep(0.05)  # from set() to asleep in the queue it keeps the GIL
    deadline = time.monotonic() + 5
    while not got_at and time.monotonic() < deadline:
        lock.release()
        lock.acquire()
        turns[0] += 1
    lock.release()
    t.join(10)
    assert got_at and got_at[0] <= 1, (got_at, turns)


def test_reader_lock_wait_sees_ctrl_c() -> None:
    code = ("import signal, threading, time\n"
            "from scardio._core import ReaderLock\n"
            "lock = ReaderLock()\n"
            "t = threading.Thread(target=lock.acquire); t.start(); t.join()\n"
            "signal.signal(signal.SIGALRM, lambda *a: (_ for _ in ()).throw(KeyboardInterrupt))\n"
            "signal.setitimer(signal.ITIMER_REAL, 0.2)\n"
            "t0 = time.monotonic()\n"
            "try:\n"
            "    lock.acquire(timeout=10)\n"
            "except KeyboardInterrupt:\n"
            "    print('interrupted', round(time.monotonic() - t0, 1))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("interrupted 0.")


def test_a_reader_lock_is_what_a_reader_holds() -> None:
    with sim_reader() as (reader, sim):
        assert type(reader._lock) is ReaderLock
