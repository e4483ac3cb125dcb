"""Reader.connect() and Card.disconnect() as the binding runs them
(scardio._core.reader_connect, CardBase._release): the cards they make, the
ATR and Loop they remember between connects, and the session's bookkeeping
(scardio._core.SessionBase) as every caller sees it."""

from __future__ import annotations

import itertools
import threading
import time
from typing import Any

import pytest

from scardio import Disposition, Protocol, Reader, errors, powerdown
from scardio.atr import parse_atr
from scardio.card import Card
from scardio.sim import SimControl, open_device

_LUNS = itertools.count(0x7A00)
# TCK should be 0x01: parse_atr refuses it, the card still works
_BAD_TCK_ATR = bytes.fromhex("3B80800100")


def _reader(**kw: Any) -> tuple[Reader, SimControl]:
    dev = open_device(next(_LUNS))
    sim = SimControl(dev)
    sim.insert()
    return Reader(dev, **kw), sim


def test_a_connected_card_is_the_card_its_constructor_makes() -> None:
    reader, _ = _reader()
    try:
        card = reader.connect()
        made = Card(reader, card.atr_bytes, card.protocol, card.connect_actions)
        for name in ("reader", "atr_bytes", "protocol", "connect_actions", "auto_get_response",
                     "auto_resend", "atr", "atr_error", "_header"):
            assert getattr(card, name) == getattr(made, name), name
        assert card.atr is made.atr  # parsed once per ATR bytes
        assert card.atr == parse_atr(card.atr_bytes)
        assert type(card.connect_actions) is list and card.connect_actions is not made.connect_actions
        assert card.connected and reader.card is card
        # fields, not an instance dict (a connect makes one card per call)
        assert vars(card) == {}
        assert card.transmit(b"\x00\x84\x00\x00\x08").sw == 0x9000
        card.disconnect()
        assert not card.connected and reader.card is None
        assert reader.power_down_pending
    finally:
        reader.close()


def test_the_options_of_each_connect_reach_its_card() -> None:
    reader, _ = _reader()
    try:
        a = reader.connect(auto_get_response=False, auto_resend=False)
        assert (a.auto_get_response, a.auto_resend) == (False, False)
        a.disconnect()
        b = reader.connect()
        assert (b.auto_get_response, b.auto_resend) == (True, True)
        b.disconnect()
    finally:
        reader.close()


def test_alternating_protocols_each_get_their_own_loop() -> None:
    # connect remembers the last Loop by its arguments' identity: a new
    # mask must still get its own SET_PROTOCOL
    reader, sim = _reader()
    try:
        for protocols, want in [(Protocol.T1, Protocol.T1), (Protocol.T0 | Protocol.T1, None),
                                (Protocol.T1, Protocol.T1), (int(Protocol.T1), Protocol.T1)]:
            card = reader.connect(protocols)
            if want is not None:
                assert card.protocol == want
            card.disconnect(Disposition.UNPOWER)
        sim.remove()
        sim.insert(t0=True)  # a T=0-only card refuses T=1 whatever was remembered
        with pytest.raises(errors.NotSupportedError, match="T=1"):
            reader.connect(Protocol.T1)
        assert reader.connect(Protocol.T0).protocol == Protocol.T0
    finally:
        reader.close()


def test_a_malformed_atr_after_a_good_one_is_not_taken_for_it() -> None:
    # connect remembers the last ATR it parsed: a card with another ATR
    # (here one parse_atr refuses) gets its own answer, and back again
    reader, sim = _reader()
    try:
        good = reader.connect()
        assert good.atr is not None and good.atr_error is None
        good.disconnect(Disposition.UNPOWER)
        sim.remove()
        sim.insert(_BAD_TCK_ATR)
        bad = reader.connect()
        assert bad.atr_bytes == _BAD_TCK_ATR
        assert bad.atr is None and "TCK" in str(bad.atr_error)
        bad.disconnect(Disposition.UNPOWER)
        sim.remove()
        sim.insert()
        again = reader.connect()
        assert again.atr is good.atr and again.atr_error is None
        again.disconnect()
    finally:
        reader.close()


def test_connect_errors_stay_typed_and_leave_the_reader_usable() -> None:
    reader, sim = _reader()
    try:
        card = reader.connect()
        with pytest.raises(errors.InvalidStateError, match="already connected"):
            reader.connect()
        card.disconnect()
        card.disconnect()  # idempotent
        with pytest.raises(ValueError, match="disposition"):
            card.disconnect("later")
        with pytest.raises(ValueError, match="share"):
            reader.connect(share="sometimes")
        with pytest.raises(ValueError):
            reader.connect(timeout=-1)
        sim.remove()
        with pytest.raises(errors.NoCardError):
            reader.connect()
        sim.insert()
        reader.connect().disconnect(Disposition.UNPOWER)
    finally:
        reader.close()
    with pytest.raises(errors.ClosedError):
        reader.connect()


def test_listeners_see_every_connect_and_disconnect() -> None:
    reader, _ = _reader()
    seen: list[Any] = []
    reader.add_listener(seen.append)
    try:
        reader.connect().disconnect()
        reader.connect().disconnect(Disposition.UNPOWER)
        kinds = [e.kind for e in seen]
        assert kinds == ["connect", "disconnect", "power_down_cancelled", "connect",
                         "disconnect", "power_down"], kinds
        assert seen[0].detail["protocol"] == "T1" and seen[0].detail["ms"] >= 0
        assert seen[1].detail == {"disposition": "LEAVE"}
        assert seen[2].detail == {"reason": "reconnect"}
    finally:
        reader.close()


def test_the_power_down_timer_of_a_leave_loop_still_fires() -> None:
    reader, _ = _reader(power_down_timeout=0.3)
    fired = threading.Event()
    reader.add_listener(lambda e: fired.set() if e.kind == "power_down" else None)
    try:
        for _ in range(500):
            reader.connect().disconnect()
        t0 = time.monotonic()
        assert reader.power_down_pending
        fired.clear()  # (a stall of 0.3 s inside the loop would have fired one)
        assert fired.wait(5)
        assert time.monotonic() - t0 >= 0.25  # from the last disconnect, not the first
        assert not reader.power_down_pending
    finally:
        reader.close()


def _count_notifies(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    s = powerdown._scheduler
    wakes: list[int] = []
    real = s._cv.notify
    monkeypatch.setattr(s._cv, "notify", lambda n=1: (wakes.append(n), real(n)))
    return wakes


def test_rearming_a_queued_timer_later_wakes_nothing_and_fires_at_the_new_deadline(
        monkeypatch: pytest.MonkeyPatch) -> None:
    fired: list[tuple[Any, float]] = []
    done = threading.Event()
    timer = powerdown.Timer(lambda arg: (fired.append((arg, time.monotonic())), done.set()))
    t0 = time.monotonic()
    timer.arm(0.1, "first")
    time.sleep(0.02)  # the thread now sleeps until the first deadline
    wakes = _count_notifies(monkeypatch)
    timer.arm(0.4, "later")
    assert wakes == []  # it re-queues the timer when it wakes at 0.1 s
    assert done.wait(5)
    assert fired[0][0] == "later" and fired[0][1] - t0 >= 0.4
    assert len(fired) == 1


def test_rearming_a_queued_timer_earlier_wakes_the_thread(
        monkeypatch: pytest.MonkeyPatch) -> None:
    fired: list[Any] = []
    done = threading.Event()
    timer = powerdown.Timer(lambda arg: (fired.append(arg), done.set()))
    timer.arm(30, "far")
    s = powerdown._scheduler
    deadline = time.monotonic() + 15  # past other tests' cancelled deadlines still queued
    while not (s._wakes_at is not None and s._wakes_at > time.monotonic() + 10):
        assert time.monotonic() < deadline, "the timer thread never slept to the far deadline"
        time.sleep(0.01)
    wakes = _count_notifies(monkeypatch)
    t0 = time.monotonic()
    timer.arm(0.05, "soon")
    assert wakes  # it would sleep past the new deadline
    assert done.wait(5)
    assert time.monotonic() - t0 < 5
    time.sleep(0.1)
    assert fired == ["soon"]
    assert not timer.active
