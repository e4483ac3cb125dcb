"""A Monitor over PC/SC readers waits in the driver itself: its own thread
blocks in one SCardGetStatusChange over all of them (a ``TrackingSet``),
with no lane thread per reader and no hop through a completion queue.
The scenarios of tests/pcsc_monitor_wait_scenarios.py run against a real
pcscd in a private mount and network namespace, once per module; the tests
below check what each one saw, against the guarantees every Monitor keeps."""

from __future__ import annotations

import types
from pathlib import Path
from typing import Any

import pytest

import pcscd_namespace
import usb_hotplug

pytestmark = [pytest.mark.pcscd]

SCENARIOS = Path(__file__).resolve().parent / "pcsc_monitor_wait_scenarios.py"


@pytest.fixture(scope="module")
def report() -> dict[str, Any]:
    hotplug = "0" if usb_hotplug.unavailable() else "1"
    return pcscd_namespace.sim_scenario_report(SCENARIOS, hotplug, timeout=300)


def scenario(report: dict[str, Any], name: str, **kw: Any) -> dict[str, Any]:
    return pcscd_namespace.scenario_result(report, name, **kw)


def per_reader(events: list[list[str]]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for kind, name in events:
        out.setdefault(name, []).append(kind)
    return out


def test_several_readers_under_one_monitor_wait_in_its_own_thread(
        report: dict[str, Any]) -> None:
    got = scenario(report, "several")
    assert got["on_set"] is True
    # Arrivals and removals on three readers, in order, each exactly once.
    assert got["got"] and got["count"] and got["together"]
    # Only the monitor's thread: no tracking lane thread per reader.
    assert got["threads_started"] == 1 and got["threads_during"] == 1
    assert got["callback_threads"] == 1 and got["callback_on_monitor"]
    # The reader's one tracking request is the monitor's: its own wait
    # follows the monitor's events, and a second request is refused.
    assert got["wait_for_card_s"] < 3
    assert got["busy"]["type"] == "DeviceBusyError"


def test_moves_between_two_waits_are_all_reported(report: dict[str, Any]) -> None:
    got = scenario(report, "between_waits")
    zero, one, two = got["names"]
    events = per_reader(got["events"])
    # One card left and came back, another came and left, while the monitor
    # thread sat in a callback: both events each, in order, and no phantom.
    assert events[one] == ["arrival", "departure", "arrival"]
    assert events[two] == ["arrival", "departure"]
    assert events[zero] == ["arrival"]
    assert len(got["events"]) == 6


def test_the_set_announces_events_before_the_trackers_bookkeeping(
        report: dict[str, Any]) -> None:
    got = scenario(report, "announced")
    assert got["on_set"] and got["heralded"] and got["still_heralded"], got
    assert got["kinds"] == ["arrival", "departure"], got
    assert got["same_objects"], got  # the broken first callback kept nothing away
    # As note_presence left them, before the callbacks ran.
    assert got["present_in_callbacks"] == [True, False], got
    assert got["card_in_departure_callback"] is False, got
    assert got["seq"][1] == got["seq"][0] + 1, got
    assert got["timestamps_in_order"], got


def test_a_herald_refuses_what_it_cannot_announce() -> None:
    import itertools

    from scardio import _core
    from scardio.session import ReaderSession

    session = ReaderSession(lambda: "x", None)
    event = types.SimpleNamespace()
    with pytest.raises(TypeError):
        _core.Herald()
    for callbacks in ([], [(), ()], [[print]]):
        with pytest.raises(TypeError):
            _core.Herald.for_event(event, session, True, itertools.count(1), callbacks)
    with pytest.raises(TypeError):
        _core.Herald.for_event(event, object(), True, itertools.count(1), [()])
    herald = _core.Herald.for_event(event, session, True, itertools.count(1), [()])
    assert herald.event is event and not herald.ran


def test_readers_added_and_removed_while_the_monitor_waits(report: dict[str, Any]) -> None:
    got = scenario(report, "add_remove")
    assert got["add_s"] < 1 and got["remove_s"] < 1
    assert got["added_event"] and got["third"] and got["removed_quiet"]
    assert got["own_request"]["type"] is None  # the removed reader's slot is free
    assert got["on_set"] is True and len(got["tracked"]) == 2


def test_closing_while_the_monitor_waits_is_bounded(report: dict[str, Any]) -> None:
    got = scenario(report, "close_waiting")
    assert got["reader_close_s"] < 1 and got["device_close_s"] < 1
    assert got["monitor_close_s"] < 1 and not got["thread_alive"]
    assert len(got["tracked_after"]) == 2
    assert got["still_reported"] and got["after_device_close"]
    assert got["errors"] == []


def test_a_direct_reader_beside_them_falls_back_to_the_queue(report: dict[str, Any]) -> None:
    got = scenario(report, "fallback")
    zero, one, _, direct = got["names"]
    assert got["on_set_first"] is True
    assert got["on_set_mixed"] is False  # a reader of another backend: today's path
    assert got["on_set_again"] is True
    events = per_reader(got["events"])
    assert events[zero] == ["arrival", "departure"]
    assert events[one] == ["arrival", "departure"]
    assert events[direct] == ["arrival"]


def test_no_thread_or_descriptor_is_left(report: dict[str, Any]) -> None:
    got = scenario(report, "leaks")
    assert got["tasks"] <= 0, got  # (a thread of an earlier scenario may end meanwhile)
    # no context (each a socket to pcscd) left behind, none piling up
    assert got["fds"] == 0 and set(got["trail"]) == {0}, got


def test_a_forked_child_leaves_the_parents_wait_alone(report: dict[str, Any]) -> None:
    got = scenario(report, "forked")
    assert got["child"] == ["InvalidStateError", "InvalidStateError"]
    assert got["parent_after"]


def test_a_reader_that_vanishes_mid_wait(report: dict[str, Any]) -> None:
    got = scenario(report, "vanish", missing="USB hotplug is not available here")
    assert got["on_set"] is True and got["listed_on_set"] is True
    name = got["name"]
    # Without a reader list: the vanished reader's tracking ends with its
    # error, the others go on.
    assert got["first"] == [["error", name]], got
    assert got["gone_s"] < 3
    assert got["others"]
    assert name not in got["tracked"]
    # With one: its removal, and nothing else.
    assert [e for e in got["listed"] if e[1] == name] == [["reader-removed", name]], got


def test_the_monitors_events_are_card_events_as_made_by_hand() -> None:
    """The Monitor builds its events without CardEvent's __init__ (fewer
    Python frames before the callback): they are the same events."""
    import dataclasses

    from scardio.monitor import CardEvent, Monitor

    got: list[CardEvent] = []
    mon = Monitor(callback=got.append, start=False)
    reader: Any = object()
    mon._event(reader, "arrival", None)
    mon._event(reader, "error", ValueError("x"))
    ev, err = got
    assert ev == CardEvent("arrival", reader, ev.timestamp, 1)
    assert (ev.kind, ev.reader, ev.seq, ev.error) == ("arrival", reader, 1, None)
    assert err.seq == 2 and isinstance(err.error, ValueError) and err.kind == "error"
    assert vars(ev) == vars(CardEvent("arrival", reader, ev.timestamp, 1))
    try:
        ev.kind = "departure"  # type: ignore[misc]
    except dataclasses.FrozenInstanceError:
        pass
    else:
        raise AssertionError("a Monitor's event is not frozen")
    mon.close()
