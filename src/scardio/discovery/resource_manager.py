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

Pairing: :func:`pair_with_resource_manager` and :func:`pcsc_style_match`
apply this OS's naming scheme (``_platform.current().pcsc_naming``; the
rule and pcsc-lite's scheme are in :mod:`~scardio.discovery.pairing`, the
schemes of Windows and macOS in their per-OS modules).
"""

from __future__ import annotations

import _thread
import logging
import threading
from typing import Optional, Sequence

from .. import errors
from .descriptor import ReaderDescriptor
from .pairing import PCSC_LITE as PCSC_LITE
from .pairing import ResourceManagerNaming
from .pairing import split_pcsc_name as split_pcsc_name

# split_pcsc_name and PCSC_LITE stay importable from here, where they were.
__all__ = ["DEFAULT_TIMEOUT", "Question", "ask", "resource_manager_names",
           "pair_with_resource_manager", "pcsc_style_match"]

log = logging.getLogger(__package__)

#: Seconds a listing waits for the resource manager's answer.
DEFAULT_TIMEOUT = 2.0

_pending_lock = threading.Lock()
_pending: Optional["Question"] = None


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


def _current_naming() -> ResourceManagerNaming:
    from ._platform import current  # at the call: it imports the per-OS modules
    return current().pcsc_naming


def pair_with_resource_manager(direct: Sequence[ReaderDescriptor],
                               pcsc_names: Sequence[str],
                               naming: Optional[ResourceManagerNaming] = None
                               ) -> list[ReaderDescriptor]:
    """*direct* with ``pcsc_name`` (and ``extra["pcsc_match"]``,
    ``extra["pcsc_scheme"]``) set on the readers that pair with one of
    *pcsc_names* by *naming* (default: this OS's scheme; see
    :mod:`~scardio.discovery.pairing`), followed by a ``source == "pcsc"``
    descriptor for each name left unpaired, in the resource manager's
    order."""
    return (naming or _current_naming()).pair(direct, pcsc_names)


def pcsc_style_match(query: str, pool: Sequence[ReaderDescriptor],
                     naming: Optional[ResourceManagerNaming] = None
                     ) -> Optional[ReaderDescriptor]:
    """The direct reader a resource manager style name means when the
    resource manager is not there to say, by *naming* (default: this OS's
    scheme).  For pcsc-lite's ``"FRIENDLY NN SS"``: slot 00 only; the one
    direct reader with that friendly name, whatever NN; of several, the
    NN-th in listing order.  None when the query is not of that form or
    nothing fits."""
    return (naming or _current_naming()).style_match(query, pool)
