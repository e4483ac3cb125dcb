"""What discovery returns: :class:`ReaderDescriptor`, the errors of a
lookup, and the rule that makes reader names unique."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping, Sequence, Union

__all__ = ["AmbiguousReaderError", "ReaderDescriptor", "ReaderNotFoundError", "unique_names"]

PathLike = Union[str, os.PathLike[str]]


@dataclass(frozen=True)
class ReaderDescriptor:
    """Everything needed to open a reader, and to show it to a person.

    ``source`` is "bundle", "reader.conf", "win32" or "sim";
    ``library`` the driver path; ``device_name`` and ``lun`` the arguments
    of ``IFDHCreateChannelByName``; ``extra`` a read-only mapping of
    source-specific details (always holding ``"available"``).  ``extra``
    takes no part in equality or hashing.
    """

    name: str
    source: str
    library: str
    device_name: str
    lun: int = 0
    extra: Mapping[str, object] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "extra", MappingProxyType(dict(self.extra)))

    @property
    def available(self) -> bool:
        return bool(self.extra.get("available", True))

    @property
    def busy(self) -> bool:
        """Held by another process, as far as ``list_readers(check_busy=True)``
        found (False when not checked)."""
        return bool(self.extra.get("busy", False))

    def __str__(self) -> str:
        return self.name


class ReaderNotFoundError(LookupError):
    """No reader matches.  ``query`` is what was asked for, ``candidates``
    the reader names that were available."""

    def __init__(self, message: str, query: Union[str, int],
                 candidates: Sequence[str]) -> None:
        super().__init__(message)
        self.query = query
        self.candidates = list(candidates)

    def __str__(self) -> str:
        return str(self.args[0])


class AmbiguousReaderError(ReaderNotFoundError):
    """More than one reader matches; ``candidates`` holds the matching names."""


def unique_names(readers: list[ReaderDescriptor]) -> list[ReaderDescriptor]:
    """*readers* with repeated names made unique: the second reader named
    ``X`` becomes ``X #2``, the third ``X #3`` (skipping names already taken)."""
    seen: dict[str, int] = {}
    taken = {r.name for r in readers}
    out = []
    for r in readers:
        n = seen.get(r.name, 0) + 1
        seen[r.name] = n
        if n > 1:
            new = f"{r.name} #{n}"
            while new in taken:
                n += 1
                new = f"{r.name} #{n}"
            seen[r.name] = n
            taken.add(new)
            r = ReaderDescriptor(new, r.source, r.library, r.device_name, r.lun, r.extra)
        out.append(r)
    return out
