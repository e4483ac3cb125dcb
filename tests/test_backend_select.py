"""``backend="auto"`` against the real pcscd: with pcscd holding vpcd and a
card on it, ``scardio apdu "Virtual PCD 00 00" ...`` goes through PC/SC and
says so under --trace; with pcscd stopped, the same command goes direct.
Also: ``--backend direct`` keeps the in-use error, ``--backend pcsc``
without a resource manager is ResourceManagerNotRunningError, the listing
shows both paths of the one reader, and SimControl works on a simulated
reader reached through PC/SC by ``open_reader(backend="pcsc")``.

pcscd runs in a private mount and network namespace
(tests/pcscd_namespace.py); a child Python there starts and stops it, puts
the test card (tests/vpcd_card.py) on vpcd, runs the commands and reports
them as JSON; the assertions are made here."""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterator

import pytest

from conftest import VPCD_LIBRARY

import pcscd_namespace

pytestmark = [pytest.mark.pcscd, pytest.mark.vpcd]

VPCD_PORT = 0x8C7B  # vpcd's own reader.conf port: the name is pcscd's "Virtual PCD 00 00"
SELECT_NO_AID = "00A4040000"  # SELECT with no AID: the card answers 6700
SELECT_AID = "00A4040008F07363617264696F"  # the test card's application: 9000

CHILD = r'''
import json, subprocess, sys, threading, time
from pcscd_namespace import Pcscd
from vpcd_card import VirtualCard
from scardio import errors, pcsc
conf, log_path = sys.argv[1], sys.argv[2]
command = json.loads(sys.argv[3])
api = sys.argv[4]
report = {}

def run(argv, timeout=60):
    p = subprocess.run([sys.executable, "-m", "scardio", "--reader-conf", conf] + argv,
                       capture_output=True, text=True, timeout=timeout, cwd="/")
    return {"rc": p.returncode, "stdout": p.stdout, "stderr": p.stderr}

def run_api(phase):
    p = subprocess.run([sys.executable, "-c", api, conf, phase], capture_output=True,
                       text=True, timeout=60, cwd="/")
    return {"rc": p.returncode, "stdout": p.stdout, "stderr": p.stderr}

def pcsc_names():
    try:
        return pcsc.list_readers()
    except errors.ScardioError:
        return []

pcscd = Pcscd(conf, log_path)
card = VirtualCard(%(port)d, connect_timeout=20)
try:
    deadline = time.monotonic() + 20
    while len(pcsc_names()) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    report["pcsc_names"] = pcsc_names()
    report["pcscd_pid"] = pcscd.pid
    card.insert()
    report["held"] = {"apdu": run(command), "direct": run(["--backend", "direct"] + command),
                      "list": run(["--json", "list"]), "list_text": run(["list"]),
                      "api": run_api("held"),
                      "scan": run(["--json", "scan", "--timeout", "3"])}
    card.remove()
    report["pcscd_was_alive"] = pcscd.stop()
    # pcscd gone: the port is free; the card connects once the CLI's own
    # vpcd listens (insert() retries until then).
    inserting = threading.Thread(target=card.insert)
    inserting.start()
    report["free"] = {"apdu": run(command)}
    inserting.join()
    card.remove()
    report["free"]["pcsc"] = run(["--json", "--backend", "pcsc"] + command)
    report["free"]["list"] = run(["--json", "list"])
    report["free"]["api"] = run_api("free")
finally:
    card.close()
    pcscd.stop()
print(json.dumps(report))
'''

API = r'''
import asyncio, json, sys
import scardio
from scardio import aio, errors
from scardio.sim import SimControl
conf, phase = sys.argv[1], sys.argv[2]
where = {"reader_conf_dirs": [conf]}
out = {}

def error(call):
    try:
        call()
    except Exception as exc:
        return {"type": type(exc).__name__, "message": str(exc),
                "mro": [c.__name__ for c in type(exc).__mro__]}
    return {"type": None}

if phase == "held":
    with scardio.open_reader("Virtual PCD 00 00", **where) as r:
        out["auto"] = {"backend": r.backend, "reason": r.backend_reason,
                       "pcsc_name": r.descriptor.pcsc_name, "name": r.descriptor.name}
    out["direct"] = error(lambda: scardio.open_reader("Virtual PCD", backend="direct",
                                                      **where).close())
    async def via_aio():
        ar = await aio.open_reader("Virtual PCD", **where)
        try:
            return ar.backend
        finally:
            ar.close()
    out["aio"] = asyncio.run(via_aio())
    # The simulated reader pcscd loaded, reached through PC/SC: its vendor
    # controls go through SCardControl.
    with scardio.open_reader("scardio sim", backend="pcsc", **where) as r:
        sim = SimControl(r.device)
        sim.insert()
        r.wait_for_card(timeout=10)
        card = r.connect(timeout=10)
        rsp = card.transmit(bytes.fromhex("80EE000004CAFEBABE04"))
        card.disconnect()
        sim.remove()
        r.wait_for_removal(timeout=10)
        out["sim"] = {"backend": r.backend, "echo": [rsp.data.hex(), rsp.sw],
                      "present_after_remove": sim.counters().present}
else:
    with scardio.open_reader("Virtual PCD 00 00", **where) as r:
        out["auto"] = {"backend": r.backend, "reason": r.backend_reason,
                       "pcsc_name": r.descriptor.pcsc_name}
    out["pcsc"] = error(lambda: scardio.open_reader("Virtual PCD 00 00", backend="pcsc",
                                                    **where).close())
print(json.dumps(out))
'''


@pytest.fixture(scope="module")
def report() -> Iterator[dict[str, Any]]:
    why = pcscd_namespace.unavailable()
    if why is not None:
        pytest.skip(why)
    if not os.path.exists(VPCD_LIBRARY):
        pytest.skip(f"vsmartcard-vpcd is not installed ({VPCD_LIBRARY})")
    from scardio.sim import SIM_LIBRARY
    if not os.path.exists(SIM_LIBRARY):
        pytest.skip("the simulated reader is not built")
    work = Path(tempfile.mkdtemp(prefix="scardio-backend-"))
    try:
        conf = work / "reader.conf"
        conf.write_text(f'FRIENDLYNAME "Virtual PCD"\nDEVICENAME /dev/null:0x{VPCD_PORT:04X}\n'
                        f"LIBPATH {VPCD_LIBRARY}\nCHANNELID 0x{VPCD_PORT:04X}\n\n"
                        f'FRIENDLYNAME "scardio sim"\nDEVICENAME sim:0\nLIBPATH {SIM_LIBRARY}\n'
                        "CHANNELID 0\n")
        child = work / "child.py"
        child.write_text(CHILD % {"port": VPCD_PORT})
        log = work / "pcscd.log"
        command = ["--trace", "apdu", "Virtual PCD 00 00", SELECT_NO_AID, SELECT_AID,
                   "--wait", "10"]
        result = pcscd_namespace.run_child(
            [sys.executable, str(child), str(conf), str(log), json.dumps(command), API],
            timeout=300)
        result["pcscd_log"] = log.read_text(errors="replace")[-3000:]
        yield result
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _responses(stdout: str) -> list[str]:
    return [line for line in stdout.splitlines() if line.startswith("< ")]


def test_held_reader_goes_through_pcsc_and_trace_says_so(report: dict[str, Any]) -> None:
    assert "Virtual PCD 00 00" in report["pcsc_names"], report["pcscd_log"]
    assert report["pcscd_was_alive"]
    apdu = report["held"]["apdu"]
    assert apdu["rc"] == 0, apdu
    trace = [ln for ln in apdu["stderr"].splitlines() if ln.startswith("[trace] open")]
    assert trace == [trace[0]] and "through PC/SC as 'Virtual PCD 00 00'" in trace[0], apdu
    assert "(backend pcsc, --backend auto)" in trace[0]
    # Why: vpcd's port is taken and pcscd lists the reader, so the driver was
    # not loaded to find that out (vpcd would fail to listen, saying so on
    # stderr).
    assert "Address already in use" not in apdu["stderr"], apdu["stderr"]
    assert trace[0].endswith(": TCP port 35963 is taken and the resource manager lists the "
                             "reader: the direct open was not tried"), trace[0]
    responses = _responses(apdu["stdout"])
    assert responses[0].startswith("< SW=6700") and responses[1].startswith("< SW=9000"), apdu


def test_same_command_goes_direct_once_pcscd_stopped(report: dict[str, Any]) -> None:
    apdu = report["free"]["apdu"]
    assert apdu["rc"] == 0, apdu
    trace = [ln for ln in apdu["stderr"].splitlines() if ln.startswith("[trace] open")]
    assert trace == ["[trace] open 'Virtual PCD' directly (backend direct, --backend auto): "
                     "the direct open succeeded"], apdu
    responses = _responses(apdu["stdout"])
    assert responses[0].startswith("< SW=6700") and responses[1].startswith("< SW=9000"), apdu


def test_backend_direct_keeps_the_in_use_error(report: dict[str, Any]) -> None:
    direct = report["held"]["direct"]
    assert direct["rc"] == 5, direct
    assert "scardio: reader in use:" in direct["stderr"]
    assert f"pcscd (pid {report['pcscd_pid']})" in direct["stderr"]
    assert "through PC/SC" not in direct["stderr"]


def test_backend_pcsc_without_resource_manager(report: dict[str, Any]) -> None:
    pcsc = report["free"]["pcsc"]
    assert pcsc["rc"] == 1, pcsc
    err = json.loads(pcsc["stderr"].strip().splitlines()[-1])
    assert err["type"] == "ResourceManagerNotRunningError", err
    api = json.loads(report["free"]["api"]["stdout"])
    assert api["pcsc"]["type"] == "ResourceManagerNotRunningError"
    assert api["auto"]["backend"] == "direct" and api["auto"]["pcsc_name"] is None


def test_list_shows_one_reader_with_both_paths(report: dict[str, Any]) -> None:
    held = json.loads(report["held"]["list"]["stdout"])
    vpcd = [r for r in held if r["name"] == "Virtual PCD"]
    assert len(vpcd) == 1, held
    v = vpcd[0]
    assert v["source"] == "reader.conf" and v["pcsc_name"] == "Virtual PCD 00 00"
    assert v["backends"] == ["direct", "pcsc"] and v["busy"] is True
    assert v["auto_backend"] == "pcsc"
    sim = [r for r in held if r["name"] == "scardio sim"]
    assert sim and sim[0]["pcsc_name"] == "scardio sim 00 00", held
    # vpcd's second slot: only the resource manager lists it.
    slot1 = [r for r in held if r["name"] == "Virtual PCD 00 01"]
    assert slot1 and slot1[0]["source"] == "pcsc" and slot1[0]["backends"] == ["pcsc"]
    text = report["held"]["list_text"]["stdout"]
    assert "0: Virtual PCD  (reader.conf: /dev/null:0x8C7B, lun 0; PC/SC: Virtual PCD 00 00;" \
        " auto: pcsc)  [busy: held by pcscd" in text, text
    assert "Virtual PCD 00 01  (PC/SC only; auto: pcsc)" in text
    free = json.loads(report["free"]["list"]["stdout"])
    assert [r["name"] for r in free] == ["Virtual PCD", "scardio sim"]
    assert all(r["pcsc_name"] is None and r["auto_backend"] == "direct" for r in free)


def test_api_auto_aio_and_direct(report: dict[str, Any]) -> None:
    api = report["held"]["api"]
    assert api["rc"] == 0, api["stderr"]
    doc = json.loads(api["stdout"])
    assert doc["auto"]["backend"] == "pcsc" and doc["auto"]["pcsc_name"] == "Virtual PCD 00 00"
    assert doc["auto"]["name"] == "Virtual PCD"
    assert doc["auto"]["reason"] == ("TCP port 35963 is taken and the resource manager lists "
                                     "the reader: the direct open was not tried"), doc["auto"]
    # vpcd says so once: for the backend="direct" open, which loads the
    # driver as asked; auto (blocking and aio) did not try it
    assert api["stderr"].count("Address already in use") == 1, api["stderr"]
    assert doc["direct"]["type"] == "ReaderInUseError", doc["direct"]
    assert doc["aio"] == "pcsc"


def test_sim_control_through_pcsc(report: dict[str, Any]) -> None:
    sim = json.loads(report["held"]["api"]["stdout"])["sim"]
    assert sim["backend"] == "pcsc"
    assert sim["echo"] == ["cafebabe", 0x9000]
    assert sim["present_after_remove"] is False


def test_scan_of_every_reader_watches_each_once(report: dict[str, Any]) -> None:
    """scan with no reader named follows the resource manager's reader list;
    a reader it knows both directly and through PC/SC ("Virtual PCD" is
    pcscd's "Virtual PCD 00 00") is watched once, not once per name."""
    scan = report["held"]["scan"]
    assert scan["rc"] == 0, scan["stderr"]
    events = [json.loads(line) for line in scan["stdout"].splitlines() if line.startswith("{")]
    arrivals = [e["reader"] for e in events if e.get("event") == "arrival"]
    assert sorted(arrivals) == sorted(set(arrivals)), events
    assert any(r.startswith("Virtual PCD") for r in arrivals), events
    assert not [e for e in events if e.get("event") == "reader-added"], events
