"""Python cards served by ``scardio card serve`` through the real pcscd:
pcscd runs in a private mount and network namespace
(tests/pcscd_namespace.py) with three simulated readers named
``socket:PATH`` in its reader.conf; the scenarios of
tests/serve_scenarios.py run there once per module (pyscard as one client,
scardio's PC/SC backend as the other) and the tests below check what each
saw."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import pcscd_namespace

pytestmark = [pytest.mark.pcscd]

HERE = Path(__file__).resolve().parent
SCENARIOS = HERE / "serve_scenarios.py"
ATR_T1 = "3bf81300008131fe457363617264696f31b0"
SCARD_E_NO_SMARTCARD = 0x8010000C
SCARD_E_NOT_TRANSACTED = 0x80100016



@pytest.fixture(scope="module")
def report() -> dict[str, Any]:
    return pcscd_namespace.sim_scenario_report(SCENARIOS, pcscd_namespace.system_pyscard(), timeout=300)


def scenario(report: dict[str, Any], name: str) -> dict[str, Any]:
    return pcscd_namespace.scenario_result(report, name, missing="pyscard is missing")


def test_pcscd_lists_the_socket_readers(report):
    assert scenario(report, "listing")["names"] == [
        "Python card A 00 00", "Python card T0 01 00", "Hostile server 02 00"]


def test_pyscard_reaches_the_python_cards(report):
    got = scenario(report, "pyscard_answers")
    a = got["a"]
    assert a["connect"] == 0 and a["protocol"] == 2 and a["atr"] == ATR_T1
    codes = [x[0] for x in a["answers"]]
    data = [x[1] for x in a["answers"]]
    assert codes == [0] * 7
    assert data[:5] == ["000000019000", "000000029000", "cafebabe9000", "6f00",
                        "000000039000"]
    assert data[5] == ""  # a malformed answer: no status word
    assert data[6] == "000000049000"  # and the card still answers
    b = got["b"]
    assert b["protocol"] == 1  # T=0: the reader frames 61xx, GET RESPONSE
    assert [x[1] for x in b["answers"]] == ["6108", "00010203040506079000"]


def test_scardio_pcsc_backend_reaches_the_python_cards(report):
    got = scenario(report, "scardio_answers")
    assert got["atr"] == ATR_T1 and got["protocol"] == 2
    assert int(got["count"], 16) >= 1 and got["echo"] == "cafebabe"
    assert got["raised"] == 0x6F00
    assert got["malformed"] == "DriverDataError"
    assert int(got["after"], 16) == int(got["count"], 16) + 1
    assert got["t0"] == {"protocol": 1, "data": "0001020304050607"}


def test_server_stop_and_restart_are_removal_and_arrival(report):
    got = scenario(report, "restart_seen")
    assert got["initial"] == "arrival"
    assert got["departure"][0] == "departure" and got["departure"][1] < 5
    assert got["arrival"][0] == "arrival" and got["arrival"][1] < 5
    if "pyscard_events" in got:
        assert got["pyscard_ready"]["present"]
        assert got["pyscard_events"] == [{"present": False}, {"present": True}]
        assert got["after_restart"]["answers"][0][:2] == [0, "000000019000"]


def test_hostile_servers_give_errors_and_pcscd_keeps_running(report):
    got = scenario(report, "hostile")
    hang = got["hang"]["pyscard"]["answers"]
    assert hang[0][0] == SCARD_E_NOT_TRANSACTED and hang[0][2] < 3  # timeout=300 ms
    drop = got["drop"]["pyscard"]["answers"]
    assert drop[0][0] == SCARD_E_NO_SMARTCARD  # the card left mid-APDU
    for mode in ("oversize", "wrongtype"):
        assert got[mode]["pyscard"]["answers"][0][0] == SCARD_E_NOT_TRANSACTED, mode
    for mode in ("hang", "drop", "oversize", "wrongtype"):
        assert got[mode]["pcscd_alive"] and got[mode]["other_reader"] == 0, mode
    assert got["badhello_state"] == "ABSENT" and got["pcscd_alive"]


def test_pcscd_leaks_no_descriptor_or_thread(report):
    got = scenario(report, "leaks")
    assert got["after"] == got["before"]
