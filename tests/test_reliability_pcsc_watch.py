"""The PC/SC reader-list watch under fork() and Ctrl-C, against a real
pcscd in a private namespace (the scenarios: tests/pcsc_watch_scenarios.py).

Both were defects of the classes issue 11 names: the watch was the one
binding object without a fork generation (a child's wait and wake ran
through the parent's resource-manager context, whose socket the two
processes then share, and its close sent that context's release), and its
wait(None) the one wait of the binding made in a single call into C
(Ctrl-C was never seen: the process hung)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import pcscd_namespace

pytestmark = [pytest.mark.pcscd]

SCENARIOS = Path(__file__).resolve().parent / "pcsc_watch_scenarios.py"


@pytest.fixture(scope="module")
def report() -> dict[str, Any]:
    return pcscd_namespace.sim_scenario_report(SCENARIOS, timeout=120)


def scenario(report: dict[str, Any], name: str) -> dict[str, Any]:
    return pcscd_namespace.scenario_result(report, name)


def test_a_watch_inherited_through_fork_is_refused_and_leaves_the_parent_alone(
        report: dict[str, Any]) -> None:
    got = scenario(report, "fork")
    assert got["parent_before"] is None, got          # a wait with no change: None
    assert got["child_exit"] == 0, got                # wait and wake: InvalidStateError
    # the child's close sent nothing through the parent's context
    assert got["parent_after"] == {"type": None} and got["parent_after_got"] is None, got
    assert 0.4 <= got["parent_after_s"] < 3.0, got


def test_ctrl_c_ends_a_watch_wait_without_timeout(report: dict[str, Any]) -> None:
    got = scenario(report, "sigint")
    assert got["ready"] == "WAITING", got
    assert got["exit"] == 3 and got["output"] == "INTERRUPTED", got
    assert got["seconds"] < 2.5, got                  # one slice (1 s) and slack
