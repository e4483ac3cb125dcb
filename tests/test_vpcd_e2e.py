"""End to end on Debian's vpcd driver with the stdlib test card
(tests/vpcd_card.py): discovery through a private reader.conf, start-up
with the driver's missing attributes, connect, APDUs, power-down, monitor,
and the CLI in a subprocess.  Skips when vpcd or the test card is missing.
"""

from __future__ import annotations

import json
import threading
import time

import pytest

from helpers_reader import VPCD_LIBRARY, Recorder, free_port_pair, require_vpcd, run_cli

pytestmark = pytest.mark.vpcd

NAME = "scardio test vpcd"
SELECT_AID = "00 A4 04 0C 08 F07363617264696F"


@pytest.fixture
def vc():
    return require_vpcd()


@pytest.fixture
def conf(tmp_path, vc):
    """(reader.conf directory, port) for a vpcd reader on a private port."""
    port = free_port_pair()
    d = tmp_path / "reader.conf.d"
    d.mkdir()
    (d / "vpcd-test").write_text(f'FRIENDLYNAME "{NAME}"\nDEVICENAME /dev/null:0x{port:X}\n'
                                 f"LIBPATH {VPCD_LIBRARY}\nCHANNELID 0x{port:X}\n")
    return str(d), port


def test_list_shows_the_reader(conf):
    from scardio import list_readers
    d, port = conf
    readers = list_readers(reader_conf_dirs=[d])
    mine = [r for r in readers if r.name == NAME]
    assert len(mine) == 1 and mine[0].device_name == f"/dev/null:0x{port:X}"
    assert mine[0].library == VPCD_LIBRARY and mine[0].source == "reader.conf"
    p = run_cli("--reader-conf", d, "--json", "list")
    assert p.returncode == 0, p.stderr
    assert NAME in [r["name"] for r in json.loads(p.stdout)]


def test_session_on_vpcd(conf, vc):
    import scardio
    from scardio import Monitor, errors
    from scardio.card import CardDisconnectedError
    from scardio.monitor import ARRIVAL, DEPARTURE
    d, port = conf
    rec = Recorder()
    card = vc.VirtualCard(port=port)
    reader = scardio.open_reader(NAME, reader_conf_dirs=[d], power_down_timeout=0.3)
    try:
        reader.add_listener(rec)
        # vpcd answers none of the vendor attributes: the name comes from reader.conf
        assert reader.name == NAME
        assert "VENDOR_NAME" in reader.attributes.unsupported
        with pytest.raises(errors.NoCardError):
            reader.connect(timeout=5)
        with Monitor([reader]) as mon:
            t0 = time.monotonic()
            card.insert(timeout=10)
            ev = mon.get(timeout=10)
            assert ev.kind == ARRIVAL and ev.timestamp >= t0
            c = reader.connect(timeout=10)
            assert c.atr_bytes == vc.ATR_T1 and c.protocol_name == "T=1"
            assert c.transmit(SELECT_AID).ok
            assert c.transmit("00 A4 00 0C 02 0101").ok
            r = c.transmit("00 B0 00 00 10")
            assert r.ok and r.data == bytes(range(16))
            assert len(c.transmit("00 84 00 00 08").data) == 8
            c.disconnect()
            ons = card.counters()["power_ons"]
            c = reader.connect(timeout=10)  # reused: no new power-on or reset
            assert card.counters()["power_ons"] == ons and card.counters()["resets"] == 0
            assert c.connect_actions[0] == "SPECIFIC"
            c.disconnect()
            rec.wait_for("power_down", timeout=5)
            assert card.wait_for(lambda k: k["power_offs"] >= 1 and not k["powered"], 5)
            c = reader.connect(timeout=10)  # cold reset this time
            assert card.counters()["power_ons"] == ons + 1
            card.remove()
            ev = mon.get(timeout=10)
            assert ev.kind == DEPARTURE
            assert not c.connected
            with pytest.raises(CardDisconnectedError):
                c.transmit(SELECT_AID)
        # usable after all that
        card.insert(timeout=10)
        reader.wait_for_card(10)
        assert reader.connect(timeout=10).transmit(SELECT_AID).ok
    finally:
        reader.close()
        card.close()


def _with_card(vc, port, action, *, remove_after=None):
    """Run action() while a thread inserts a card (retrying until the driver
    in the subprocess listens) and optionally removes it later."""
    card = vc.VirtualCard(port=port, connect_timeout=20)

    def plug():
        try:
            card.insert()
            if remove_after is not None:
                time.sleep(remove_after)
                card.remove()
        except Exception:
            pass
    t = threading.Thread(target=plug, daemon=True)
    t.start()
    try:
        return action()
    finally:
        t.join(25)
        card.close()


def test_cli_info_connect_apdu_on_vpcd(conf, vc):
    d, port = conf
    p = run_cli("--reader-conf", d, "info", NAME)
    assert p.returncode == 0, p.stderr
    assert f"Reader:          {NAME}" in p.stdout and "(not reported)" in p.stdout
    p = run_cli("--reader-conf", d, "connect", NAME)
    assert p.returncode == 3  # no card
    p = _with_card(vc, port, lambda: run_cli("--reader-conf", d, "--json", "connect", NAME,
                                             "--wait", "15"))
    assert p.returncode == 0, p.stderr
    info = json.loads(p.stdout)
    assert info["atr"] == vc.ATR_T1.hex().upper() and info["protocol"] == "T=1"
    p = _with_card(vc, port, lambda: run_cli(
        "--reader-conf", d, "--trace", "apdu", NAME, "--wait", "15",
        SELECT_AID.replace(" ", ""), "00A4000C020101", "00B0000004"))
    assert p.returncode == 0, p.stderr
    assert "< 00 01 02 03 SW=9000" in p.stdout
    assert "TRANSMIT" in p.stderr


def test_cli_monitor_on_vpcd(conf, vc):
    d, port = conf
    p = _with_card(vc, port, lambda: run_cli("--reader-conf", d, "--json", "monitor", NAME,
                                             "--count", "2", "--timeout", "20"),
                   remove_after=0.5)
    assert p.returncode == 0, p.stderr
    events = [json.loads(ln) for ln in p.stdout.splitlines()]
    assert [e["event"] for e in events] == ["arrival", "departure"]
    assert events[0]["t_ms"] <= events[1]["t_ms"]
