"""How a resource manager's reader names pair with the readers found
directly: :class:`ResourceManagerNaming` (one per naming scheme), the rule
for schemes that name a reader by a friendly name (:func:`pair_by_name`),
and pcsc-lite's scheme (:data:`PCSC_LITE`).

Each OS's resource manager names readers in a scheme of its own (a
:class:`ResourceManagerNaming`, chosen with the OS's sources:
``_platform.current().pcsc_naming``), which
:func:`~scardio.discovery.resource_manager.pair_with_resource_manager` and
:func:`~scardio.discovery.resource_manager.pcsc_style_match` apply.  A
paired reader gets ``pcsc_name``, ``extra["pcsc_match"]`` (how it paired:
``"name"``, ``"order"`` or ``"device"``) and ``extra["pcsc_scheme"]``.  The schemes of
Windows and macOS are in their per-OS modules; this module has the one of
pcsc-lite (:data:`PCSC_LITE`, also the default), which names a reader
``FRIENDLY NN SS``: its driver's (or reader.conf's) friendly name, a
two-digit hexadecimal number NN (the lowest number free among the
readers of the same driver when it arrived: 00 unless several readers
share a driver) and the slot SS.  A resource manager reader pairs with a
direct reader when:

- it is slot 00 (discovery lists slot 0 of each reader only), and
- its FRIENDLY part equals the direct reader's friendly name (for a USB
  reader discovery builds that name with the ``[interface]`` and
  ``(serial)`` parts pcscd adds, so identical readers with serial numbers
  stay distinct), and
- that friendly name is unique on both sides (``pcsc_match == "name"``),
  or else, when several readers share it, the k-th direct reader in listing
  order pairs with the reader of the k-th lowest NN (``pcsc_match ==
  "order"``).  Pairing by order is a guess: pcscd numbers identical
  readers in the order they arrived, which discovery cannot see, so two
  identical readers without serial numbers may be paired crossed.

:func:`pair_by_name` is that rule for any scheme that names a reader by
a friendly name, a number among identical readers and a slot.  Anything
else is left unpaired: its own descriptor with ``source == "pcsc"`` (the
other slots of a multi-slot reader, readers whose driver discovery does
not find, names in another scheme).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Callable, Optional, Sequence

from .descriptor import ReaderDescriptor

__all__ = ["NameReading", "PCSC_LITE", "ResourceManagerNaming", "pair_by_name", "paired_with",
           "split_pcsc_name", "style_match_by_name", "with_unpaired"]

_PCSC_NAME = re.compile(r"^(.*\S) ([0-9A-Fa-f]{2}) ([0-9A-Fa-f]{2})$")


def split_pcsc_name(name: str) -> Optional[tuple[str, int, int]]:
    """``(friendly, number, slot)`` of a pcsc-lite reader name
    ``"FRIENDLY NN SS"``; None for a name of another form."""
    m = _PCSC_NAME.match(name)
    if m is None:
        return None
    return m.group(1), int(m.group(2), 16), int(m.group(3), 16)


#: One way to read a resource manager's reader name: (the friendly name
#: the reader's driver or configuration gives it, its number among readers
#: of that friendly name, its slot).
NameReading = tuple[str, int, int]


@dataclass(frozen=True)
class ResourceManagerNaming:
    """How a resource manager names its readers, as the pairing needs it.

    ``scheme`` names the scheme (``extra["pcsc_scheme"]`` of a paired
    reader); ``pair(direct, pcsc_names)`` is
    :func:`~scardio.discovery.resource_manager.pair_with_resource_manager`
    for it; ``style_match(query, pool)`` is
    :func:`~scardio.discovery.resource_manager.pcsc_style_match` for it.
    """

    scheme: str
    pair: Callable[[Sequence[ReaderDescriptor], Sequence[str]], list[ReaderDescriptor]]
    style_match: Callable[[str, Sequence[ReaderDescriptor]], Optional[ReaderDescriptor]]


def _pcsc_only(name: str) -> ReaderDescriptor:
    return ReaderDescriptor(name, "pcsc", "", name, 0, {"available": True}, pcsc_name=name)


def paired_with(desc: ReaderDescriptor, pcsc_name: str, match: str,
                scheme: str) -> ReaderDescriptor:
    """*desc* known to the resource manager as *pcsc_name* (paired by
    *match* in *scheme*)."""
    return replace(desc, pcsc_name=pcsc_name,
                   extra={**desc.extra, "pcsc_match": match, "pcsc_scheme": scheme})


def with_unpaired(out: list[ReaderDescriptor], direct: Sequence[ReaderDescriptor],
                  pcsc_names: Sequence[str], paired: set[str]) -> list[ReaderDescriptor]:
    """*out* (the direct readers, some paired) followed by a ``source ==
    "pcsc"`` descriptor for each of *pcsc_names* neither in *paired* nor
    already a pcsc_name of *direct*, in the resource manager's order."""
    taken = {d.pcsc_name for d in direct if d.pcsc_name is not None}
    return out + [_pcsc_only(n) for n in pcsc_names if n not in paired and n not in taken]


def pair_by_name(direct: Sequence[ReaderDescriptor], pcsc_names: Sequence[str], *,
                 scheme: str, readings: Callable[[str], Sequence[NameReading]],
                 keys: Callable[[ReaderDescriptor], Sequence[str]]) -> list[ReaderDescriptor]:
    """The module doc's rule for a scheme whose names *readings* reads
    (the first reading, of slot 0, whose friendly name is a key of some
    direct reader counts) and under whose friendly names *keys* says a
    direct reader may be listed (the first key the resource manager lists
    counts)."""
    direct_keys = [list(keys(d)) if d.pcsc_name is None else [] for d in direct]
    known = {k for ks in direct_keys for k in ks}
    by_friendly: dict[str, list[tuple[int, int, str]]] = {}
    for order, name in enumerate(pcsc_names):
        for friendly, number, slot in readings(name):
            if slot == 0 and friendly in known:
                by_friendly.setdefault(friendly, []).append((number, order, name))
                break
    groups: dict[str, list[int]] = {}
    for i, ks in enumerate(direct_keys):
        key = next((k for k in ks if k in by_friendly), None)
        if key is not None:
            groups.setdefault(key, []).append(i)
    out = list(direct)
    paired: set[str] = set()
    for friendly, members in groups.items():
        candidates = sorted(by_friendly[friendly])
        match = "name" if len(members) == 1 and len(candidates) == 1 else "order"
        for i, (_, _, name) in zip(members, candidates):
            out[i] = paired_with(out[i], name, match, scheme)
            paired.add(name)
    return with_unpaired(out, direct, pcsc_names, paired)


def style_match_by_name(query: str, pool: Sequence[ReaderDescriptor], *,
                        readings: Callable[[str], Sequence[NameReading]],
                        keys: Callable[[ReaderDescriptor], Sequence[str]]
                        ) -> Optional[ReaderDescriptor]:
    """The direct reader *query* means, read by *readings* (case-insensitive;
    slot 0 only): the one direct reader with that friendly name among its
    *keys*, whatever the number; of several, the number-th in listing order.
    None when no reading fits."""
    for friendly, number, slot in readings(query):
        if slot != 0:
            continue
        folded = friendly.casefold()
        same = [d for d in pool if "direct" in d.backends
                and any(k.casefold() == folded for k in keys(d))]
        if len(same) == 1:
            return same[0]
        if number < len(same):
            return same[number]
    return None


def _pcsc_lite_readings(name: str) -> list[NameReading]:
    parts = split_pcsc_name(name)
    return [] if parts is None else [parts]


def _friendly_name(desc: ReaderDescriptor) -> list[str]:
    return [desc.friendly_name]


def _pcsc_lite_pair(direct: Sequence[ReaderDescriptor],
                    pcsc_names: Sequence[str]) -> list[ReaderDescriptor]:
    return pair_by_name(direct, pcsc_names, scheme="pcsc-lite",
                        readings=_pcsc_lite_readings, keys=_friendly_name)


def _pcsc_lite_style_match(query: str, pool: Sequence[ReaderDescriptor]
                           ) -> Optional[ReaderDescriptor]:
    return style_match_by_name(query, pool, readings=_pcsc_lite_readings,
                               keys=_friendly_name)


#: pcsc-lite's scheme, ``FRIENDLY NN SS`` (the module doc).
PCSC_LITE = ResourceManagerNaming("pcsc-lite", _pcsc_lite_pair, _pcsc_lite_style_match)
