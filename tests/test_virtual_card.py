"""Cards written in Python, hosted in process by the simulated reader
(``SimControl.insert(card=...)``), used through the ordinary Reader / Card
API: answers, state across APDUs, exceptions (6F00, reader still usable),
malformed answers (driver-data errors), T=0 framing, power hooks in order,
steering the reader from inside the card, and the card object released
when the reader drops it."""

from __future__ import annotations

import gc
import logging
import threading
import weakref

import pytest

from helpers_reader import sim_reader
from scardio import errors
from scardio.atr import ATRChecksumError, ATRError
from scardio.sim import ATR_T0, ATR_T1, CardMute, SimControl, VirtualCard, open_device


class Counter(VirtualCard):
    """INS 10: a counter that survives APDUs; INS 20: raise; INS 30..3F:
    malformed answers; INS 40: n data bytes (P3); INS 50: remove itself."""

    def __init__(self, atr: bytes = ATR_T1) -> None:
        self.atr = atr
        self.count = 0
        self.events: list[object] = []
        self.sim: SimControl | None = None

    def power_up(self) -> None:
        self.events.append("power_up")

    def power_down(self) -> None:
        self.events.append("power_down")

    def reset(self, warm: bool) -> None:
        self.events.append(("reset", warm))

    def apdu(self, command: bytes) -> bytes:
        self.events.append(command[1])
        ins = command[1]
        if ins == 0x10:
            self.count += 1
            return self.count.to_bytes(2, "big") + b"\x90\x00"
        if ins == 0x20:
            raise KeyError("card bug")
        if ins == 0x30:
            return b"\x90"
        if ins == 0x31:
            return b""
        if ins == 0x32:
            return "9000"  # type: ignore[return-value]
        if ins == 0x33:
            return None  # type: ignore[return-value]
        if ins == 0x34:
            return bytes(257) + b"\x90\x00"
        if ins == 0x35:
            return bytearray(b"\x01\x90\x00")  # type: ignore[return-value]
        if ins == 0x40:
            n = command[4] if len(command) > 4 else 0
            return bytes(range(n)) + b"\x90\x00"
        if ins == 0x50:
            assert self.sim is not None
            self.sim.remove()
            return b"\x90\x00"
        if ins == 0x60:
            raise CardMute()
        return b"\x6d\x00"


def test_answers_and_state_across_apdus():
    with sim_reader(power_down_timeout=0) as (reader, sim):
        card_obj = Counter()
        sim.insert(card=card_obj)
        reader.wait_for_card(timeout=5)
        with reader.connect() as card:
            assert card.atr_bytes == ATR_T1 and card.protocol_name == "T=1"
            answers = [card.transmit(b"\x00\x10\x00\x00") for _ in range(3)]
            assert [bytes(a.data) for a in answers] == [b"\x00\x01", b"\x00\x02", b"\x00\x03"]
            assert all(a.sw == 0x9000 for a in answers)
            assert card.transmit(b"\x00\x99\x00\x00").sw == 0x6D00
        assert card_obj.count == 3


def test_an_exception_answers_6f00_is_logged_and_the_reader_stays_usable(caplog):
    with sim_reader(power_down_timeout=0) as (reader, sim):
        sim.insert(card=Counter())
        reader.wait_for_card(timeout=5)
        with reader.connect() as card:
            with caplog.at_level(logging.ERROR, logger="scardio.sim"):
                r = card.transmit(b"\x00\x20\x00\x00")
            assert (bytes(r.data), r.sw) == (b"", 0x6F00)
            rec = [r for r in caplog.records if r.name == "scardio.sim"]
            assert len(rec) == 1 and rec[0].exc_info is not None
            assert "Counter.apdu(00200000) raised" in rec[0].getMessage()
            assert "KeyError: 'card bug'" in caplog.text  # the traceback
            assert card.transmit(b"\x00\x10\x00\x00").sw == 0x9000


@pytest.mark.parametrize("ins, why", [(0x30, "answered 1 byte(s): no status word"),
                                      (0x31, "answered 0 byte(s): no status word"),
                                      (0x32, "answered str, not bytes"),
                                      (0x33, "answered NoneType, not bytes"),
                                      (0x34, "answered 259 bytes: more than the 258")])
def test_malformed_answers_give_a_driver_data_error(caplog, ins, why):
    with sim_reader(power_down_timeout=0) as (reader, sim):
        sim.insert(card=Counter())
        reader.wait_for_card(timeout=5)
        with reader.connect() as card:
            with caplog.at_level(logging.ERROR, logger="scardio.sim"):
                with pytest.raises(errors.DriverDataError, match="no status word"):
                    card.transmit(bytes([0x00, ins, 0x00, 0x00]))
            assert why in caplog.text
            # The reader and the card carry on.
            assert card.transmit(b"\x00\x10\x00\x00").sw == 0x9000


def test_a_bytearray_answer_is_accepted():
    with sim_reader(power_down_timeout=0) as (reader, sim):
        sim.insert(card=Counter())
        reader.wait_for_card(timeout=5)
        with reader.connect() as card:
            r = card.transmit(b"\x00\x35\x00\x00")
            assert (bytes(r.data), r.sw) == (b"\x01", 0x9000)


def test_an_extended_apdu_may_have_a_long_answer():
    with sim_reader(power_down_timeout=0) as (reader, sim):
        sim.insert(card=Counter())
        reader.wait_for_card(timeout=5)
        with reader.connect() as card:
            r = card.transmit(b"\x00\x34\x00\x00\x00\x01\x01")
            assert len(r.data) == 257 and r.sw == 0x9000


def test_a_mute_card_times_out():
    with sim_reader(power_down_timeout=0) as (reader, sim):
        sim.insert(card=Counter())
        reader.wait_for_card(timeout=5)
        with reader.connect() as card:
            with pytest.raises(errors.TimeoutError):
                card.transmit(b"\x00\x60\x00\x00")
            assert card.transmit(b"\x00\x10\x00\x00").sw == 0x9000


def test_t0_card_gets_get_response_and_6cxx_framing():
    with sim_reader(power_down_timeout=0) as (reader, sim):
        card_obj = Counter(ATR_T0)
        sim.insert(card=card_obj)
        reader.wait_for_card(timeout=5)
        with reader.connect() as card:
            assert card.protocol_name == "T=0"
            raw = dict(auto_get_response=False, auto_resend=False)
            # Case 4 with data back: 61xx, then GET RESPONSE, which the sim
            # answers itself (the card never sees INS C0).
            r = card.transmit(b"\x00\x40\x00\x00\x01\xaa\x00", **raw)
            assert (bytes(r.data), r.sw) == (b"", 0x6101)
            r = card.transmit(b"\x00\xc0\x00\x00\x01", **raw)
            assert (bytes(r.data), r.sw) == (b"\x00", 0x9000)
            assert 0xC0 not in card_obj.events
            # Case 2 with a wrong Le: 6Cxx, then the right one.
            card_obj.events.clear()
            r = card.transmit(b"\x00\x10\x00\x00\x08", **raw)
            assert r.sw == 0x6C02
            r = card.transmit(b"\x00\x10\x00\x00\x02", **raw)
            assert r.sw == 0x9000 and len(r.data) == 2
            # Card.transmit's own follow-ups make it one call.
            r = card.transmit(b"\x00\x40\x00\x00\x05")
            assert (bytes(r.data), r.sw) == (bytes(range(5)), 0x9000)
            r = card.transmit(b"\x00\x40\x00\x00\x01\x10\x00")
            assert (bytes(r.data), r.sw) == (b"\x00", 0x9000)


def test_t1_card_answers_pass_unchanged():
    with sim_reader(power_down_timeout=0) as (reader, sim):
        sim.insert(card=Counter(ATR_T1))
        reader.wait_for_card(timeout=5)
        with reader.connect() as card:
            assert card.protocol_name == "T=1"
            r = card.transmit(b"\x00\x40\x00\x00\x01\xaa\x00",
                              auto_get_response=False, auto_resend=False)
            assert (bytes(r.data), r.sw) == (b"\x00", 0x9000)
            # Fewer bytes than Le is not re-framed under T=1.
            r = card.transmit(b"\x00\x10\x00\x00\x08", auto_get_response=False,
                              auto_resend=False)
            assert len(r.data) == 2 and r.sw == 0x9000


def test_power_hooks_run_in_order():
    from scardio.sequences.disconnect import Disposition
    with sim_reader(power_down_timeout=0) as (reader, sim):
        card_obj = Counter()
        sim.insert(card=card_obj)
        reader.wait_for_card(timeout=5)
        with reader.connect() as card:
            card.transmit(b"\x00\x10\x00\x00")
            card.disconnect(Disposition.RESET)     # warm reset, then power-down
        with reader.connect() as card:
            card.transmit(b"\x00\x10\x00\x00")
        hooks = [e for e in card_obj.events if e != 0x10]
        c = sim.counters()
        assert hooks == ["power_up", ("reset", True), "power_down", "power_up", "power_down"]
        # Every power-up, reset and power-down the reader counted reached the
        # card, in that order, and the APDUs came while it was powered.
        assert hooks.count("power_up") == c.power_ups == 2
        assert hooks.count(("reset", True)) == c.resets == 1
        assert hooks.count("power_down") == c.power_downs == 2
        assert card_obj.events.index(0x10) > card_obj.events.index("power_up")
        assert not c.powered


def test_a_failing_power_up_hook_fails_the_connect_and_is_logged(caplog):
    class Broken(VirtualCard):
        atr = ATR_T1

        def power_up(self) -> None:
            raise OSError("no power")

    with sim_reader(power_down_timeout=0) as (reader, sim):
        sim.insert(card=Broken())
        reader.wait_for_card(timeout=5)
        with caplog.at_level(logging.ERROR, logger="scardio.sim"):
            with pytest.raises(errors.ScardioError):
                reader.connect()
        assert "Broken power hook" in caplog.text and "OSError: no power" in caplog.text
        assert not sim.counters().powered


def test_the_card_may_steer_its_own_reader():
    # The card removes itself from inside apdu(): that needs the reader's
    # vendor controls to work while the TRANSMIT is in the card's code.
    with sim_reader(power_down_timeout=0) as (reader, sim):
        card_obj = Counter()
        card_obj.sim = sim
        sim.insert(card=card_obj)
        reader.wait_for_card(timeout=5)
        card = reader.connect()
        done = threading.Event()
        result: list[object] = []

        def run() -> None:
            try:
                result.append(card.transmit(b"\x00\x50\x00\x00").sw)
            except Exception as exc:  # noqa: BLE001 - checked below
                result.append(exc)
            done.set()

        threading.Thread(target=run, daemon=True).start()
        assert done.wait(10), "the card's own REMOVE deadlocked"
        # Removed during its own APDU: the answer is lost with the card.
        assert len(result) == 1 and isinstance(result[0], errors.NoCardError), result
        assert not sim.counters().present
        card.disconnect()


def _inserted_ref(sim: SimControl, atr: bytes = ATR_T1) -> "weakref.ref[Counter]":
    card_obj = Counter(atr)
    sim.insert(card=card_obj)
    return weakref.ref(card_obj)


@pytest.mark.parametrize("how", ["remove", "swap", "builtin", "close"])
def test_the_reader_releases_the_card(how):
    dev = open_device(0x3F0 + ["remove", "swap", "builtin", "close"].index(how))
    try:
        sim = SimControl(dev)
        ref = _inserted_ref(sim)
        gc.collect()
        assert ref() is not None  # the reader holds it
        if how == "remove":
            sim.remove()
        elif how == "swap":
            sim.insert(card=Counter())
        elif how == "builtin":
            sim.insert()
        else:
            dev.close()
        gc.collect()
        assert ref() is None
    finally:
        dev.close()


def test_a_bad_atr_is_refused_at_insertion():
    class BadChecksum(VirtualCard):
        atr = bytes.fromhex("3BF81300008131FE457363617264696F31B1")

    class Empty(VirtualCard):
        pass

    class NotBytes(VirtualCard):
        atr = "3B00"  # type: ignore[assignment]

    with sim_reader(power_down_timeout=0) as (reader, sim):
        with pytest.raises(ATRChecksumError, match=r"BadChecksum\.atr .* is not a valid ATR"):
            sim.insert(card=BadChecksum())
        with pytest.raises(ATRError, match=r"Empty\.atr \(empty\) is not a valid ATR"):
            sim.insert(card=Empty())
        with pytest.raises(TypeError, match="atr must be bytes"):
            sim.insert(card=NotBytes())
        with pytest.raises(TypeError, match="needs a scardio.sim.VirtualCard"):
            sim.insert(card=object())  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="card alone"):
            sim.insert(ATR_T1, card=Counter())
        assert not sim.counters().present


def test_a_reader_of_another_driver_cannot_host_a_card(tmp_path):
    class Fake:
        library = str(tmp_path / "missing.so")
        lun = 0

    with pytest.raises(OSError):
        SimControl(Fake()).insert(card=Counter())  # type: ignore[arg-type]


def test_many_threads_with_many_cards():
    # Each thread its own reader and Python card: the callbacks take the GIL
    # on the transmitting thread, and every answer is that card's own.
    from scardio import Reader
    from helpers_reader import next_lun
    errors_seen: list[BaseException] = []

    def work(k: int) -> None:
        dev = open_device(next_lun())
        try:
            card_obj = Counter()
            SimControl(dev).insert(card=card_obj)
            reader = Reader(dev, power_down_timeout=None)
            reader.wait_for_card(timeout=5)
            card = reader.connect()
            for i in range(1, 301):
                r = card.transmit(b"\x00\x10\x00\x00")
                assert bytes(r.data) == i.to_bytes(2, "big"), (k, i, r)
            card.disconnect()
            reader.close()
        except BaseException as exc:  # reported by the main thread
            errors_seen.append(exc)
        finally:
            dev.close()

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads)
    assert errors_seen == []


EXIT_SCRIPT = """
import threading, time
import scardio
from scardio.sim import SimControl, open_device
from scardio.sim.cards import FileSystemCard
dev = open_device(7)
SimControl(dev).insert(card=FileSystemCard())
reader = scardio.Reader(dev, power_down_timeout=None)
reader.wait_for_card(timeout=5)
card = reader.connect()
print(card.transmit(bytes.fromhex("0084000004")))
def spin():
    while True:
        try:
            card.transmit(bytes.fromhex("0084000004"))
        except Exception:
            pass
if {spin}:
    threading.Thread(target=spin, daemon=True).start()
    time.sleep(0.2)
print("exiting")
"""


@pytest.mark.parametrize("spin", [False, True], ids=["idle", "transmitting"])
def test_the_interpreter_exits_with_a_card_still_inserted(spin):
    # Nothing closed: the reader still holds the card object, maybe in a
    # call, as the interpreter finalizes; the callbacks must not touch it.
    import subprocess
    import sys
    proc = subprocess.run([sys.executable, "-c", EXIT_SCRIPT.format(spin=spin)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0] == "4D 73 6B 75 SW=9000"
    assert proc.stdout.splitlines()[-1] == "exiting"
