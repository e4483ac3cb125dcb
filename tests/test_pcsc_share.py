"""Sharing and transactions between processes through the real pcscd
(tests/pcsc_share_scenarios.py, in a private mount and network namespace):
three processes sharing one reader, an exclusive connection refused to the
others and granted once released, a transaction keeping another process's
APDUs out until it ends, a card removed inside a transaction."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import pcscd_namespace

pytestmark = [pytest.mark.pcscd]

SCENARIOS = Path(__file__).resolve().parent / "pcsc_share_scenarios.py"


@pytest.fixture(scope="module")
def report() -> dict[str, Any]:
    return pcscd_namespace.sim_scenario_report(SCENARIOS, timeout=240)


def scenario(report: dict[str, Any], name: str) -> dict[str, Any]:
    return pcscd_namespace.scenario_result(report, name)


def ok(reply: dict[str, Any]) -> dict[str, Any]:
    assert reply["ok"], reply
    return reply


def refused(reply: dict[str, Any]) -> None:
    assert not reply["ok"] and reply["error"]["type"] == "ReaderInUseError", reply
    assert "DeviceBusyError" in reply["error"]["mro"]


def test_three_processes_share_one_reader(report: dict[str, Any]) -> None:
    got = scenario(report, "three_shared")
    assert [ok(c)["share"] for c in got["connects"]] == ["shared"] * 3
    runs = [ok(r)["apdus"] for r in got["runs"]]
    for apdus in runs:
        assert len(apdus) >= 60 and all(good for _, _, good in apdus)  # each its own echo
    # Interleaved: each process's span overlaps both others', and in the
    # merged order by send time the sender changes many times.
    spans = [(a[0][0], a[-1][1]) for a in runs]
    for i, (s0, e0) in enumerate(spans):
        for j, (s1, e1) in enumerate(spans):
            if i != j:
                assert s0 < e1 and s1 < e0, spans
    merged = sorted((t0, who) for who, apdus in enumerate(runs) for t0, _, _ in apdus)
    switches = sum(1 for x, y in zip(merged, merged[1:]) if x[1] != y[1])
    assert switches >= 10, switches


def test_an_exclusive_connection_keeps_the_others_out_until_released(
        report: dict[str, Any]) -> None:
    got = scenario(report, "exclusive")
    assert ok(got["a_exclusive"])["share"] == "exclusive"
    assert all(good for _, _, good in ok(got["a_transmit"])["apdus"])
    refused(got["b_shared_refused"])
    refused(got["c_exclusive_refused"])
    ok(got["a_disconnect"])
    # Released: the others get in at once, and the same opened reader that
    # connected exclusive connects shared now.
    assert ok(got["b_shared_after"])["share"] == "shared"
    assert all(good for _, _, good in ok(got["b_transmit"])["apdus"])
    assert ok(got["a_shared_now"])["share"] == "shared"
    # Exclusive is refused while others are connected, granted once they go.
    refused(got["c_exclusive_while_shared"])
    assert ok(got["c_exclusive_granted"])["share"] == "exclusive"
    assert all(good for _, _, good in ok(got["c_transmit"])["apdus"])


def test_a_transaction_keeps_another_processes_apdus_out(report: dict[str, Any]) -> None:
    got = scenario(report, "transaction")
    assert [ok(c)["share"] for c in got["connects"]] == ["shared", "shared"]
    begun = ok(got["begin"])["t1"]
    inside = ok(got["a_inside"])["apdus"]
    ended = ok(got["end"])["t0"]
    b = ok(got["b_run"])["apdus"]
    assert all(good for _, _, good in inside) and all(good for _, _, good in b)
    # b sent its first APDU while a held the transaction (before a's own
    # APDUs inside it), and it was answered only once a's end had begun.
    assert begun < b[0][0] < inside[0][0] < ended, (begun, b[0], inside[0], ended)
    assert b[0][1] >= ended
    # No answer to b fell inside the transaction.
    assert all(t1 >= ended for _, t1, _ in b)
    assert not ok(got["a_state"])["in_transaction"]
    ok(got["b_begin"])
    ok(got["b_end"])
    # A bounded begin gives up while another client holds a transaction,
    # and the card is usable (and transactable) once that one ends.
    ok(got["a_again"])
    timed_out = got["b_begin_timeout"]
    assert not timed_out["ok"] and timed_out["error"]["type"] == "TimeoutError", timed_out
    assert 0.25 < timed_out["t1"] - timed_out["t0"] < 3
    ok(got["a_end_again"])
    assert all(good for _, _, good in ok(got["b_after_timeout"])["apdus"])
    ok(got["b_begin_after"])
    ok(got["b_end_after"])


def test_a_card_removed_inside_a_transaction_ends_it(report: dict[str, Any]) -> None:
    got = scenario(report, "removed_inside")
    ok(got["begin"])
    assert got["transmit"]["error"]["type"] == "NoCardError"
    ok(got["end"])  # the transaction ended with the card: nothing left to end
    assert not ok(got["a_state"])["in_transaction"]
    assert got["b_stale"]["error"]["type"] == "NoCardError"
    assert ok(got["b_reconnect"])["share"] == "shared"
    assert all(good for _, _, good in ok(got["b_transmit"])["apdus"])
    # Nobody holds the card: the other client's transaction is granted.
    ok(got["b_begin"])
    ok(got["b_end"])
