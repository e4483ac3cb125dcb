"""scardio scan (pcsc_scan-like) and scardio atr (offline ATR analysis), run
as a user runs them (a subprocess on simulated readers), and the probe
that reads an arriving card's ATR without connecting to it."""

from __future__ import annotations

import datetime
import io
import json
import re
import threading
import time

import pytest

from helpers_reader import VPCD_LIBRARY, free_port_pair, require_vpcd, run_cli, sim_reader
from scardio import State, atr_list, cli, errors
from scardio.probe import probe_atr, probe_atr_steps
from scardio.reader import run_sync
from scardio.sim import ATR_T0, ATR_T1
from scripted_device import ScriptedDevice

SIM0 = "scardio Simulated Reader 0"
SIM1 = "scardio Simulated Reader 1"
T1_HEX = ATR_T1.hex(" ").upper()
T0_HEX = ATR_T0.hex(" ").upper()
# Our own list in pcsc-tools' format.
FIXTURE = (f"# test list\n{T1_HEX}\n\tscardio T=1 test card\n\tsecond line\n"
           "3B 68 00 00 73 63 61 72 64 69 6F 3.\n\tscardio T=0 test card\n"
           "3B 80 80 01 ..\n\ta T=1 ATR, any check byte\n")
TIME = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d"


@pytest.fixture
def conf(tmp_path):
    d = tmp_path / "reader.conf.d"
    d.mkdir()
    return str(d)


@pytest.fixture
def card_list(tmp_path):
    path = tmp_path / "cards.txt"
    path.write_text(FIXTURE)
    return str(path)


def events(stdout):
    return [ln for ln in stdout.splitlines() if re.match(TIME, ln)]


# -- the probe -------------------------------------------------------------------

def test_probe_powers_an_unpowered_card_up_and_down_again():
    with sim_reader() as (reader, sim):
        with pytest.raises(errors.NoCardError):
            probe_atr(reader)
        sim.insert()
        before = reader.state()
        assert before in (State.PRESENT, State.SWALLOWED)
        p = probe_atr(reader)
        assert p.atr == ATR_T1 and p.state == before and p.powered_up
        assert p.actions[-2:] == ["COLD_RESET", "POWER_DOWN"]
        c = sim.counters()
        assert (c.power_ups, c.power_downs, c.powered) == (1, 1, False)
        assert reader.state() == State.SWALLOWED  # unpowered, as found


def test_probe_reads_a_reset_card_without_touching_it():
    with sim_reader() as (reader, sim):
        sim.insert(t0=True)
        reader.connect(timeout=5).disconnect()  # LEAVE: powered, timer running
        assert reader.power_down_pending
        before = sim.counters()
        p = probe_atr(reader)
        assert p.atr == ATR_T0 and p.actions == ["SPECIFIC", "ATR"] and not p.powered_up
        after = sim.counters()
        assert (after.power_ups, after.resets, after.powered) == \
            (before.power_ups, before.resets, True)
        assert reader.state() == State.SPECIFIC and reader.power_down_pending
        with reader.connect(timeout=5) as card:
            assert probe_atr(reader).actions == ["CONNECTED"]
            assert card.transmit("00A4040C08F07363617264696F").ok


def test_probe_a_powered_card_keeps_it_powered():
    # POWERED (never reset by this host) is a state an IFD handler does not
    # report: a scripted device stands in for a driver that does.
    dev = ScriptedDevice([State.POWERED], atr=ATR_T1, atr_before_reset=False)
    p = run_sync(dev, probe_atr_steps())
    # no ATR before a reset: a warm reset gives it, and the card stays powered
    assert p.atr == ATR_T1 and p.actions == ["POWERED", "WARM_RESET"]
    assert dev.calls == ["GET_STATE", "GET_ATTRIBUTE(ATR_STRING)", "POWER(WARM_RESET)"]


def test_probe_a_present_card_swallows_and_powers_it_down_again():
    dev = ScriptedDevice([State.PRESENT], atr=ATR_T1)
    p = run_sync(dev, probe_atr_steps())
    assert p.atr == ATR_T1 and p.powered_up
    assert dev.calls == ["GET_STATE", "SWALLOW", "POWER(COLD_RESET)", "POWER(POWER_DOWN)"]


def test_probe_a_custom_atr():
    with sim_reader() as (reader, sim):
        sim.insert(bytes.fromhex("3B021450"))
        assert probe_atr(reader).atr == bytes.fromhex("3B021450")


# -- scan --------------------------------------------------------------------------

def test_scan_arrivals_and_removals(conf, card_list):
    p = run_cli("--reader-conf", conf, "--sim", "1", "scan", "--sim-toggle", "1",
                "--count", "4", "--timeout", "20", "--atr-list", card_list)
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith(f"scanning 1 reader(s) for 20.0 s; card list: {card_list}")
    evs = events(p.stdout)
    assert [ln.split("  ")[1].strip() for ln in evs] == ["arrival", "departure"] * 2
    assert all(ln.endswith(SIM0) for ln in evs)
    first = datetime.datetime.fromisoformat(evs[0][:29])
    assert abs((datetime.datetime.now().astimezone() - first).total_seconds()) < 60
    assert p.stdout.count(f"    ATR: {T1_HEX} (18 bytes)") == 2
    assert p.stdout.count("    Protocols: T=1") == 2  # the decoded summary
    assert p.stdout.count(f"    Possibly identified card (using {card_list}):") == 2
    assert p.stdout.count("          scardio T=1 test card") == 2


def test_scan_json_lines_named_reader_and_t0(conf, card_list):
    p = run_cli("--reader-conf", conf, "--sim", "2", "--insert", "--card", "t0", "--json",
                "scan", SIM1, "--count", "1", "--timeout", "20", "--atr-list", card_list)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert len(lines) == 1
    rec = json.loads(lines[0])
    assert rec["event"] == "arrival" and rec["reader"] == SIM1 and rec["seq"] == 1
    datetime.datetime.fromisoformat(rec["time"])
    assert rec["atr"] == ATR_T0.hex().upper() and rec["atr_protocols"] == ["T=0"]
    assert rec["atr_description"][0].startswith(f"ATR: {T0_HEX}")
    assert rec["atr_list"] == card_list
    assert [m["descriptions"] for m in rec["cards"]] == [["scardio T=0 test card"]]
    assert rec["actions"][-2:] == ["COLD_RESET", "POWER_DOWN"]


def test_scan_reads_the_atr_with_the_least_it_can(conf):
    p = run_cli("--reader-conf", conf, "--sim", "1", "--insert", "--json", "--trace",
                "scan", "--count", "1", "--timeout", "20")
    assert p.returncode == 0, p.stderr
    traces = [json.loads(ln)["trace"] for ln in p.stderr.splitlines()
              if ln.startswith('{"trace"')]
    names = [t["ioctl"] for t in traces]
    assert "SET_PROTOCOL" not in names and "TRANSMIT" not in names
    first_power = names.index("POWER")
    # cold reset for the ATR, then power-down: the card is left unpowered
    assert names[first_power:].count("POWER") >= 2
    rec = json.loads(p.stdout.splitlines()[0])
    assert rec["atr"] == ATR_T1.hex().upper()


def test_scan_timeout_and_bad_options(conf, tmp_path):
    p = run_cli("--reader-conf", conf, "--sim", "1", "scan", "--timeout", "0.2")
    assert p.returncode == 0 and events(p.stdout) == [] and "scanning 1 reader" in p.stdout
    p = run_cli("--reader-conf", conf, "--sim", "1", "scan", "--sim-toggle", "0")
    assert p.returncode == 2 and "--sim-toggle" in p.stderr
    p = run_cli("--reader-conf", conf, "--sim", "1", "scan", "--atr-list",
                str(tmp_path / "missing.txt"))
    assert p.returncode == 2 and "no such ATR list file" in p.stderr
    p = run_cli("--reader-conf", conf, "scan", "--timeout", "1")
    assert p.returncode == 4 and "no readers to scan" in p.stderr
    p = run_cli("--reader-conf", conf, "--sim", "1", "scan", "nosuch", "--timeout", "1")
    assert p.returncode == 4


@pytest.mark.vpcd
def test_scan_on_vpcd(tmp_path, card_list):
    """A real driver: vpcd with the stdlib test card inserted and removed."""
    vc = require_vpcd()
    port = free_port_pair()
    d = tmp_path / "vpcd.conf.d"
    d.mkdir()
    name = "scardio scan vpcd"
    (d / "vpcd-test").write_text(f'FRIENDLYNAME "{name}"\nDEVICENAME /dev/null:0x{port:X}\n'
                                 f"LIBPATH {VPCD_LIBRARY}\nCHANNELID 0x{port:X}\n")
    card = vc.VirtualCard(port=port, connect_timeout=20)

    def plug():
        try:
            card.insert()
            time.sleep(1.0)
            card.remove()
        except Exception:
            pass
    t = threading.Thread(target=plug, daemon=True)
    t.start()
    try:
        p = run_cli("--reader-conf", str(d), "--json", "scan", name, "--count", "2",
                    "--timeout", "20", "--atr-list", card_list)
    finally:
        t.join(25)
        card.close()
    assert p.returncode == 0, p.stderr
    recs = [json.loads(ln) for ln in p.stdout.splitlines()]
    assert [r["event"] for r in recs] == ["arrival", "departure"]
    assert recs[0]["atr"] == vc.ATR_T1.hex().upper(), recs[0]
    assert recs[0]["actions"][-2:] == ["COLD_RESET", "POWER_DOWN"], recs[0]


# -- atr -----------------------------------------------------------------------------

def test_atr_decodes_and_names_the_card(card_list):
    p = run_cli("atr", ATR_T1.hex(), "--atr-list", card_list)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0] == f"ATR: {T1_HEX} (18 bytes)" and "TCK = 0xB0 (correct)" in lines
    assert lines[-4:] == [f"Possibly identified card (using {card_list}):", f"  {T1_HEX}",
                          "      scardio T=1 test card", "      second line"]
    p = run_cli("atr", *T0_HEX.split(), "--atr-list", card_list, "--json")  # spaced args
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    assert doc["atr"] == ATR_T0.hex().upper() and doc["atr_protocols"] == ["T=0"]
    assert [m["pattern"] for m in doc["cards"]] == ["3B 68 00 00 73 63 61 72 64 69 6F 3."]
    p = run_cli("atr", "3B 02 14 50", "--atr-list", card_list)
    assert p.returncode == 0 and "Card list: no entry matches" in p.stdout


@pytest.mark.parametrize("text", ["3BZZ", "3B0", "", "3B 8"])
def test_atr_malformed_hex_is_exit_2(text):
    p = run_cli("atr", text)
    assert p.returncode == 2 and "bad input" in p.stderr and p.stdout == ""


def test_atr_invalid_atr_is_exit_2_but_still_looked_up(card_list):
    p = run_cli("atr", "3B 80 80 01 00", "--atr-list", card_list)  # TCK should be 01
    assert p.returncode == 2
    assert "(not a valid ATR: TCK at offset 4 is 0x00, expected 0x01" in p.stdout
    assert "a T=1 ATR, any check byte" in p.stdout
    assert "not a valid ATR" in p.stderr
    p = run_cli("atr", "3B 80 80 01 00", "--atr-list", card_list, "--json")
    doc = json.loads(p.stdout)
    assert p.returncode == 2 and "TCK" in doc["atr_error"] and "atr_description" not in doc
    assert doc["cards"][0]["descriptions"] == ["a T=1 ATR, any check byte"]


def test_atr_without_any_list(monkeypatch):
    monkeypatch.setattr(atr_list, "DEFAULT_LOCATIONS", ())
    out, err = io.StringIO(), io.StringIO()
    assert cli.main(["atr", ATR_T1.hex()], stdout=out, stderr=err) == 0
    assert out.getvalue().splitlines()[-1].startswith("Card list: none installed")
    out = io.StringIO()
    assert cli.main(["--json", "atr", ATR_T1.hex()], stdout=out, stderr=err) == 0
    doc = json.loads(out.getvalue())
    assert doc["atr_list"] is None and doc["cards"] == []


def test_atr_uses_the_installed_list():
    path = atr_list.find_atr_list()
    if path is None:
        pytest.skip("no smartcard_list.txt installed (pcsc-tools)")
    lst = atr_list.load_atr_list(path)
    # an ATR of the installed list, read from it at run time
    with open(path, encoding="utf-8", errors="replace") as f:
        pattern = next(ln.strip() for ln in f
                       if re.fullmatch(r"3B( [0-9A-F]{2})+", ln.strip()))
    expected = [d for m in lst.match(pattern) for d in m.descriptions]
    assert expected
    p = run_cli("--json", "atr", pattern)
    assert p.returncode in (0, 2), p.stderr  # 2: the list holds some invalid ATRs
    doc = json.loads(p.stdout)
    assert doc["atr_list"] == path
    assert [d for m in doc["cards"] for d in m["descriptions"]] == expected
