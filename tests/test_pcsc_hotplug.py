"""Reader hotplug against the real pcscd: USB readers plugged into and out
of a running pcscd through its own libudev hotplug (tests/usb_hotplug.py
says how, and why not reader.conf), inside a private mount and network
namespace.  The scenarios of tests/pcsc_hotplug_scenarios.py run there once
per module; the tests below check what each one saw."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import pcscd_namespace
import usb_hotplug

pytestmark = [pytest.mark.pcscd]

SCENARIOS = Path(__file__).resolve().parent / "pcsc_hotplug_scenarios.py"


@pytest.fixture(scope="module")
def report() -> dict[str, Any]:
    return pcscd_namespace.sim_scenario_report(SCENARIOS, timeout=240,
                                               also_needed=usb_hotplug.unavailable)


def scenario(report: dict[str, Any], name: str) -> dict[str, Any]:
    return pcscd_namespace.scenario_result(
        report, name, context=f"\npcscd log: {report.get('pcscd_log_tail')}")


def test_the_pnp_watch_wakes_on_a_new_reader_and_on_wake(report: dict[str, Any]) -> None:
    got = scenario(report, "watch")
    assert got["plugged"] in got["after"] and got["plugged"] not in got["before"]
    assert got["count"] is not None  # a change, not a timeout
    assert got["latency_s"] < 3
    assert got["woken"] is None and got["wake_s"] < 0.5
    assert got["closed_wait"]["type"] == "ClosedError"


def test_a_monitor_sees_a_second_reader_come_and_go(report: dict[str, Any]) -> None:
    got = scenario(report, "monitor")
    assert got["start"] == ["scardio sim 00 00"]
    assert got["added"] == got["plugged"] == got["arrival"] == got["removed"]
    assert got["tracked"] == sorted(["scardio sim 00 00", got["plugged"]])
    # Exactly these, in order: no departure invented for the card that was
    # in, no error for the tracking request the unplug ended.
    assert got["kinds"] == ["reader-added", "arrival", "reader-removed"]
    assert got["after"] == ["scardio sim 00 00"] and got["reader_closed"]
    assert got["again"] == got["plugged"]
    assert got["added_s"] < 3 and got["removed_s"] < 3


def test_a_reader_that_vanishes_mid_call_gives_typed_errors(report: dict[str, Any]) -> None:
    got = scenario(report, "vanish")
    assert got["before"] == 0x9000
    for key in ("pending", "card_wait", "transmit", "state", "connect"):
        assert got[key]["type"] == "DeviceGoneError", (key, got[key])
        assert "DEVICE_NOT_CONNECTED" in got[key]["message"]
    assert got["open_gone"]["type"] == "ReaderNotFoundError"
    assert got["pending_s"] < 3 and got["calls_s"] < 3 and got["close_s"] < 3
    # The Monitor's tracking of both ended with their removal, and only that.
    assert got["monitor"] == ["arrival", "reader-removed", "reader-removed"]
    assert got["monitor_readers"] == ["scardio sim 00 00"]


def test_a_reader_that_vanishes_under_a_waiting_reader_is_the_lanes_error(
        report: dict[str, Any]) -> None:
    # Reader.wait_for_card waits in its caller's thread on pcsc-lite; an
    # IS_PRESENT on the tracking lane is the reference
    got = scenario(report, "vanish_wait")
    assert got["inline"]["type"] == got["lane"]["type"] == "DeviceGoneError", got
    assert "DEVICE_NOT_CONNECTED" in got["inline"]["message"], got
    assert got["inline_s"] is not None and got["inline_s"] < 3, got


def test_scardio_scan_sees_a_reader_come_and_go(report: dict[str, Any]) -> None:
    got = scenario(report, "scan_cli")
    assert got["rc"] == 0, got["stderr"]
    assert got["first"].startswith("scanning 1 reader(s)"), got["lines"]
    name = got["plugged"]
    assert [list(e) for e in got["events"]] == [["reader-added", name], ["arrival", name],
                                               ["reader-removed", name]]
