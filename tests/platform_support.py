"""What the tests assume of the platform, in one place: skip markers for
POSIX-only mechanisms, and children that get Ctrl-C whatever the runner's
parent did with it."""

from __future__ import annotations

import os
import sys

import pytest

WINDOWS = sys.platform == "win32"

# Popen.send_signal(SIGINT) raises ValueError on Windows and SIGTERM there is
# TerminateProcess (exit code 1, not -15): the tests of Ctrl-C and of death
# by a signal need POSIX signals.
posix_signals = pytest.mark.skipif(WINDOWS, reason="needs POSIX signals (SIGINT, SIGTERM)")

# Device.fileno() is -1 on Windows (completions are waited for, not polled),
# and select() there takes sockets only.
completion_fd = pytest.mark.skipif(
    WINDOWS, reason="Windows has no completion descriptor (Device.fileno() == -1)")

# Shell scripts that build POSIX shared objects and executables with gcc/clang.
posix_build_scripts = pytest.mark.skipif(
    WINDOWS, reason="the script builds POSIX shared objects (.so, -ldl)")

# An ignored signal stays ignored across exec, and Python then installs no
# KeyboardInterrupt handler: under nohup or `pytest &` in a script, a child
# would never see the SIGINT a test sends it.  This prefix resets it first.
_SIGINT_DEFAULT = ("import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
                   "os.execv(sys.argv[1], sys.argv[1:])")


def with_default_sigint(argv: list[str]) -> list[str]:
    """`argv` (an absolute program path first) run with SIGINT at its
    default action; the process keeps its pid, so signals reach it."""
    if os.name != "posix":
        return list(argv)
    return [sys.executable, "-c", _SIGINT_DEFAULT, *argv]
