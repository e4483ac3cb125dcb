"""Every script in examples/ runs as a user runs it (a subprocess of the
installed scardio) and prints what its docstring promises.  A new example is
picked up from the directory listing; give it expected lines in EXPECTED."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
SCRIPTS = sorted(p.name for p in EXAMPLES.glob("*.py")) if EXAMPLES.is_dir() else []

# Regular expressions that must each match a line of the script's output.
EXPECTED: dict[str, list[str]] = {
    "list_readers.py": [r"^\d+: scardio Simulated Reader 0  \[sim\] sim:0 \(ok\)$",
                        r"^\d+: scardio Simulated Reader 1  \[sim\] sim:1 \(ok\)$",
                        r"^picked: scardio Simulated Reader 1$"],
    "wait_and_connect.py": [r"^reader: scardio Simulated Reader 0$",
                            r"^ATR: 3b f8 13 00 00 81 31 fe 45 .* protocol: T=1$",
                            r"^> 00 b0 00 00 04  < 00 01 02 03  SW=9000$",
                            r"^disconnected; power-down pending: True$"],
    "monitor.py": [r"^1: arrival   scardio Simulated Reader 0$",
                   r"^2: departure scardio Simulated Reader 0$",
                   r"^3: arrival   scardio Simulated Reader 1$",
                   r"^4: departure scardio Simulated Reader 1$",
                   r"^  callback: departure in scardio Simulated Reader 1$"],
    "asyncio_reader.py": [r"^SELECT: SW=9000$", r"^challenge: [0-9a-f]{16} SW=9000$",
                          r"^event: arrival scardio Simulated Reader 0$",
                          r"^event: departure scardio Simulated Reader 0$"],
    "sim_faults.py": [r"^RETURN      -> DriverError - TRANSMIT: .*driver code 612",
                      r"^REMOVE_CARD -> NoCardError - ",
                      r"^LONG_ATR    -> DriverDataError - ",
                      r"^latency     -> connect \+ transmit took \d+ ms$",
                      r"^counters    -> 3 power-ups, 2 insertions, 1 removal\(s\), 3 transmits$"],
    "record_replay.py": [r"^recorded 3 exchanges to session\.jsonl$",
                         r"^replayed: 00 A4 00 0C 02 01 01  ->  SW=9000$",
                         r"^replayed: 00 B0 00 00 08  ->  00 01 02 03 04 05 06 07 SW=9000$",
                         r"^replayed to the end: True$",
                         r"^out of order: 00 B0 00 00 08  ->  SW=6F00$",
                         r"^mismatch: command 1 \(00 B0 00 00 08\) is not the recorded one: "
                         r"expected 00 A4 04 0C 08 F0 73 63 61 72 64 69 6F \(line 2\)$"],
    "virtual_card.py": [r"^ATR: 3b 68 00 00 73 63 61 72 64 69 6f 30  protocol: T=0$",
                        r"^INCREMENT SW=6982$", r"^VERIFY    SW=9000$",
                        r"^INCREMENT SW=9000 00 02$", r"^BUG       SW=6F00$",
                        r"^INCREMENT SW=9000 00 03$",
                        r"^GREETING  SW=9000 hello from Python$"],
    "served_card.py": [r"^ATR: 3b f8 13 00 00 81 31 fe 45 .* protocol: T=1$",
                       r"^GET DATA  SW=6982$", r"^VERIFY 9  SW=63C2$", r"^VERIFY    SW=9000$",
                       r"^GET DATA  SW=9000 the secret$",
                       r"^server stopped: reader ABSENT, socket removed: True$"],
}


def test_examples_exist() -> None:
    if not EXAMPLES.is_dir():
        pytest.skip("needs the source tree (examples/ is not installed)")
    assert set(EXPECTED) <= set(SCRIPTS), "an example named in EXPECTED is missing"


@pytest.mark.parametrize("script", SCRIPTS)
def test_example_runs(script: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "SCARDIO_SIM"}
    proc = subprocess.run([sys.executable, str(EXAMPLES / script)], cwd=tmp_path, env=env,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, f"{script} exited {proc.returncode}:\n{proc.stderr}"
    assert proc.stdout.strip(), f"{script} printed nothing"
    lines = proc.stdout.splitlines()
    for pattern in EXPECTED.get(script, []):
        assert any(re.search(pattern, line) for line in lines), (
            f"{script}: no line matches {pattern!r} in:\n{proc.stdout}")
