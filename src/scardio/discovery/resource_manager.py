"""The PC/SC resource manager's readers, and how they pair with the readers
found directly.

Asking: :func:`resource_manager_names` lists the resource manager's readers
through its client library (:func:`scardio.pcsc.list_readers`), on a thread
of its own, waiting at most *timeout* seconds (:data:`DEFAULT_TIMEOUT`);
:func:`~scardio.discovery.list_readers` asks first (:func:`ask`) and reads
the other sources while the answer comes.  Without a resource manager this
is quick: the client library's connect to the daemon's socket fails at once
(the library is loaded once per process, about a millisecond; a call costs
about 0.05 ms, mostly hidden behind the reading of the other sources: on a
loaded shared 2-vCPU VM ``list_readers()`` took a median 9.1 ms against
8.1 ms with ``pcsc=False``).  A daemon that accepts but does not answer
costs the whole timeout, once: while that call is still pending, later
listings do not ask again and are told so at once.  On a machine where
pcscd is started on demand (systemd's ``pcscd.socket``), asking starts it,
and pcscd then holds every reader it supports until it exits when idle; a
listing that must not start it is ``list_readers(pcsc=False)`` (the CLI's
``--backend direct``).

Pairing: pcsc-lite names a reader ``FRIENDLY NN SS``: its driver's (or
reader.conf's) friendly name, a two-digit hexadecimal number NN (the
lowest number free among the readers of the same driver when it
arrived: 00 unless several readers share a driver) and the slot SS.  A
resource manager reader pairs with a direct reader when:

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

Anything else is left unpaired: its own descriptor with ``source ==
"pcsc"`` (the other slots of a multi-slot reader, readers whose driver
discovery does not find, names in another scheme such as Windows'
``FRIENDLY N``).
"""

from __future__ import annotations

import _thread
import logging
import re
import threading
from dataclasses import replace
from typing import Optional, Sequence

from .. import errors
from .descriptor import ReaderDescriptor

__all__ = ["DEFAULT_TIMEOUT", "Question", "ask", "resource_manager_names", "split_pcsc_name",
           "pair_with_resource_manager", "pcsc_style_match"]

log = logging.getLogger(__package__)

#: Seconds a listing waits for the resource manager's answer.
DEFAULT_TIMEOUT = 2.0

_PCSC_NAME = re.compile(r"^(.*\S) ([0-9A-Fa-f]{2}) ([0-9A-Fa-f]{2})$")

_pending_lock = threading.Lock()
_pending: Optional["Question"] = None


def split_pcsc_name(name: str) -> Optional[tuple[str, int, int]]:
    """``(friendly, number, slot)`` of a pcsc-lite reader name
    ``"FRIENDLY NN SS"``; None for a name of another form."""
    m = _PCSC_NAME.match(name)
    if m is None:
        return None
    return m.group(1), int(m.group(2), 16), int(m.group(3), 16)


class Question:
    """The resource manager's reader names, being asked on a thread of its
    own (:func:`ask`); :meth:`answer` waits for them."""

    def __init__(self) -> None:
        self._outcome: dict[str, object] = {}
        self._done = threading.Event()

    def start(self) -> None:
        # A bare thread: threading.Thread.start() waits until the thread
        # runs, which on a loaded machine costs a scheduling delay that the
        # caller, reading its files meanwhile, need not pay.
        _thread.start_new_thread(self._ask, ())

    def pending(self) -> bool:
        return not self._done.is_set()

    def _ask(self) -> None:
        try:
            from .._core import list_pcsc_readers
            self._outcome["names"] = list_pcsc_readers()
        except ImportError as exc:
            self._outcome["error"] = errors.DriverNotFoundError(
                f"the scardio._core binding is not built: {exc}")
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            self._outcome["error"] = exc
        finally:
            self._done.set()

    def answer(self, timeout: float = DEFAULT_TIMEOUT) -> list[str]:
        """The names, waiting at most *timeout* seconds more; raises what
        :func:`resource_manager_names` documents."""
        if not self._done.wait(timeout):
            raise errors.TimeoutError(f"the PC/SC resource manager did not list its readers "
                                      f"within {timeout:g} s")
        error = self._outcome.get("error")
        if isinstance(error, BaseException):
            raise error
        names = self._outcome["names"]
        assert isinstance(names, list)
        return names


def ask() -> Question:
    """Start asking the resource manager for its readers (the caller can
    do other work meanwhile); raises :class:`scardio.errors.TimeoutError`
    at once while an earlier question is still unanswered."""
    global _pending
    with _pending_lock:
        if _pending is not None and _pending.pending():
            raise errors.TimeoutError("an earlier call to the PC/SC resource manager "
                                      "is still waiting for its answer")
        question = Question()
        _pending = question
        question.start()
    return question


def resource_manager_names(timeout: float = DEFAULT_TIMEOUT) -> list[str]:
    """The resource manager's reader names, asked on a thread of its own.

    Raises :class:`scardio.errors.ResourceManagerNotRunningError` (none is
    running), :class:`scardio.errors.DriverNotFoundError` (no PC/SC client
    library; or the binding is not built) and
    :class:`scardio.errors.TimeoutError` (no answer within *timeout*
    seconds, or an earlier call is still waiting for one)."""
    return ask().answer(timeout)


def _pcsc_only(name: str) -> ReaderDescriptor:
    return ReaderDescriptor(name, "pcsc", "", name, 0, {"available": True}, pcsc_name=name)


def pair_with_resource_manager(direct: Sequence[ReaderDescriptor],
                               pcsc_names: Sequence[str]) -> list[ReaderDescriptor]:
    """*direct* with ``pcsc_name`` (and ``extra["pcsc_match"]``) set on the
    readers that pair with one of *pcsc_names* (the rule in the module
    doc), followed by a ``source == "pcsc"`` descriptor for each name left
    unpaired, in the resource manager's order."""
    by_friendly: dict[str, list[tuple[int, int, str]]] = {}
    for order, name in enumerate(pcsc_names):
        parts = split_pcsc_name(name)
        if parts is not None and parts[2] == 0:
            by_friendly.setdefault(parts[0], []).append((parts[1], order, name))
    direct_groups: dict[str, list[int]] = {}
    for i, d in enumerate(direct):
        if d.pcsc_name is None:
            direct_groups.setdefault(d.friendly_name, []).append(i)
    out = list(direct)
    paired: set[str] = set()
    for friendly, members in direct_groups.items():
        candidates = sorted(by_friendly.get(friendly, ()))
        if not candidates:
            continue
        match = "name" if len(members) == 1 and len(candidates) == 1 else "order"
        for i, (_, _, name) in zip(members, candidates):
            out[i] = replace(out[i], pcsc_name=name,
                             extra={**out[i].extra, "pcsc_match": match})
            paired.add(name)
    taken = {d.pcsc_name for d in direct if d.pcsc_name is not None}
    out += [_pcsc_only(n) for n in pcsc_names if n not in paired and n not in taken]
    return out


def pcsc_style_match(query: str, pool: Sequence[ReaderDescriptor]
                     ) -> Optional[ReaderDescriptor]:
    """The direct reader a pcsc-lite style name ``"FRIENDLY NN SS"`` means
    when the resource manager is not there to say: slot 00 only; the one
    direct reader with that friendly name, whatever NN; of several, the
    NN-th in listing order.  None when the query is not of that form or
    nothing fits."""
    parts = split_pcsc_name(query)
    if parts is None or parts[2] != 0:
        return None
    friendly, number, _ = parts
    same = [d for d in pool if "direct" in d.backends
            and d.friendly_name.casefold() == friendly.casefold()]
    if len(same) == 1:
        return same[0]
    return same[number] if number < len(same) else None
