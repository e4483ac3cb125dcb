"""What each PC/SC client costs on its own: scardio's Card.transmit and
pyscard's SCardTransmit of the 5-byte APDU over the same scripted client
library (the C tests' fake_pcsc.c, which answers at once), so that no
daemon, socket or system call is in the figure; both in one single-threaded process
(pcsc_client_worker.py), pinned to one CPU, interleaved.  No target: it
shows that scardio's own code per transmit is cheaper than pyscard's, and
so that the end-to-end ratio of test_bench_pcsc.py is set by what both
share (pcsc-lite's round trip to pcscd) and by the process they run in
(docs/benchmarks.md, "scardio over PC/SC against pyscard").  Needs gcc,
Linux and a system pyscard built for this interpreter; skips otherwise.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import ccompile
import harness

pytestmark = [pytest.mark.quick]

ROUNDS = int(os.environ.get("SCARDIO_BENCH_ROUNDS", "25"))
CALLS = 5000

_FAKE = os.path.join(harness.ROOT, "native", "pcsc", "tests", "fake_pcsc.c")
# fake_pcsc.c has what scardio's backend resolves; pyscard's loader also
# wants these.
_EXTRA = r'''
EXPORT PCSC_IO_REQUEST g_rgSCardT0Pci = {1, sizeof(PCSC_IO_REQUEST)};
EXPORT PCSC_IO_REQUEST g_rgSCardT1Pci = {2, sizeof(PCSC_IO_REQUEST)};
EXPORT PCSC_IO_REQUEST g_rgSCardRawPci = {4, sizeof(PCSC_IO_REQUEST)};
EXPORT PCSC_LONG SCardListReaderGroups(PCSC_CONTEXT c, char *groups, PCSC_DWORD *n)
{ (void)c; (void)groups; *n = 0; return 0; }
EXPORT PCSC_LONG SCardIsValidContext(PCSC_CONTEXT c) { (void)c; return 0; }
EXPORT PCSC_LONG SCardFreeMemory(PCSC_CONTEXT c, const void *p) { (void)c; (void)p; return 0; }
EXPORT const char *pcsc_stringify_error(PCSC_LONG rc) { (void)rc; return "scripted"; }
'''
LIBRARY = ccompile.CProgram(
    "pcsc-client-fake", f'#include "{_FAKE}"\n' + _EXTRA,
    ["-shared", "-fPIC", "-fvisibility=hidden", "-pthread",
     "-I" + os.path.join(harness.ROOT, "native", "pcsc")],
    output="libpcsclite.so.1")


def _unavailable() -> "str | None":
    import pcsc_peer
    if not sys.platform.startswith("linux"):
        return "the scripted library is built for Linux"
    if not ccompile.have_gcc():
        return "gcc is needed to build the scripted client library"
    if pcsc_peer._pyscard_path() is None:
        return "no system pyscard built for this interpreter"
    return None


def test_pcsc_client_cost():
    import pcsc_peer
    why = _unavailable()
    if why:
        pytest.skip(why)
    lib = LIBRARY.path()
    env = dict(os.environ, SCARDIO_PCSC_LIBRARY=lib,
               LD_LIBRARY_PATH=os.pathsep.join(
                   p for p in (os.path.dirname(lib), os.environ.get("LD_LIBRARY_PATH")) if p),
               PYTHONPATH=os.pathsep.join(
                   p for p in (harness.HERE, pcsc_peer._pyscard_path(),
                               os.environ.get("PYTHONPATH")) if p))
    cpus = harness.allowed_cpus()
    argv = [sys.executable, os.path.join(harness.HERE, "pcsc_client_worker.py"),
            str(ROUNDS), str(CALLS)]
    if cpus and hasattr(os, "sched_setaffinity"):
        argv = ["taskset", "-c", str(cpus[-1])] + argv
    got = json.loads(subprocess.run(argv, env=env, check=True, capture_output=True, text=True,
                                    timeout=300).stdout)
    rows = []
    for op, res in got.items():
        med = {k: harness.median(v) for k, v in res.items()}
        harness.record("pcsc_client", op, {"_samples": res,
                                           **{k: harness.summary(v) for k, v in res.items()}})
        rows.append([op, f"{med['scardio']:.0f}", f"{med['pyscard']:.0f}",
                     f"{med['pyscard'] / med['scardio']:.2f}×"])
        print(f"\nscripted libpcsclite, {op}: scardio {med['scardio']:.0f} ns, "
              f"pyscard {med['pyscard']:.0f} ns per call")
        assert all(v > 0 for v in med.values()), med
    harness.record_table(
        "PC/SC client code alone: one transmit over a scripted libpcsclite",
        ["APDU", "scardio Card.transmit (ns)", "pyscard SCardTransmit (ns)",
         "pyscard ÷ scardio"], rows,
        note="both in one single-threaded process on one CPU, interleaved; the library "
             "answers at once (native/pcsc/tests/fake_pcsc.c), so no system call counts")
