"""The simulated reader under pcscd: a swap (INSERT over a present card) is
seen by pcscd as a removal then an insertion, as pyscard's
SCardGetStatusChange reports it: the event counter moves on and the new
card's ATR replaces the old one.

pcscd runs in a private mount and network namespace (``unshare -mn``, a
tmpfs on /run/pcscd), driven by a child /usr/bin/python3 (pyscard) inside
it, with the sim loaded through reader.conf and steered through
SCardControl (SCARD_SHARE_DIRECT)."""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

import pytest

from scardio.sim import ATR_T0, ATR_T1, SIM_LIBRARY, Control

import pcscd_namespace

pytestmark = [pytest.mark.pcscd]

SYSTEM_PYTHON = "/usr/bin/python3"

CHILD = r'''
import json, sys, time
from smartcard import scard as S
from pcscd_namespace import Pcscd

conf, insert = sys.argv[1], int(sys.argv[2])
U32 = 0xFFFFFFFF
pcscd = Pcscd(conf)
report = {}
try:
    deadline = time.monotonic() + 20
    reader = None
    while time.monotonic() < deadline and reader is None:
        hr, ctx = S.SCardEstablishContext(S.SCARD_SCOPE_USER)
        if not hr & U32:
            hr, rs = S.SCardListReaders(ctx, [])
            if not hr & U32 and rs:
                reader = rs[0]
                break
            S.SCardReleaseContext(ctx)
        time.sleep(0.1)
    report["reader"] = reader
    if reader is not None:
        hr, hcard, _ = S.SCardConnect(ctx, reader, S.SCARD_SHARE_DIRECT, 0)
        report["connect"] = hr & U32

        def control(data):
            hr, _ = S.SCardControl(hcard, S.SCARD_CTL_CODE(insert), data)
            return hr & U32

        def wait_atr(atr, cur, seconds):
            """States seen until the reader shows `atr` (or time runs out)."""
            seen = []
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                hr, st = S.SCardGetStatusChange(ctx, 200, [(reader, cur)])
                if hr & U32:
                    continue
                cur = st[0][1] & ~S.SCARD_STATE_CHANGED
                seen.append([cur, bytes(st[0][2]).hex()])
                if cur & S.SCARD_STATE_PRESENT and bytes(st[0][2]).hex() == atr:
                    return seen, cur
            return seen, cur

        report["insert"] = control([])                  # the T=1 card
        seen, cur = wait_atr(sys.argv[3], S.SCARD_STATE_UNAWARE, 10)
        report["first"] = seen
        report["swap"] = control([1])                   # over it: the T=0 card
        seen, cur = wait_atr(sys.argv[4], cur, 10)
        report["second"] = seen
        S.SCardDisconnect(hcard, S.SCARD_LEAVE_CARD)
        S.SCardReleaseContext(ctx)
finally:
    report["pcscd_alive"] = pcscd.stop()
print(json.dumps(report))
'''


def _prerequisites() -> str | None:
    why = pcscd_namespace.unavailable()
    if why is not None:
        return why
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        return f"{SYSTEM_PYTHON} not found (needed for pyscard)"
    r = subprocess.run([SYSTEM_PYTHON, "-c", "import smartcard.scard"], capture_output=True,
                       timeout=60)
    if r.returncode != 0:
        return f"pyscard not importable by {SYSTEM_PYTHON} (Debian package python3-pyscard)"
    if not os.path.exists(SIM_LIBRARY):
        return "the simulated reader is not built"
    return None


def test_a_swap_is_a_removal_then_an_insertion_to_pcscd() -> None:
    why = _prerequisites()
    if why:
        pytest.skip(why)
    with tempfile.TemporaryDirectory(prefix="scardio-swap-") as work:
        conf = Path(work) / "reader.conf"
        conf.write_text(f'FRIENDLYNAME "scardio sim swap"\nDEVICENAME /dev/null\n'
                        f'LIBPATH {SIM_LIBRARY}\nCHANNELID 0\n')
        child = Path(work) / "child.py"
        child.write_text(CHILD)
        report = pcscd_namespace.run_child(
            [SYSTEM_PYTHON, str(child), str(conf), str(int(Control.INSERT)),
             ATR_T1.hex(), ATR_T0.hex()], timeout=90)
    assert report["reader"] and report["connect"] == 0, report
    assert report["insert"] == 0 and report["swap"] == 0, report
    assert report["first"] and report["first"][-1][1] == ATR_T1.hex(), report
    assert report["second"] and report["second"][-1][1] == ATR_T0.hex(), report
    assert report["pcscd_alive"], report
    # pcscd's event counter (high 16 bits) counts the swap as two events, a
    # removal and an insertion (a client may or may not catch the empty
    # reader in between: pcscd reports the state current when it answers).
    before = report["first"][-1][0] >> 16
    after = report["second"][-1][0] >> 16
    assert (after - before) % 0x10000 >= 2, report
