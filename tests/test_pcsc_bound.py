"""PC/SC calls bounded in their caller's thread: with a deadline, a call on
pcsc-lite runs without a hand-off to the device's I/O lane, and a watchdog
shuts its context's socket down at the deadline (native/pcsc/pcsc_backend.c).
The scenarios of tests/pcsc_bound_scenarios.py run against a real pcscd in
a private namespace, which they stop (SIGSTOP) to hang every call."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

import pcscd_namespace

pytestmark = [pytest.mark.pcscd,
              pytest.mark.skipif(not sys.platform.startswith("linux"),
                                 reason="pcsc-lite's client bounds calls this way on Linux")]

SCENARIOS = Path(__file__).resolve().parent / "pcsc_bound_scenarios.py"
SLACK = 0.25  # a loaded CI machine: the watchdog's wake-up and the return


@pytest.fixture(scope="module")
def report() -> dict[str, Any]:
    return pcscd_namespace.sim_scenario_report(SCENARIOS, timeout=300)


def scenario(report: dict[str, Any], name: str) -> dict[str, Any]:
    return pcscd_namespace.scenario_result(report, name)


def test_a_hung_daemon_releases_bounded_calls_at_their_deadline(report: dict[str, Any]) -> None:
    got = scenario(report, "hung_daemon")
    for call in ("ioctl", "connect"):
        assert got[call]["type"] == "TimeoutError", got[call]
        assert "no answer from the driver" in got[call]["message"], got[call]
        assert 0.3 <= got[call]["seconds"] < 0.3 + SLACK, got[call]


def test_bounded_calls_run_in_the_callers_thread(report: dict[str, Any]) -> None:
    got = scenario(report, "hung_daemon")
    # no lane thread started for either device: the calls never left their
    # caller, and each timed-out context's socket was let go at once
    assert got["tasks_hung"] == got["tasks_before"], got
    assert got["sockets_after_ioctl"] == got["sockets_before"] - 1, got
    assert got["sockets_after_connect"] == got["sockets_before"] - 2, got


def test_the_reader_works_again_once_the_daemon_answers(report: dict[str, Any]) -> None:
    got = scenario(report, "hung_daemon")
    for i in range(2):
        assert got[f"echo{i}"] == got[f"again{i}"] == "cafebabe"
        assert got[f"state{i}"] == "06000000"  # SPECIFIC
    # nothing leaked: a context (and socket) each, and none after close
    assert got["sockets_recovered"] == got["sockets_before"]
    assert got["sockets_closed"] == 0


def test_close_aborts_a_bounded_call_stuck_in_the_daemon(report: dict[str, Any]) -> None:
    got = scenario(report, "close_while_hung")
    assert got["call_returned"]
    assert got["call"]["type"] == "CancelledError", got["call"]
    assert got["call"]["seconds"] < 0.3 + SLACK  # at close, not at its 30 s deadline
    # close itself waits at most its close timeout (2 s) for the release of
    # the tracking context, which the stopped daemon does not answer
    assert got["close_seconds"] < 2.0 + SLACK


def test_the_watchdog_never_cuts_a_finished_call_short(report: dict[str, Any]) -> None:
    got = scenario(report, "many_short_bounds")
    assert got["failures"] == []
    assert got["counts"] == [1500, 1500]
    assert got["sockets_after"] == got["sockets_before"]


def test_a_context_that_cannot_be_told_apart_uses_the_lane(report: dict[str, Any]) -> None:
    got = scenario(report, "ambiguous_contexts")
    assert got["failures"] == []
    assert got["contexts_made"] > 0
    assert got["lane"] >= 1, got  # some opened while another context was being made
    assert got["lane"] + got["inline"] == 60
