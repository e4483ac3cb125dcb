"""Reader.wait_for_card() / wait_for_removal() over PC/SC: on pcsc-lite the
tracking wait runs in the caller's thread (no hand-off to the tracking
lane), in slices between which Ctrl-C is seen, with every guarantee of the
lane's wait kept.  The scenarios of tests/pcsc_wait_scenarios.py run
against a real pcscd in a private namespace."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

import pcscd_namespace

pytestmark = [pytest.mark.pcscd,
              pytest.mark.skipif(not sys.platform.startswith("linux"),
                                 reason="pcsc-lite's waits are bounded this way on Linux")]

SCENARIOS = Path(__file__).resolve().parent / "pcsc_wait_scenarios.py"
SLACK = 0.25  # a loaded CI machine


@pytest.fixture(scope="module")
def report() -> dict[str, Any]:
    return pcscd_namespace.sim_scenario_report(SCENARIOS, timeout=300)


def scenario(report: dict[str, Any], name: str) -> dict[str, Any]:
    return pcscd_namespace.scenario_result(report, name)


def test_waits_return_on_arrival_and_removal_without_a_lane_thread(
        report: dict[str, Any]) -> None:
    got = scenario(report, "in_callers_thread")
    for want in ("card", "removal"):
        assert 0.3 - 0.05 < got[f"{want}_s"] < 0.3 + 1.0, got
    # the tracking lane never started: the waits ran in the caller's thread
    assert got["tasks_after"] == got["tasks_before"], got


def test_a_timed_out_wait_raises_the_readers_timeout_error(report: dict[str, Any]) -> None:
    got = scenario(report, "in_callers_thread")
    assert got["timeout"]["type"] == "TimeoutError", got
    assert got["timeout"]["message"] == "no sign of a card within 0.3 s", got
    assert 0.3 <= got["timeout_s"] < 0.3 + SLACK, got


def test_a_card_that_left_and_came_back_between_two_waits_is_not_lost(
        report: dict[str, Any]) -> None:
    got = scenario(report, "no_event_lost")
    assert got["first"]["type"] == "TimeoutError", got
    # the first wait timed out; the swap after it still ends the next one
    assert got["between"]["type"] is None, got
    assert got["between_s"] < 0.5, got


def test_no_event_is_lost_at_any_phase_of_the_slices(report: dict[str, Any]) -> None:
    got = scenario(report, "no_event_lost")
    assert len(got["during"]) == 12
    for one in got["during"]:
        assert one["error"] == {"type": None}, got["during"]
        assert one["s"] is not None and one["s"] < 1.0, got["during"]


def test_the_one_tracking_request_rule_holds(report: dict[str, Any]) -> None:
    got = scenario(report, "busy_and_monitor")
    assert got["other_pending"]["type"] == "DeviceBusyError", got
    assert "one per reader" in got["other_pending"]["message"], got
    assert got["submitted_during"]["type"] == "DeviceBusyError", got
    assert got["second_wait_during"]["type"] == "DeviceBusyError", got
    assert got["first_wait"] == {"type": None}, got


def test_with_a_monitor_attached_the_wait_follows_the_monitor(report: dict[str, Any]) -> None:
    got = scenario(report, "busy_and_monitor")
    assert got["tracked_by"] == 1
    assert got["monitored_timeout"]["type"] == "TimeoutError", got  # not busy
    assert got["monitored_wait"] == {"type": None}, got
    assert got["monitor_events"] == ["arrival"], got
    assert got["monitor_tasks_added"] == 0, got  # the waiter starts no thread
    assert got["after_monitor"] == {"type": None}, got


def test_cancel_and_close_from_another_thread_end_the_wait(report: dict[str, Any]) -> None:
    got = scenario(report, "cancel_and_close")
    for one in got["cancel"]:
        assert one["error"]["type"] == "CancelledError", got
        assert one["s"] is not None and one["s"] < 0.5, got
    assert got["after_cancel"] == {"type": None}, got
    # close does not wait out a slice: the wait ends as close begins
    assert got["closed"]["error"]["type"] == "CancelledError", got
    assert got["closed"]["s"] is not None and got["closed"]["s"] < 0.5, got
    assert got["close_s"] < 1.0, got
    assert got["after_close"]["type"] == "ClosedError", got
    assert got["sockets_after"] == got["sockets_before"], got


def test_ctrl_c_ends_a_wait_without_timeout(report: dict[str, Any]) -> None:
    got = scenario(report, "ctrl_c")
    assert got["ready"] == "READY", got
    assert got["interrupted"] == "INTERRUPTED", got
    assert got["interrupt_s"] < 0.5, got
    assert got["after"] == "AFTER TimeoutError", got  # not busy: nothing left pending
    assert got["returncode"] == 0, got


def test_a_hung_daemon_does_not_hold_the_waiter_past_its_timeout(
        report: dict[str, Any]) -> None:
    got = scenario(report, "hung_daemon")
    for where in ("main", "thread"):
        assert got[where]["type"] == "TimeoutError", got
        assert got[where]["message"] == "no sign of a card within 0.8 s", got
        # at its timeout, or the watchdog's grace (0.1 s) after it
        assert 0.8 <= got[f"{where}_s"] < 0.8 + 0.1 + SLACK, got
        assert got[f"{where}_after"] == {"type": None}, got


def test_a_wait_after_one_stuck_in_a_stopped_daemon_is_not_refused_as_busy(
        report: dict[str, Any]) -> None:
    got = scenario(report, "wait_after_a_stuck_one")
    assert got["first"]["type"] == "TimeoutError", got
    # The first request's cancel lands once the daemon resumes (0.3 s in):
    # the second wait waited for it, then found the reader empty.
    assert got["second"] == {"type": None}, got
    assert 0.3 - 0.05 < got["second_s"] < 0.3 + 1.0 + SLACK, got
    assert got["after"] == {"type": None}, got


def test_the_daemon_going_away_is_the_same_typed_error_as_on_the_lane(
        report: dict[str, Any]) -> None:
    got = scenario(report, "daemon_gone")
    assert got["inline"]["type"] == got["lane"]["type"] == "ResourceManagerNotRunningError", got
    assert got["inline_s"] is not None and got["inline_s"] < 5, got
