"""pcscd holding vpcd: opening the reader directly (``backend="direct"``;
auto goes through pcscd then, see test_backend_select.py) is ReaderInUseError
naming pcscd and its pid with the systemctl advice (CLI exit 5), and
``scardio list`` marks the reader busy.

pcscd runs in a private mount and network namespace (``unshare -mn``, its
own loopback, a tmpfs on /run/pcscd), so vpcd's fixed ports (35963 + slot)
and pcscd's socket are private to the test and it can run next to anything
else on the machine.  A child Python inside the namespace starts pcscd,
waits until pcscd has opened the reader, runs the commands and reports them
as JSON; the assertions are made here.
"""

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

VPCD_PORT = 35963  # 0x8C7B: the port of vpcd's own reader.conf entry

CHILD = r'''
import json, os, shutil, subprocess, sys, tempfile, time
from pcscd_namespace import Pcscd
conf, log_path = sys.argv[1], sys.argv[2]
PORT = %(port)d
report = {}

def listening():
    with open("/proc/net/tcp") as f:
        return any(l.split()[1].endswith(":%%04X" %% PORT) and l.split()[3] == "0A"
                   for l in f.read().splitlines()[1:])

def let_nobody_reach(path):
    """This namespace's mounts are private: over the first directory on the
    way to `path` that others may not enter (root's home, when Python lives
    there), put an enterable tmpfs holding only the way on, bound back."""
    parts = os.path.realpath(path).strip("/").split("/")
    for i in range(1, len(parts)):
        top = "/" + "/".join(parts[:i])
        if os.stat(top).st_mode & 0o001:
            continue
        keep = tempfile.mkdtemp(prefix="scardio-keep-")
        subprocess.run(["mount", "--bind", top, keep], check=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=755", "tmpfs", top], check=True)
        os.mkdir(os.path.join(top, parts[i]))
        subprocess.run(["mount", "--bind", os.path.join(keep, parts[i]),
                        os.path.join(top, parts[i])], check=True)

def run(argv, as_nobody=False):
    if as_nobody:
        argv = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] + argv
    p = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd="/")
    return {"rc": p.returncode, "stdout": p.stdout, "stderr": p.stderr}

pcscd = Pcscd(conf, log_path)
try:
    deadline = time.monotonic() + 20
    while not listening() and pcscd.alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    report["pcscd_pid"] = pcscd.pid
    report["listening"] = listening()
    if report["listening"]:
        # --backend direct: the default (auto) would go through pcscd
        # instead (tests/test_backend_select.py).
        cli = [sys.executable, "-m", "scardio", "--backend", "direct", "--reader-conf", conf]
        api = [sys.executable, "-c", %(api)r, conf]
        for who in ("root", "nobody"):
            if who == "nobody":
                import scardio
                for needed in {sys.executable, sys.prefix, sys.base_prefix,
                               os.path.dirname(scardio.__file__)}:
                    let_nobody_reach(needed)
                probe = run([sys.executable, "-c", "import scardio"], as_nobody=True)
                if not shutil.which("setpriv") or probe["rc"] != 0:
                    report["nobody_skipped"] = probe["stderr"][-300:]
                    break
            nb = who == "nobody"
            report[who] = {"info": run(cli + ["info", "0"], nb),
                           "list": run(cli + ["list"], nb),
                           "list_json": run(cli + ["list", "--json"], nb),
                           "api": run(api, nb)}
finally:
    report["pcscd_alive"] = pcscd.stop()
print(json.dumps(report))
'''

API = r'''
import json, sys
from scardio import Device, errors, open_reader
from scardio.discovery import list_readers
out = {}
desc, = list_readers(reader_conf_dirs=[sys.argv[1]], pcsc=False)
for what, call in (("open_reader", lambda: open_reader(desc, backend="direct")),
                   ("open_ifd", lambda: Device.open_ifd(desc.library, desc.device_name,
                                                        desc.lun))):
    try:
        call().close()
        out[what] = {"type": None}
    except Exception as exc:
        out[what] = {"type": type(exc).__name__, "message": str(exc),
                     "in_use": isinstance(exc, errors.ReaderInUseError),
                     "holders": [h.as_dict() for h in getattr(exc, "holders", ())]}
print(json.dumps(out))
'''


@pytest.fixture(scope="module")
def report() -> Iterator[dict[str, Any]]:
    why = pcscd_namespace.unavailable()
    if why is not None:
        pytest.skip(why)
    if not os.path.exists(VPCD_LIBRARY):
        pytest.skip(f"vsmartcard-vpcd is not installed ({VPCD_LIBRARY})")
    # Not under pytest's (private) tmp dir: the unprivileged run reads reader.conf.
    work = Path(tempfile.mkdtemp(prefix="scardio-in-use-"))
    os.chmod(work, 0o755)
    try:
        yield _run(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _run(work: Path) -> dict[str, Any]:
    conf = work / "reader.conf"
    conf.write_text(f'FRIENDLYNAME "Virtual PCD"\nDEVICENAME /dev/null:0x{VPCD_PORT:04X}\n'
                    f"LIBPATH {VPCD_LIBRARY}\nCHANNELID 0x{VPCD_PORT:04X}\n")
    conf.chmod(0o644)
    child = work / "child.py"
    child.write_text(CHILD % {"port": VPCD_PORT, "api": API})
    log = work / "pcscd.log"
    result = pcscd_namespace.run_child([sys.executable, str(child), str(conf), str(log)],
                                       timeout=240)
    assert result["listening"], ("pcscd never opened vpcd; its log:\n"
                                 + log.read_text(errors="replace")[-3000:])
    assert result["pcscd_alive"], "pcscd exited during the test"
    return result


def _check_message(text: str, pid: int) -> None:
    assert "in use by another process" in text
    assert f"pcscd (pid {pid})" in text
    assert "systemctl stop pcscd.socket pcscd.service" in text


def test_info_exits_5_naming_pcscd(report: dict[str, Any]) -> None:
    info = report["root"]["info"]
    assert info["rc"] == 5, info
    assert "scardio: reader in use:" in info["stderr"]
    _check_message(info["stderr"], report["pcscd_pid"])
    assert f"pcscd (pid {report['pcscd_pid']}) holds TCP port {VPCD_PORT}" in info["stderr"]
    assert "IFD code 612" in info["stderr"]


def test_api_raises_reader_in_use_with_the_holder(report: dict[str, Any]) -> None:
    api = report["root"]["api"]
    assert api["rc"] == 0, api["stderr"]
    doc = json.loads(api["stdout"])
    for call in ("open_reader", "open_ifd"):
        r = doc[call]
        assert r["type"] == "ReaderInUseError" and r["in_use"], r
        _check_message(r["message"], report["pcscd_pid"])
        assert r["holders"] == [{"pid": report["pcscd_pid"], "name": "pcscd",
                                 "resource": f"TCP port {VPCD_PORT}"}]


def test_list_marks_the_reader_busy(report: dict[str, Any]) -> None:
    listing = report["root"]["list"]
    assert listing["rc"] == 0, listing
    line, = listing["stdout"].splitlines()
    assert line.startswith("0: Virtual PCD")
    assert line.endswith(f"[busy: held by pcscd (pid {report['pcscd_pid']})]")
    doc = json.loads(report["root"]["list_json"]["stdout"])
    assert doc[0]["busy"] is True and doc[0]["available"] is True
    assert doc[0]["holders"] == [{"pid": report["pcscd_pid"], "name": "pcscd",
                                  "resource": f"TCP port {VPCD_PORT}"}]


def test_unprivileged_user_gets_the_likely_holder(report: dict[str, Any]) -> None:
    """Without root, pcscd's descriptors cannot be read: still in use (the
    port is listening), with pcscd named as the likely holder."""
    if "nobody" not in report:
        pytest.skip(f"cannot run scardio as nobody here: {report.get('nobody_skipped')}")
    pid = report["pcscd_pid"]
    nobody = report["nobody"]
    assert nobody["info"]["rc"] == 5, nobody["info"]
    _check_message(nobody["info"]["stderr"], pid)
    assert "needs root" in nobody["info"]["stderr"]
    # Every pcscd on the machine is a suspect (other namespaces' too: which
    # network namespace a process is in cannot be read without root either).
    doc = json.loads(nobody["api"]["stdout"])
    assert doc["open_ifd"]["type"] == "ReaderInUseError"
    assert pid in [h["pid"] for h in doc["open_ifd"]["holders"]]
    line = nobody["list"]["stdout"].rstrip()
    assert "[busy: held by another process (probably pcscd, pid " in line
    assert f"pcscd, pid {pid}" in line
    listed = json.loads(nobody["list_json"]["stdout"])[0]
    assert listed["busy"] is True and listed["holders"] == []
    assert pid in [h["pid"] for h in listed["likely_holders"]]
