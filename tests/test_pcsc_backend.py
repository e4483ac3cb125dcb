"""The PC/SC backend against the real pcscd: pcscd runs in a private mount
and network namespace (tests/pcscd_namespace.py) serving the simulated
reader and Debian's vpcd (with tests/vpcd_card.py as its card); the
scenarios of tests/pcsc_scenarios.py run there once per module, each
reported separately, and the tests below check what each one saw."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from scardio.sim import ATR_T0, ATR_T1

import pcscd_namespace

pytestmark = [pytest.mark.pcscd]

HERE = Path(__file__).resolve().parent
SCENARIOS = HERE / "pcsc_scenarios.py"
VPCD_LIBRARY = "/usr/lib/pcsc/drivers/serial/libifdvpcd.so"



@pytest.fixture(scope="module")
def report() -> dict[str, Any]:
    vpcd = VPCD_LIBRARY if os.path.exists(VPCD_LIBRARY) else ""
    return pcscd_namespace.sim_scenario_report(
        SCENARIOS, vpcd, pcscd_namespace.system_pyscard(), timeout=240)


def scenario(report: dict[str, Any], name: str) -> dict[str, Any]:
    return pcscd_namespace.scenario_result(report, name, missing="a prerequisite is missing")


def test_lists_the_resource_managers_readers(report: dict[str, Any]) -> None:
    got = scenario(report, "listing")
    assert got["names"][0] == "scardio sim 00 00"
    if os.path.exists(VPCD_LIBRARY):
        assert "Virtual PCD 00 00" in got["names"]
    assert got["missing"]["type"] == "ReaderNotFoundError" and got["missing_is_lookup"]
    assert got["missing_candidates"] == got["names"]
    assert "no such reader" in got["missing"]["message"]


def test_bad_input_gets_typed_errors(report: dict[str, Any]) -> None:
    got = scenario(report, "bad_input")
    assert got["empty_name"]["type"] == "InvalidParameterError"
    assert got["long_name"]["type"] == "InvalidParameterError"
    assert got["nul_name"]["type"] == "ValueError" and "NUL" in got["nul_name"]["message"]
    assert got["bytes_name"]["type"] == "TypeError"
    assert got["share"]["type"] == "ValueError"
    assert got["short_transmit"]["type"] == "InvalidParameterError"
    assert got["power_action"]["type"] == "InvalidParameterError"
    assert got["power_short"]["type"] == "InvalidParameterError"
    assert got["unknown_code"]["type"] == "InvalidRequestError"
    assert got["state_no_room"]["type"] == "BufferTooSmallError"
    assert got["transmit_no_card"]["type"] == "NoCardError"
    assert got["after_close"]["type"] == "ClosedError"


def test_sim_control_reaches_the_driver_through_scardcontrol(report: dict[str, Any]) -> None:
    got = scenario(report, "sim_control")
    assert got["empty"] and got["present"] and got["gone"] and got["sim_present"]
    assert got["name"] == "scardio sim 00 00"
    # Start-up's attributes came through SCardGetAttrib on a direct connection.
    attrs = got["attributes"]
    assert (attrs["vendor_name"], attrs["ifd_type"]) == ("scardio", "Simulated Reader")


def test_connect_transmit_and_every_disposition(report: dict[str, Any]) -> None:
    got = scenario(report, "dispositions")
    first = got["first"]
    assert first["atr"] == ATR_T1.hex() and first["protocol"] == 2
    # The resource manager powers the card and negotiates when we connect.
    assert first["actions"][:3] == ["SWALLOWED", "COLD_RESET", "SPECIFIC"]
    assert first["state"] == "SPECIFIC" and got["echo"] == "cafebabe"
    # LEAVE: still powered; a reconnect reuses it without a reset.
    leave = got["leave"]
    assert leave["powered"] and leave["power_downs"] == 0
    assert leave["reconnect_power_ups"] == 0 and leave["reconnect_resets"] == 0
    assert leave["reconnect_actions"][0] == "SPECIFIC"
    # RESET: a warm reset through SCardReconnect.
    assert got["reset"]["resets"] == 1 and got["reset"]["powered"]
    # UNPOWER: SCardDisconnect(SCARD_UNPOWER_CARD); the card reads SWALLOWED.
    assert got["unpower"]["power_downs"] == 1 and not got["unpower"]["powered"]
    assert got["unpower"]["state"] == "SWALLOWED"
    assert got["after_unpower"]["power_ups"] == 1 and got["after_unpower"]["echo"] == "cafebabe"
    # The power-down delay's end lets go of the card (RELEASE_CARD: LEAVE):
    # its power is pcscd's, and another client connected to it at the time
    # keeps its card (an UNPOWER would have reset it).
    timer = got["timer"]
    assert timer["pending"] and timer["fired"]
    assert timer["power_downs"] == 0 and timer["resets"] == 0
    assert timer["other_echo"] == {"type": None}
    assert timer["state"] == "SWALLOWED"
    # A card removed under a connection: the no-card errors.
    assert got["removed"]["type"] == "NoCardError"
    assert got["connect_empty"]["type"] == "NoCardError"


def test_get_response_on_a_t0_card(report: dict[str, Any]) -> None:
    got = scenario(report, "t0_get_response")
    assert got["atr"] == ATR_T0.hex() and got["protocol"] == 1
    assert got["auto"] == ["cafebabe", 0x9000]
    assert got["raw"] == ["", 0x6104]
    assert got["by_hand"] == ["cafebabe", 0x9000]
    assert got["t1_only"]["type"] == "NotSupportedError"


def test_monitor_sees_arrival_removal_and_a_swap(report: dict[str, Any]) -> None:
    got = scenario(report, "tracking")
    assert got["monitor"] == [True, False] * 3
    assert got["monitor_departures"] == [False, True] * 3
    assert got["swap"] == [True, True]
    assert 0.2 < got["wait_for_card_s"] < 3
    assert got["wait_timeout"]["type"] == "TimeoutError"


def test_a_pending_wait_is_cancelled_promptly(report: dict[str, Any]) -> None:
    got = scenario(report, "cancel")
    for ms, kind in got["cancel_ms"]:
        assert kind == "CancelledError"
        assert ms < 500, got["cancel_ms"]  # SCardCancel, not the wait's 1 s slice
    assert got["busy"]["type"] == "DeviceBusyError"
    assert got["close_ms"] < 1000
    assert got["pending_after_close"]["type"] == "CancelledError"


def test_asyncio_and_tracing_run_over_it(report: dict[str, Any]) -> None:
    got = scenario(report, "asyncio_and_trace")
    assert got["async"] == ["cafebabe", 0x9000]
    assert {"GET_STATE", "POWER", "SET_PROTOCOL", "TRANSMIT",
            "IS_PRESENT"} <= set(got["traced"])


def test_a_card_on_vpcd_through_pcscd(report: dict[str, Any]) -> None:
    got = scenario(report, "vpcd_card")
    assert got["name"] == "Virtual PCD 00 00"
    assert got["select"] == 0x9000 and got["echo"] == ["cafebabe", 0x9000]


def test_an_exclusive_connection_elsewhere_is_reader_in_use(report: dict[str, Any]) -> None:
    got = scenario(report, "in_use")
    assert got["holder_connect"] == 0
    for key in ("connect", "open_reader", "exclusive_mine"):
        assert got[key]["type"] == "ReaderInUseError", got[key]
        assert "DeviceBusyError" in got[key]["mro"]
        assert "SHARING_VIOLATION" in got[key]["message"]
    assert got["after_release"] == 0x9000


def test_pcscd_stopping_under_a_reader_is_typed(report: dict[str, Any]) -> None:
    got = scenario(report, "vanish")
    for key in ("pending", "transmit", "state", "list", "open"):
        assert got[key]["type"] == "ResourceManagerNotRunningError", got[key]
        assert "DeviceGoneError" in got[key]["mro"]
        assert "resource manager is not running" in got[key]["message"]
    assert got["pending_s"] < 5
    assert got["close_s"] < 3
