"""How a command ends: its exit code, or a usage error found after parsing."""

from __future__ import annotations

__all__ = ["UsageError", "EXIT_OK", "EXIT_ERROR", "EXIT_USAGE", "EXIT_NO_CARD",
           "EXIT_NOT_FOUND", "EXIT_IN_USE", "EXIT_INTERRUPTED", "EXIT_PIPE_CLOSED"]

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_NO_CARD = 3
EXIT_NOT_FOUND = 4
EXIT_IN_USE = 5
EXIT_INTERRUPTED = 130
EXIT_PIPE_CLOSED = 141


class UsageError(Exception):
    """Bad input found after parsing (exit 2)."""
