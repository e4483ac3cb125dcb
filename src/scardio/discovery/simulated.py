"""Simulated readers: ``scardio Simulated Reader 0`` .. ``N-1`` on the
built-in simulated driver (``scardio.sim.SIM_LIBRARY``), LUN 0 .. N-1."""

from __future__ import annotations

import importlib
import os
from typing import Optional

from .descriptor import ReaderDescriptor

__all__ = ["SIM_ENV", "SIM_NAME", "sim_count", "sim_readers"]

#: Environment variable giving the number of simulated readers.
SIM_ENV = "SCARDIO_SIM"
#: Name pattern of the simulated readers.
SIM_NAME = "scardio Simulated Reader {}"


def _sim_library() -> Optional[str]:
    """The simulated driver's path (scardio.sim), or None when the binding is
    not built (imported lazily: discovery works without it)."""
    try:
        sim = importlib.import_module("..sim", __package__)
    except ImportError:
        return None
    library = getattr(sim, "SIM_LIBRARY", None)
    return library if isinstance(library, str) else None


def sim_count(sim: int) -> int:
    """How many simulated readers to list: *sim*, or when it is 0 the
    ``SCARDIO_SIM`` environment variable (ValueError when negative or
    malformed)."""
    if sim < 0:
        raise ValueError(f"sim must be >= 0, got {sim}")
    if sim:
        return sim
    value = os.environ.get(SIM_ENV, "").strip()
    if not value:
        return 0
    try:
        count = int(value, 10)
    except ValueError:
        count = -1
    if count < 0:
        raise ValueError(f"{SIM_ENV} must be a non-negative integer, got {value!r}")
    return count


def sim_readers(count: int) -> list[ReaderDescriptor]:
    """*count* simulated reader descriptors (LUN 0 .. count-1)."""
    library = _sim_library()
    readers = []
    for i in range(count):
        extra: dict[str, object] = {"available": bool(library) and os.path.exists(library or "")}
        if not library:
            extra["problem"] = "the scardio._core binding is not built"
        elif not extra["available"]:
            extra["problem"] = f"simulated driver {library} does not exist"
        readers.append(ReaderDescriptor(SIM_NAME.format(i), "sim", library or "",
                                        f"sim:{i}", i, extra))
    return readers
