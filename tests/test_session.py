"""The reader's state machine without a device: ReaderSession's sequences
driven by hand (what they ask for, what they remember, what they emit)."""

from __future__ import annotations

import struct

import pytest

from scardio import IOCTL, Disposition, State, errors
from scardio.sequences import Loop
from scardio.session import ReaderSession


class FakeCard:
    def __init__(self):
        self.gone = None

    @property
    def connected(self):
        return self.gone is None

    def _mark_gone(self, why):
        if self.gone is None:
            self.gone = why


class Timer:
    def __init__(self):
        self.cancelled = False

    def cancel(self):
        self.cancelled = True


def drive(steps, answers):
    """Run `steps`, answering each request from `answers` (a dict of IOCTL
    code -> list of outputs), and a Loop by running its steps; returns
    (result, requests)."""
    seen = []

    def run(steps):
        try:
            req = next(steps)
            while True:
                if isinstance(req, Loop):
                    req = steps.send(run(req.steps(None)))
                    continue
                seen.append(req.code)
                req = steps.send(answers[req.code].pop(0))
        except StopIteration as stop:
            return stop.value
    return run(steps), seen


def state(s):
    return struct.pack("<I", s)


def session(timeout=5.0):
    events = []
    s = ReaderSession(lambda: "R", timeout)
    s.add_listener(events.append)
    return s, events


def test_disconnect_leave_asks_for_a_timer_and_reconnect_cancels_it():
    s, events = session(timeout=2.5)
    card = FakeCard()
    s.card = card
    delay, seen = drive(s.disconnect_steps(card, Disposition.LEAVE), {})
    assert (delay, seen) == (2.5, []) and card.gone == "disconnected" and s.card is None
    timer = Timer()
    tokens = []
    s.arm_timer(lambda delay, token: tokens.append((delay, token)) or timer, delay)
    assert tokens[0][0] == 2.5
    tokens = [t for _, t in tokens]
    assert s.power_down_pending
    s.cancel_timer("reconnect")
    assert timer.cancelled and not s.power_down_pending
    # the cancelled timer's callback, already running, gives up
    assert drive(s.timer_fired_steps(tokens[0]), {}) == (None, [])
    assert [e.kind for e in events] == ["disconnect", "power_down_cancelled"]


def test_the_timer_firing_powers_down():
    s, events = session()
    tokens = []
    s.arm_timer(lambda delay, token: tokens.append(token) or Timer(), 1.0)
    _, seen = drive(s.timer_fired_steps(tokens[0]), {
        IOCTL.RELEASE_CARD: [state(0)],  # a direct device: the card's power is ours
        IOCTL.GET_STATE: [state(State.SPECIFIC), state(State.SWALLOWED)], IOCTL.POWER: [b""]})
    assert seen == [IOCTL.RELEASE_CARD, IOCTL.GET_STATE, IOCTL.POWER, IOCTL.GET_STATE]
    assert not s.power_down_pending
    assert events[-1].kind == "power_down" and events[-1].detail["reason"] == "timer"
    assert events[-1].detail["powered_down"]


def test_the_timer_firing_releases_a_card_the_resource_manager_powers():
    s, events = session()
    tokens = []
    s.arm_timer(lambda delay, token: tokens.append(token) or Timer(), 1.0)
    _, seen = drive(s.timer_fired_steps(tokens[0]), {IOCTL.RELEASE_CARD: [state(1)]})
    assert seen == [IOCTL.RELEASE_CARD]  # no power-down: other clients' cards stay as they are
    assert events[-1].kind == "power_down" and events[-1].detail == {
        "reason": "timer", "actions": ["RELEASED"], "powered_down": False}


def test_disconnect_on_a_closed_reader_runs_nothing():
    s, events = session()
    card = FakeCard()
    s.card = card
    s.closed = True
    for disposition in Disposition:
        assert drive(s.disconnect_steps(card, disposition), {}) == (None, [])
    assert not card.connected and s.card is None and not s.power_down_pending


def test_a_failing_power_down_is_an_event_not_an_error():
    s, events = session()
    steps = s.power_down_steps("close")
    next(steps)
    with pytest.raises(StopIteration) as stop:
        steps.throw(errors.NoCardError("gone"))
    assert stop.value.value == []
    assert events[-1].kind == "power_down_failed" and events[-1].detail["reason"] == "close"


def test_connect_is_refused_on_a_closed_reader_and_over_a_connected_card():
    s, _ = session()
    s.card = FakeCard()
    with pytest.raises(errors.InvalidStateError, match="already connected"):
        next(s.connect_steps(3, lambda conn: FakeCard()))
    s.begin_close()
    with pytest.raises(errors.ClosedError, match="'R' is closed"):
        next(s.connect_steps(3, lambda conn: FakeCard()))
    assert not s.begin_close()  # once


def test_presence_reports_reach_waiters_and_drop_a_removed_card():
    s, _ = session()
    card = FakeCard()
    s.card = card
    got = []
    s.add_presence_waiter(got.append)
    s.note_presence(True)
    assert card.connected and s.present is True
    assert got == []  # the waiters hear of it apart, once the monitor asked again
    s.tell_presence_waiters(True)
    s.note_presence(False)
    assert card.gone == "the card was removed" and s.card is None and s.present is False
    s.tell_presence_waiters(False)
    assert got == [True, False]
    s.remove_presence_waiter(got.append)
    s.note_presence(True)
    s.tell_presence_waiters(True)
    assert got == [True, False] and s.present is True
