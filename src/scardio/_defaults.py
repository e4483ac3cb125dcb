"""The reader's default timeouts, in a module of their own so that what
only shows them (``scardio --help``) need not load the reader's state
machine.  :mod:`scardio.session` documents them and re-exports them."""

from __future__ import annotations

DEFAULT_POWER_DOWN_TIMEOUT: float = 5.0
DEFAULT_CONNECT_TIMEOUT: float = 10.0
