"""The Ctrl-C tests pass when the runner's parent ignores SIGINT (nohup,
`python -m pytest &` in a script), which every child inherits across exec:
they run here under a parent that ignores it."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from platform_support import posix_signals

TESTS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TESTS)
# The tests that send SIGINT to a child, and how many of them there are.
SIGINT_TESTS = ["tests/test_reliability_shutdown.py", "tests/test_cli.py"]
SELECT = "ctrl_c or sigint"
AT_LEAST = 9

IGNORE_SIGINT_THEN_EXEC = ("import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_IGN); "
                           "os.execv(sys.executable, [sys.executable] + sys.argv[1:])")


@posix_signals
def test_ctrl_c_tests_pass_under_a_parent_that_ignores_sigint() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", IGNORE_SIGINT_THEN_EXEC, "-m", "pytest", "-q", "-p",
         "no:cacheprovider", "-k", SELECT, *SIGINT_TESTS],
        capture_output=True, text=True, timeout=600, cwd=ROOT)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-5000:]
    m = re.search(r"(\d+) passed", out)
    assert m and int(m.group(1)) >= AT_LEAST, out[-3000:]
    assert "skipped" not in out.splitlines()[-1], out[-3000:]
