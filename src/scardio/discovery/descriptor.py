"""What discovery returns: :class:`ReaderDescriptor`, the errors of a
lookup, and the rule that makes reader names unique."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Mapping, Optional, Sequence, Union

__all__ = ["AmbiguousReaderError", "BACKENDS", "ReaderDescriptor", "ReaderNotFoundError",
           "unique_names"]

PathLike = Union[str, os.PathLike[str]]

#: The ways to a reader: ``"direct"`` (its driver, loaded by scardio) and
#: ``"pcsc"`` (the PC/SC resource manager, which holds the driver).
BACKENDS = ("direct", "pcsc")


@dataclass(frozen=True)
class ReaderDescriptor:
    """Everything needed to open a reader, and to show it to a person.

    ``source`` is "bundle", "reader.conf", "win32", "sim" or "pcsc";
    ``library`` the driver path; ``device_name`` and ``lun`` the arguments
    of ``IFDHCreateChannelByName``; ``extra`` a read-only mapping of
    source-specific details (always holding ``"available"``).  ``extra``
    takes no part in equality or hashing.

    ``pcsc_name`` is the name the PC/SC resource manager lists the reader
    under, when it lists it (None otherwise): a reader found both directly
    and through the resource manager is one descriptor with both paths
    (:attr:`~ReaderDescriptor.backends`).  A reader only the resource
    manager knows has ``source == "pcsc"``, ``name == device_name ==
    pcsc_name``, no library and no direct path.
    """

    name: str
    source: str
    library: str
    device_name: str
    lun: int = 0
    extra: Mapping[str, object] = field(default_factory=dict, compare=False)
    pcsc_name: Optional[str] = None

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

    @property
    def backends(self) -> tuple[str, ...]:
        """The paths to the reader, direct first: ``("direct", "pcsc")``,
        ``("direct",)`` or ``("pcsc",)``."""
        paths = () if self.source == "pcsc" else ("direct",)
        return paths + (("pcsc",) if self.pcsc_name is not None else ())

    @property
    def auto_backend(self) -> str:
        """The path ``backend="auto"`` takes first, as far as this listing
        tells: direct, unless the reader has no direct path, or it is
        :attr:`~ReaderDescriptor.busy` (checked only with ``check_busy``) and the resource
        manager lists it.  Auto still falls back to PC/SC when a direct
        open finds the reader held."""
        if "direct" not in self.backends or (self.busy and self.pcsc_name is not None):
            return "pcsc"
        return "direct"

    @property
    def friendly_name(self) -> str:
        """The name before :func:`unique_names` made it unique (the
        driver's or the configuration's own name)."""
        given = self.extra.get("friendly_name")
        return given if isinstance(given, str) else self.name

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
    ``X`` becomes ``X #2``, the third ``X #3`` (skipping names already taken;
    ``extra["friendly_name"]`` keeps ``X``)."""
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
            r = replace(r, name=new, extra={**r.extra, "friendly_name": r.friendly_name})
        out.append(r)
    return out
