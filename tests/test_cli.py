"""The scardio command line: every command with and without --json, in
process (cli.main) and as ``python -m scardio``; bad input and exit codes."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys

import pytest

from helpers_reader import SRC, run_cli
from platform_support import posix_signals, with_default_sigint
from scardio import cli

SIM0 = "scardio Simulated Reader 0"
SELECT_AID = "00A4040C08F07363617264696F"


@pytest.fixture(autouse=True)
def _no_env_sim(monkeypatch):
    monkeypatch.delenv("SCARDIO_SIM", raising=False)


@pytest.fixture
def conf(tmp_path):
    """An empty reader.conf directory: only simulated readers are listed."""
    d = tmp_path / "reader.conf.d"
    d.mkdir()
    return str(d)


def main(*argv):
    out, err = io.StringIO(), io.StringIO()
    rc = cli.main(list(argv), stdout=out, stderr=err)
    return rc, out.getvalue(), err.getvalue()


# -- list ---------------------------------------------------------------------

def test_list(conf):
    rc, out, _ = main("--reader-conf", conf, "--sim", "2", "list")
    assert rc == 0
    assert out.splitlines() == [f"0: {SIM0}  (sim: sim:0, lun 0)",
                                "1: scardio Simulated Reader 1  (sim: sim:1, lun 1)"]
    rc, out, _ = main("--reader-conf", conf, "list", "--sim", "1", "--json")
    assert rc == 0
    data = json.loads(out)
    assert [d["name"] for d in data] == [SIM0] and data[0]["index"] == 0


def test_list_empty_and_env(conf, monkeypatch):
    rc, out, _ = main("--reader-conf", conf, "list")
    assert rc == 0 and "no readers" in out
    monkeypatch.setenv("SCARDIO_SIM", "1")
    rc, out, _ = main("--reader-conf", conf, "--json", "list")
    assert [d["name"] for d in json.loads(out)] == [SIM0]


# -- info -----------------------------------------------------------------------

def test_info(conf):
    rc, out, _ = main("--reader-conf", conf, "--sim", "1", "info", "0")
    assert rc == 0
    assert "Vendor:          scardio" in out and "Card state:      ABSENT" in out
    rc, out, _ = main("--reader-conf", conf, "--sim", "1", "--insert", "--json", "info", SIM0)
    d = json.loads(out)
    assert d["name"] == SIM0 and d["state"] == "SWALLOWED"
    assert d["attributes"]["ifd_type"] == "Simulated Reader"


# -- connect --------------------------------------------------------------------

def test_connect(conf):
    rc, out, _ = main("--reader-conf", conf, "--sim", "1", "--insert", "connect", "sim")
    assert rc == 0
    assert "Protocol: T=1" in out and "3B F8 13 00" in out and "scardio1" in out
    assert "SWALLOWED -> COLD_RESET -> NEGOTIABLE -> ATR -> SET_PROTOCOL(T=1)" in out
    rc, out, _ = main("--reader-conf", conf, "--sim", "1", "connect", "0", "--insert",
                      "--card", "t0", "--json")
    d = json.loads(out)
    assert rc == 0 and d["protocol"] == "T=0" and d["atr"] == "3B6800007363617264696F30"
    assert d["atr_protocols"] == ["T=0"] and d["connect_ms"] >= 0


@pytest.mark.parametrize("card", ["t0", "t1"])
def test_connect_prints_the_atr_once(conf, card):
    p = run_cli("--reader-conf", conf, "--sim", "1", "--insert", "--card", card,
                "connect", "0")
    assert p.returncode == 0, p.stderr
    from scardio.sim import ATR_T0, ATR_T1
    atr = (ATR_T0 if card == "t0" else ATR_T1).hex(" ").upper()
    assert p.stdout.count(atr) == 1, p.stdout
    assert f"ATR:      {atr} ({len(atr.split())} bytes)\n" in p.stdout
    assert "TS  = 0x3B: direct convention" in p.stdout  # the decoded lines follow


def test_connect_without_card_is_exit_3(conf):
    rc, out, err = main("--reader-conf", conf, "--sim", "1", "connect", "0")
    assert rc == cli.EXIT_NO_CARD == 3 and "no card" in err
    rc, out, err = main("--reader-conf", conf, "--sim", "1", "--json", "connect", "0",
                        "--wait", "0.1")
    assert rc == 3 and json.loads(err)["error"] == "no card"


def test_connect_protocol_not_supported_is_exit_1(conf):
    rc, _, err = main("--reader-conf", conf, "--sim", "1", "--insert", "connect", "0",
                      "--protocol", "t0")
    assert rc == 1 and "does not support" in err


# -- apdu -----------------------------------------------------------------------

def test_apdu(conf):
    rc, out, _ = main("--reader-conf", conf, "--sim", "1", "--insert", "apdu", "0",
                      SELECT_AID, "00A4000C020101", "00B0000004")
    assert rc == 0
    lines = out.splitlines()
    assert lines[1] == "> 00 A4 04 0C 08 F0 73 63 61 72 64 69 6F"
    assert lines[2].startswith("< SW=9000")
    assert lines[-1].startswith("< 00 01 02 03 SW=9000")
    rc, out, _ = main("--reader-conf", conf, "--sim", "1", "--insert", "--card", "t0",
                      "--json", "apdu", "0", "80EE000004CAFEBABE04")
    d = json.loads(out)
    assert d["responses"][0]["data"] == "CAFEBABE" and d["responses"][0]["sw"] == "9000"
    rc, out, _ = main("--reader-conf", conf, "--sim", "1", "--insert", "--card", "t0",
                      "--json", "apdu", "0", "80EE000004CAFEBABE04", "--no-get-response")
    assert json.loads(out)["responses"][0]["sw"] == "6104"


@pytest.mark.parametrize("apdu, message", [
    ("00A4zz", "invalid character 'z'"),
    ("00A", "odd number"),
    ("00A4", "too short"),
    ("80" + "00" * 70000, "too long"),
])
def test_apdu_bad_input_is_exit_2(conf, apdu, message):
    rc, out, err = main("--reader-conf", conf, "--sim", "1", "--insert", "apdu", "0", apdu)
    assert rc == cli.EXIT_USAGE == 2 and message in err


@pytest.mark.parametrize("apdus, message", [
    (["00A404"], "too short"),
    (["00A4040008F073"], "Lc is 8 but 2 byte(s) follow it"),
    (["00A4040C0001"], "extended length field truncated"),
    ([SELECT_AID, "00B0"], "APDU 2: APDU of 2 byte(s) is too short"),
    (["--protocol", "t0", "80EE0000000400"], "extended APDUs need T=1"),
    (["--protocol", "raw", ""], "no hex digits"),
])
def test_bad_apdus_are_refused_before_any_ioctl(conf, apdus, message):
    """Structure and the protocol's limits are checked before the reader is
    opened: the trace shows no IOCTL at all (no start-up, no power-up)."""
    p = run_cli("--reader-conf", conf, "--sim", "1", "--insert", "--json", "--trace",
                "apdu", "0", *apdus)
    assert p.returncode == 2, p.stderr
    lines = p.stderr.splitlines()
    assert not [ln for ln in lines if ln.startswith('{"trace"')], p.stderr
    assert len(lines) == 1 and message in json.loads(lines[0])["message"]
    assert p.stdout == ""


def test_apdu_raw_protocol_skips_the_iso_structure_check(conf):
    rc, out, err = main("--reader-conf", conf, "--sim", "1", "--insert", "--trace", "apdu",
                        "0", "--protocol", "raw", "00A404")
    # past the checks: connected (the simulated card has no RAW protocol)
    assert rc == 1 and "POWER" in err and "does not support" in err


def test_apdu_extended_on_t0_is_exit_2(conf):
    rc, _, err = main("--reader-conf", conf, "--sim", "1", "--insert", "--card", "t0",
                      "--json", "apdu", "0", "80EE0000000400")
    assert rc == 2 and "extended APDUs need T=1" in json.loads(err)["message"]


def test_unknown_reader_is_exit_4(conf):
    for cmd in (["info", "nosuch"], ["connect", "nosuch"], ["apdu", "7", "00A40000"],
                ["monitor", "nosuch", "--timeout", "0.1"]):
        rc, _, err = main("--reader-conf", conf, "--sim", "1", *cmd)
        assert rc == cli.EXIT_NOT_FOUND == 4, cmd
        assert "reader not found" in err


def test_insert_on_a_non_sim_reader_is_exit_2(tmp_path):
    d = tmp_path / "rc"
    d.mkdir()
    (d / "x").write_text('FRIENDLYNAME "Other"\nDEVICENAME /dev/null:0x1\n'
                         f"LIBPATH {sys.executable}\n")
    rc, _, err = main("--reader-conf", str(d), "--insert", "info", "Other")
    assert rc == 2 and "simulated readers only" in err


def test_usage_errors_are_exit_2():
    assert main()[0] == 2
    assert main("frobnicate")[0] == 2
    assert main("--sim", "x", "list")[0] == 2
    assert main("--sim", "-1", "list")[0] == 2
    assert main("monitor", "--count", "many")[0] == 2
    assert main("--help")[0] == 0


# -- monitor --------------------------------------------------------------------

def test_monitor_count_and_timeout(conf):
    rc, out, _ = main("--reader-conf", conf, "--sim", "2", "--insert", "monitor",
                      "--count", "2", "--timeout", "5")
    assert rc == 0
    lines = [ln for ln in out.splitlines() if "arrival" in ln]
    assert len(lines) == 2 and "ms  arrival" in lines[0]
    rc, out, _ = main("--reader-conf", conf, "--sim", "1", "--json", "monitor", "0",
                      "--timeout", "0.2")
    assert rc == 0 and out == ""
    rc, out, _ = main("--reader-conf", conf, "--sim", "1", "--insert", "--json", "monitor",
                      SIM0, "--count", "1", "--timeout", "5")
    ev = json.loads(out.splitlines()[0])
    assert ev["event"] == "arrival" and ev["reader"] == SIM0 and ev["t_ms"] >= 0


# -- demo -----------------------------------------------------------------------

def test_demo_text():
    rc, out, _ = main("demo")
    assert rc == 0
    for needle in ("start-up: reader named", "monitor: card arrival", "connected",
                   "APDU READ BINARY", "power-down timer started (0.5 s)",
                   "new_power_ups=0, new_resets=0", "reader: power_down  reason=timer",
                   "monitor: card departure", "done  power_ups=1, resets=0, power_downs=1"):
        assert needle in out, needle


def test_demo_timeline_puts_causes_before_effects():
    for _ in range(5):
        rc, out, _ = main("demo", "--delay", "0.01")
        assert rc == 0
        lines = [ln.split("ms  ", 1)[1] for ln in out.splitlines()]
        assert lines.index("sim: card inserted  card=T=1") < lines.index("monitor: card arrival")
        assert lines.index("sim: card removed") < lines.index("monitor: card departure")


def test_demo_delay_zero_powers_down_at_once():
    p = run_cli("demo", "--delay", "0", timeout=20)
    assert p.returncode == 0, p.stderr
    out = p.stdout
    assert "powered down at once" in out and "the card was powered down, so it was reset" in out
    assert out.count("reader: power_down  reason=timer") == 2
    assert "done  power_ups=2, resets=0, power_downs=2" in out
    rc, out, err = main("--json", "demo", "--delay", "0")
    assert rc == 0, err
    events = [e["event"] for e in json.loads(out)["timeline"]]
    assert "done" in events and events.count("reader: power_down") == 3  # 2 + at close


def test_demo_json_and_trace():
    rc, out, err = main("--json", "--trace", "demo", "--delay", "0.1", "--card", "t0")
    assert rc == 0
    doc = json.loads(out)
    events = [e["event"] for e in doc["timeline"]]
    assert events[0].startswith("start-up") and events[-1] == "reader: close"
    assert "done" in events
    times = [e["t_ms"] for e in doc["timeline"]]
    assert times == sorted(times)
    pd = next(e for e in doc["timeline"] if e["event"] == "reader: power_down")
    assert pd["reason"] == "timer"
    traces = [json.loads(ln)["trace"] for ln in err.splitlines() if ln.startswith('{"trace"')]
    names = {t["ioctl"] for t in traces}
    assert {"GET_ATTRIBUTE", "GET_STATE", "POWER", "SET_PROTOCOL", "TRANSMIT",
            "IS_PRESENT", "IS_ABSENT"} <= names
    assert all("duration_us" in t and "status" in t for t in traces)


def test_trace_text(conf):
    rc, out, err = main("--reader-conf", conf, "--sim", "1", "--insert", "--trace", "apdu",
                        "0", SELECT_AID)
    assert rc == 0
    tx = [ln for ln in err.splitlines() if "TRANSMIT" in ln]
    assert tx and "SUCCESS" in tx[0] and " us" in tx[0] and "in=020000000800000000A4" in tx[0]


# -- as a program ---------------------------------------------------------------

def test_python_m_scardio(conf):
    p = run_cli("--reader-conf", conf, "--sim", "1", "--json", "list")
    assert p.returncode == 0 and json.loads(p.stdout)[0]["name"] == SIM0
    p = run_cli("--reader-conf", conf, "--sim", "1", "--insert", "apdu", "0", SELECT_AID)
    assert p.returncode == 0 and "SW=9000" in p.stdout
    p = run_cli("--reader-conf", conf, "--sim", "1", "connect", "0")
    assert p.returncode == 3
    p = run_cli("--reader-conf", conf, "--sim", "1", "info", "nope")
    assert p.returncode == 4
    p = run_cli("--reader-conf", conf, "--sim", "1", "apdu", "0", "zz")
    assert p.returncode == 2
    p = run_cli("demo", "--delay", "0.05")
    assert p.returncode == 0 and "monitor: card departure" in p.stdout


@posix_signals
def test_ctrl_c_is_exit_130(conf):
    env = dict(os.environ, PYTHONPATH=SRC)
    p = subprocess.Popen(with_default_sigint([sys.executable, "-m", "scardio", "--reader-conf",
                                              conf, "--sim", "1", "monitor"]),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, env=env)
    try:
        assert "monitoring 1 reader" in p.stdout.readline()
        p.send_signal(signal.SIGINT)
        rc = p.wait(timeout=10)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(5)
    assert rc == cli.EXIT_INTERRUPTED == 130
    assert "interrupted" in p.stderr.read()


@pytest.mark.parametrize("argv", [
    ["--reader-conf", "/nonexistent/reader.conf", "list"],
    ["monitor", "--timeout", "-1"],
    ["monitor", "--timeout", "nan"],
    ["monitor", "--count", "-3"],
    ["--sim", "-1", "list"],
    ["--power-down-timeout", "inf", "list"],
    ["demo", "--delay", "x"],
])
def test_bad_option_values_are_usage_errors(argv, capsys):
    from scardio import cli
    assert cli.main(argv) == 2
    assert "scardio" in capsys.readouterr().err


# -- trace names and card states ------------------------------------------------

def test_trace_names_tags_operations_masks_and_states(conf):
    p = run_cli("--reader-conf", conf, "--sim", "1", "--insert", "--trace", "connect", "0")
    assert p.returncode == 0, p.stderr
    lines = [ln.split("] ", 1)[1] for ln in p.stderr.splitlines() if ln.startswith("[trace")]
    for expected in ("GET_ATTRIBUTE  VENDOR_NAME out=7363617264696F SUCCESS",
                     "GET_ATTRIBUTE  DEVICE_UNIT out=00000000 SUCCESS",
                     "GET_STATE      in=- out=SWALLOWED SUCCESS",
                     "POWER          COLD_RESET out=3BF8",
                     "GET_STATE      in=- out=NEGOTIABLE SUCCESS",
                     "GET_ATTRIBUTE  ATR_STRING out=3BF8",
                     "SET_PROTOCOL   T0|T1 out=T1 SUCCESS",
                     "POWER          POWER_DOWN out=(empty) SUCCESS"):
        assert any(ln.startswith(expected) for ln in lines), (expected, lines)
    assert not [ln for ln in lines if ln.startswith("GET_ATTRIBUTE  in=")]


def test_json_trace_keeps_the_raw_hex_next_to_the_names(conf):
    rc, _, err = main("--reader-conf", conf, "--sim", "1", "--insert", "--json", "--trace",
                      "connect", "0", "--protocol", "t1")
    assert rc == 0
    traces = [json.loads(ln)["trace"] for ln in err.splitlines() if ln.startswith('{"trace"')]
    by_name = {}
    for t in traces:
        by_name.setdefault(t["ioctl"], []).append(t)
    vendor = by_name["GET_ATTRIBUTE"][0]
    assert vendor["input"] == "00010100" and vendor["decoded"] == {"attribute": "VENDOR_NAME"}
    power = by_name["POWER"][0]
    assert power["input"] == "01000000" and power["decoded"] == {"operation": "COLD_RESET"}
    sp = by_name["SET_PROTOCOL"][0]
    assert sp["input"] == "02000000" and sp["output"] == "02000000"
    assert sp["decoded"] == {"protocols": "T1", "protocol": "T1"}
    st = by_name["GET_STATE"][0]
    assert st["output"] == "03000000" and st["decoded"] == {"state": "SWALLOWED"}


def test_info_explains_the_card_state(conf):
    rc, out, _ = main("--reader-conf", conf, "--sim", "1", "info", "0")
    assert rc == 0 and "Card state:      ABSENT (no card)" in out
    rc, out, _ = main("--reader-conf", conf, "--sim", "1", "--insert", "info", "0")
    assert "Card state:      SWALLOWED (card present, not powered)" in out
    rc, out, _ = main("--reader-conf", conf, "--sim", "1", "--insert", "--json", "info", "0")
    d = json.loads(out)
    assert d["state"] == "SWALLOWED" and d["state_description"] == "card present, not powered"


@posix_signals
def test_closed_output_pipe_ends_quietly_with_141():
    """`scardio ... | head`: the reader of stdout went away before scardio
    wrote; no traceback, no 'Broken pipe' error, exit 141 as documented."""
    r, w = os.pipe()
    os.close(r)  # nobody will ever read: the first write fails with EPIPE
    try:
        proc = subprocess.run([sys.executable, "-m", "scardio", "--sim", "2", "list"],
                              stdout=w, stderr=subprocess.PIPE, text=True, timeout=60)
    finally:
        os.close(w)
    assert proc.returncode == cli.EXIT_PIPE_CLOSED == 141
    assert proc.stderr == ""
