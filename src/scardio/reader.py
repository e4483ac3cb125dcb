"""Readers: the resource manager's sequences over a :class:`scardio.Device`,
the same code for every backend.

A :class:`Reader` is the threaded runtime of a reader's state machine
(:class:`scardio.session.ReaderSession`): it runs the session's sequences
(:mod:`scardio.sequences`) with blocking IOCTLs (:func:`scardio.runner.run_sync`)
under one ``RLock``, and arms the power-down timer on
:mod:`scardio.powerdown`'s thread.  :mod:`scardio.aio` runs the very same
session and sequences on an asyncio loop, so the state table is implemented
in exactly one place, whatever the driver and whatever the calling style.

Power-down timer: ``Card.disconnect()`` leaves the card powered and starts a
timer (:data:`scardio.session.DEFAULT_POWER_DOWN_TIMEOUT`, 5 s); a reconnect before it fires
cancels it and reuses the powered card without a reset; when it fires, the
GET_STATE loop powers the card down.  A timeout of 0 powers the card down
during the disconnect itself (the same ``power_down`` event, reason
"timer"); None never does.
"""

from __future__ import annotations

import threading
import time
import weakref
from functools import partial
from types import TracebackType
from typing import TYPE_CHECKING, Any, Callable, Iterable, NamedTuple, Optional, Union

from . import errors, powerdown
from ._core import ReaderLock, reader_connect
from .card import Card
from .completions import Completions as Completions
from .constants import IOCTL, Protocol, State
from .runner import run_sync
from .sequences import U32, decode_state
# The sequences' names stay importable from here, where they were defined
# before they got modules of their own.
from .sequences import Request as Request, Steps as Steps, get_state_steps as get_state_steps
from .sequences.connect import CONNECT_MAX_STEPS
from .sequences.connect import connect_steps as connect_steps
from .sequences.disconnect import Disposition
from .sequences.disconnect import (POWER_DOWN_MAX_STEPS as POWER_DOWN_MAX_STEPS,
                                   power_down_steps as power_down_steps,
                                   warm_reset_steps as warm_reset_steps)
from .sequences.startup import Characteristics, ReaderAttributes, startup_steps
from .session import (DEFAULT_CONNECT_TIMEOUT, DEFAULT_POWER_DOWN_TIMEOUT, ReaderEvent,
                      ReaderSession, check_power_down_timeout, check_timeout, wait_event)
from .tracing import TraceRecord, TracingDevice

if TYPE_CHECKING:
    from ._core import Device
    from .discovery import ReaderDescriptor

__all__ = ["Reader", "SessionFront", "ReaderAttributes", "ReaderEvent", "Disposition",
           "TracingDevice", "TraceRecord", "open_reader", "run_sync", "BACKEND_CHOICES",
           "OpenedDevice", "check_backend", "open_backend_device", "open_pcsc_device",
           "DEFAULT_POWER_DOWN_TIMEOUT", "DEFAULT_CONNECT_TIMEOUT",
           "CONNECT_MAX_STEPS", "Characteristics", "check_power_down_timeout"]

#: How long close() waits for a call in progress on another thread before
#: it gives up on its own power-down sequence (normal APDUs take far less).
CLOSE_LOCK_WAIT = 0.5

# A plain int: an IntEnum member costs an attribute lookup and a conversion
# in the binding on every call.
_GET_STATE = int(IOCTL.GET_STATE)


class SessionFront:
    """What every front end of a reader's session answers the same way,
    whatever runs it (:class:`Reader`, :class:`scardio.aio.AsyncReader`)."""

    session: ReaderSession

    @property
    def closed(self) -> bool:
        return self.session.closed

    @property
    def power_down_timeout(self) -> Optional[float]:
        """Seconds a disconnected card stays powered: 0 powers it down at
        disconnect, None never (see the module doc)."""
        return self.session.power_down_timeout

    @power_down_timeout.setter
    def power_down_timeout(self, value: Optional[float]) -> None:
        self.session.power_down_timeout = value

    @property
    def power_down_pending(self) -> bool:
        """Whether the power-down timer is armed."""
        return self.session.power_down_pending

    @property
    def present(self) -> Optional[bool]:
        """Whether a card is in, as a monitor tracking the reader last saw
        it (None when no monitor reported)."""
        return self.session.present

    def add_listener(self, callback: Callable[[ReaderEvent], None]) -> None:
        """Call `callback(ReaderEvent)` on connect, disconnect, power-down..."""
        self.session.add_listener(callback)

    def remove_listener(self, callback: Callable[[ReaderEvent], None]) -> None:
        self.session.remove_listener(callback)

    def add_close_hook(self, hook: Callable[[Any], None]) -> None:
        """Run `hook(reader)` before the device closes (monitors detach);
        `reader` is the blocking :class:`Reader`, whichever front end closes."""
        self.session.add_close_hook(hook)

    def remove_close_hook(self, hook: Callable[[Any], None]) -> None:
        self.session.remove_close_hook(hook)


class Reader(SessionFront):
    """One reader: start-up on open, the connect sequence, the power-down
    timer, card tracking.  Thread-safe; use as a context manager."""

    def __init__(self, device: Any, descriptor: Optional["ReaderDescriptor"] = None, *,
                 power_down_timeout: Optional[float] = DEFAULT_POWER_DOWN_TIMEOUT,
                 name: Optional[str] = None, startup: bool = True,
                 backend: str = "direct", backend_reason: str = "") -> None:
        self.device = device
        self.descriptor = descriptor
        #: How *device* reaches the reader: "direct" (scardio runs its
        #: driver) or "pcsc" (through the PC/SC resource manager), as the
        #: opener says (open_reader() and scardio.pcsc do; the default
        #: is "direct").
        self.backend = backend
        #: Why open_reader(backend="auto") took that path ("" when asked for).
        self.backend_reason = backend_reason
        self._given_name = name
        self.attributes = ReaderAttributes()
        try:
            me = weakref.ref(self)  # no cycle: a dropped Reader frees its device at once
            self.session = ReaderSession(lambda: _name_of(me), power_down_timeout)
        except (TypeError, ValueError):
            device.close()  # the reader owns the device, as when start-up fails
            raise
        self.completions = Completions(device)
        # One re-armable timer per reader (weakly bound: a pending
        # power-down does not keep a dropped reader alive).
        self._power_down_timer = powerdown.Timer(partial(_power_down_timer_fired, me))
        # threading.RLock's interface; the binding's transmit path takes it
        # without a Python call
        self._lock = ReaderLock()
        self._close_guard = threading.Lock()
        if startup:
            try:
                self.attributes = run_sync(device, startup_steps())
            except BaseException:
                device.close()
                raise

    # -- identity ---------------------------------------------------------
    @property
    def name(self) -> str:
        """From VENDOR_NAME / VENDOR_IFD_TYPE / DEVICE_UNIT; else the
        descriptor's friendly name (e.g. vpcd has none of these)."""
        if self._given_name:
            return self._given_name
        built = self.attributes.reader_name()
        if built:
            return built
        if self.descriptor is not None:
            return self.descriptor.name
        return str(getattr(self.device, "device_name", "") or "reader")

    @property
    def names(self) -> tuple[str, ...]:
        """Every name this reader goes by: :attr:`name`, and its
        descriptor's direct and resource-manager names."""
        found = [self.name]
        if self.descriptor is not None:
            found += [self.descriptor.name, self.descriptor.pcsc_name or ""]
        return tuple(dict.fromkeys(n for n in found if n))

    @property
    def card(self) -> Optional[Card]:
        """The connected card, if any."""
        return self.session.connected_card()

    def info(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name,
                             "library": getattr(self.device, "library", None),
                             "device_name": getattr(self.device, "device_name", None),
                             "lun": getattr(self.device, "lun", None),
                             "backend": self.backend,
                             "power_down_timeout": self.power_down_timeout}
        if self.backend_reason:
            d["backend_reason"] = self.backend_reason
        if self.descriptor is not None:
            d["descriptor_name"] = self.descriptor.name
            d["source"] = self.descriptor.source
            d["pcsc_name"] = self.descriptor.pcsc_name
        d["attributes"] = self.attributes.as_dict()
        return d

    def __repr__(self) -> str:
        return (f"<scardio.Reader {self.name!r} ({self.backend})"
                f"{' closed' if self.closed else ''}>")

    # -- plain IOCTL helpers ----------------------------------------------
    def state(self) -> State:
        """GET_STATE."""
        if self.session.closed:
            self.session.check_open()  # raises
        return decode_state(self.device.ioctl(_GET_STATE, b"", 4))

    def is_card_present(self) -> bool:
        return self.state() not in (State.UNKNOWN, State.ABSENT)

    def get_attribute(self, attr: int, output_size: int = 256) -> bytes:
        self.session.check_open()
        return self.device.ioctl(IOCTL.GET_ATTRIBUTE, U32.pack(int(attr)),  # type: ignore[no-any-return]
                                 output_size)

    # -- connect / disconnect ---------------------------------------------
    def connect(self, protocols: int = Protocol.T0 | Protocol.T1, *,
                timeout: Optional[float] = DEFAULT_CONNECT_TIMEOUT,
                max_steps: int = CONNECT_MAX_STEPS,
                auto_get_response: bool = True, auto_resend: bool = True,
                share: Optional[str] = None) -> Card:
        """Run the connect loop and SET_PROTOCOL; return the :class:`Card`.

        `share` is how the connection is shared with other clients:
        "shared", "exclusive", or None for the reader's default.  Through
        PC/SC it is the share mode of ``SCardConnect`` for this connection
        (the default is the mode the reader was opened with,
        ``scardio.pcsc.open_reader(name, share=...)``, "shared" unless
        asked); an exclusive connection is refused ReaderInUseError while
        another client is connected, keeps every other client out until
        :meth:`scardio.card.Card.disconnect`, and its end lets them in at
        once.  On the direct path scardio owns the reader and no other
        process can reach it, so every connection is exclusive: "shared" is
        accepted (code written for either path works on both) and means the
        same, and ``card.share`` says "exclusive".  See also
        :meth:`scardio.card.Card.transaction`.

        Raises NoCardError (no card), TimeoutError (the sequence did not
        settle within `timeout` seconds or `max_steps` GET_STATEs),
        NotSupportedError (protocol), InvalidStateError (a card is already
        connected through this reader), ReaderInUseError (an exclusive
        connection elsewhere, or other clients when asking for one),
        ValueError (`share` is none of the above)."""
        # The binding runs it (scardio._core.reader_connect): the rules are
        # the session's and the sequences', the glue between them is C.
        card: Card = reader_connect(self, protocols, timeout, max_steps, auto_get_response,
                                    auto_resend, share)
        return card

    def _acquire_until(self, deadline: Optional[float]) -> None:
        """Take the reader lock, waiting until `deadline` at most (a call
        stuck in the driver on another thread must not hold this one)."""
        lock = self._lock
        if deadline is None:
            lock.acquire()
        elif lock.acquire(False):
            return  # free: no timeout to compute
        elif not lock.acquire(blocking=True, timeout=max(0.0, deadline - time.monotonic())):
            raise errors.TimeoutError(f"another call on {self.name!r} did not finish "
                                      "within the timeout")

    def _timer_fired(self, token: int) -> None:
        with self._lock:
            run_sync(self.device, self.session.timer_fired_steps(token))

    def power_down(self) -> list[str]:
        """Run the power-down sequence now (cancels the timer); returns the
        GET_STATE loop's trail, e.g. ["SPECIFIC", "POWER_DOWN", "SWALLOWED"]."""
        with self._lock:
            return run_sync(self.device, self.session.explicit_power_down_steps())

    # -- card tracking ----------------------------------------------------
    def _wait_tracking(self, present: bool, timeout: Optional[float]) -> None:
        timeout = check_timeout(timeout)
        session = self.session
        session.check_open()
        if session.tracked_by:
            # A monitor holds the one tracking request: follow its reports
            # (listening first, then looking, so nothing falls in between).
            ev = threading.Event()

            def waiter(p: bool) -> None:
                if p == present:
                    ev.set()
            session.add_presence_waiter(waiter)
            try:
                now = session.present if session.present is not None \
                    else self.is_card_present()
                if now == present or wait_event(ev, timeout):
                    return
            finally:
                session.remove_presence_waiter(waiter)
            raise session.tracking_timeout(present, timeout)
        # In this thread where the backend can bound the wait (no thread
        # hand-off), else on the tracking lane (Device.wait_tracking).
        try:
            self.device.wait_tracking(session.tracking_code(present), timeout)
        except errors.TimeoutError:
            raise session.tracking_timeout(present, timeout) from None
        except errors.DeviceBusyError as exc:
            raise session.tracking_busy(exc, present) from None
        session.tracking_done(present)

    def wait_for_card(self, timeout: Optional[float] = None) -> None:
        """Return once a card is in (at once if one is).  Raises
        scardio.errors.TimeoutError after `timeout` seconds."""
        self._wait_tracking(True, timeout)

    def wait_for_removal(self, timeout: Optional[float] = None) -> None:
        """Return once the reader is empty (at once if it is)."""
        self._wait_tracking(False, timeout)

    # -- closing ----------------------------------------------------------
    def close(self, *, power_down: bool = True) -> None:
        """Disconnect, power the card down (unless `power_down` is false:
        the caller just did), cancel everything, release the driver.
        Idempotent and bounded: if another thread is inside a call (a
        transmit stuck in the driver), close waits at most
        CLOSE_LOCK_WAIT for it, then skips the power-down sequence and lets
        Device.close() cancel or abandon the call within the core's bound
        (the IFD backend powers a powered card down when it releases it)."""
        with self._close_guard:
            if not self.session.begin_close():
                return  # closed already; nothing new starts, a pending timer gives up
        got = self._lock.acquire(timeout=CLOSE_LOCK_WAIT if power_down else 0.0)
        try:
            self.session.drop_card("the reader was closed")
            if got and power_down and not getattr(self.device, "closed", False):
                run_sync(self.device, self.session.power_down_steps("close"))
        finally:
            if got:
                self._lock.release()
        self.session.run_close_hooks(self)
        try:
            self.device.close()
        finally:
            self.session.emit("close")

    def __enter__(self) -> "Reader":
        return self

    def __exit__(self, exc_type: Optional[type[BaseException]],
                 exc: Optional[BaseException], tb: Optional[TracebackType]) -> None:
        self.close()

    def __del__(self) -> None:
        session = getattr(self, "session", None)
        t = session.timer if session is not None else None
        if t is not None:
            t.cancel()


def _power_down_timer_fired(ref: "weakref.ref[Reader]", token: int) -> None:
    reader = ref()
    if reader is not None:
        reader._timer_fired(token)


def _name_of(ref: "weakref.ref[Reader]") -> str:
    reader = ref()
    return reader.name if reader is not None else "reader"


#: The values of open_reader()'s *backend*.
BACKEND_CHOICES = ("auto", "direct", "pcsc")


def check_backend(backend: object) -> str:
    """*backend* when it is one of :data:`BACKEND_CHOICES`; ValueError
    naming them otherwise."""
    if not isinstance(backend, str) or backend not in BACKEND_CHOICES:
        raise ValueError(f"backend must be one of {', '.join(map(repr, BACKEND_CHOICES))}, "
                         f"got {backend!r}")
    return backend


class OpenedDevice(NamedTuple):
    """What :func:`open_backend_device` opened: the device, the descriptor
    (with ``pcsc_name`` filled in when the resource manager was asked while
    opening), the path taken ("direct" or "pcsc") and, for ``"auto"``, why."""

    device: Any
    descriptor: "ReaderDescriptor"
    backend: str
    reason: str


def open_device(descriptor: "ReaderDescriptor") -> Any:
    """Open the Device a descriptor names, directly (its driver, or on
    Windows its device path)."""
    from ._core import Device
    if "direct" not in descriptor.backends:
        from .discovery import ReaderNotFoundError
        raise ReaderNotFoundError(
            f"reader {descriptor.name!r} has no direct path: only the PC/SC resource "
            "manager knows it (open it with backend 'auto' or 'pcsc')",
            descriptor.name, [descriptor.name])
    if not descriptor.available:
        raise errors.DriverNotFoundError(
            f"reader {descriptor.name!r} is not available: "
            f"{descriptor.extra.get('problem', 'unknown reason')}")
    if descriptor.source == "win32":
        return Device.open_path(descriptor.device_name)
    return Device.open_ifd(descriptor.library, descriptor.device_name, descriptor.lun)


#: The core's status for "no reader of that name" (OBJECT_NAME_NOT_FOUND).
_NO_SUCH_READER = 0xC0000034


def open_pcsc_device(name: str, *, share: str = "shared",
                     close_timeout_ms: int = 0) -> "Device":
    """Open the reader the PC/SC resource manager calls *name*
    (:func:`scardio.pcsc.open_device`, which documents it)."""
    from ._core import Device, list_pcsc_readers
    try:
        return Device.open_pcsc(name, share=share, close_timeout_ms=close_timeout_ms)
    except errors.DriverNotFoundError as exc:
        if exc.status != _NO_SUCH_READER:
            raise
        from .discovery import ReaderNotFoundError
        try:
            known = list_pcsc_readers()
        except errors.ScardioError:
            known = []
        raise ReaderNotFoundError(f"{exc} (readers: {', '.join(map(repr, known)) or 'none'})",
                                  name, known) from None


def _with_pcsc_name(desc: "ReaderDescriptor") -> "ReaderDescriptor":
    """*desc* paired with the resource manager's listing now (its errors
    propagate: ResourceManagerNotRunningError, ...); ReaderNotFoundError
    when the resource manager does not list it."""
    if desc.pcsc_name is not None:
        return desc
    from .discovery import ReaderNotFoundError
    from .discovery.resource_manager import (pair_with_resource_manager,
                                             resource_manager_names)
    names = resource_manager_names()
    paired = pair_with_resource_manager([desc], names)[0]
    if paired.pcsc_name is None:
        raise ReaderNotFoundError(
            f"the PC/SC resource manager does not list {desc.name!r} (its readers: "
            f"{', '.join(map(repr, names)) or 'none'})", desc.name, names)
    return paired


def _open_pcsc(desc: "ReaderDescriptor") -> tuple[Any, "ReaderDescriptor"]:
    desc = _with_pcsc_name(desc)
    assert desc.pcsc_name is not None
    return open_pcsc_device(desc.pcsc_name), desc


def _known_holder(desc: "ReaderDescriptor") -> Optional[str]:
    """Why *desc* is known to be held, when the resource manager lists it
    and another process holds it; else None.  What a listing with
    ``check_busy`` found is used as it is ("the reader is held by pcscd (pid
    812)"); else the kernel is asked whether the reader's device or port is
    taken, without looking for the process (which would read every
    process's name on each open)."""
    if desc.pcsc_name is None:
        return None  # the resource manager is no way to it
    if "busy" in desc.extra:
        summary = desc.extra.get("busy_summary")
        return f"the reader is {summary if isinstance(summary, str) else 'held'}" \
            if desc.busy else None
    from .holders import check_readers
    usage = check_readers([(desc.library, desc.device_name, desc.lun)], find_holders=False)[0]
    if not usage.busy:
        return None
    return f"{usage.taken()} is taken and the resource manager lists the reader"


def open_backend_device(desc: "ReaderDescriptor", backend: str = "auto") -> OpenedDevice:
    """Open *desc* by *backend* (:data:`BACKEND_CHOICES`).

    ``"direct"`` loads its driver (ReaderInUseError when another process
    holds the reader; ReaderNotFoundError when it has no direct path);
    ``"pcsc"`` goes through the resource manager (ResourceManagerNotRunningError
    without one; ReaderNotFoundError when it does not list the reader);
    ``"auto"`` goes direct when it can, and through the resource manager
    when the reader has no direct path or the direct open finds the reader
    held (ReaderInUseError, or a channel that will not open while the
    resource manager lists the reader): the resource manager's failure is
    then raised, chained to the direct one.  A reader the resource manager
    lists and another process is known to hold (the listing's
    ``check_busy``, else :mod:`scardio.holders` asked now) is opened
    through the resource manager without trying its driver, which would
    only fail (and some drivers say so on stderr); the direct open is
    tried after all when that fails."""
    backend = check_backend(backend)
    if backend == "pcsc":
        device, desc = _open_pcsc(desc)
        return OpenedDevice(device, desc, "pcsc", "")
    if backend == "direct":
        return OpenedDevice(open_device(desc), desc, "direct", "")
    if "direct" not in desc.backends:
        device, desc = _open_pcsc(desc)
        return OpenedDevice(device, desc, "pcsc", "only the PC/SC resource manager knows it")
    holder = _known_holder(desc)
    if holder is not None:
        try:
            device, paired = _open_pcsc(desc)
        except (errors.ScardioError, LookupError):
            pass  # the direct open says why this reader cannot be had
        else:
            return OpenedDevice(device, paired, "pcsc",
                                f"{holder}: the direct open was not tried")
    try:
        return OpenedDevice(open_device(desc), desc, "direct", "the direct open succeeded")
    except errors.ChannelOpenError as exc:
        if desc.pcsc_name is None and not isinstance(exc, errors.ReaderInUseError):
            raise
        held: errors.ChannelOpenError = exc
    try:
        device, desc = _open_pcsc(desc)
    except (errors.ScardioError, LookupError) as exc:
        if desc.pcsc_name is None:
            raise held from None  # the resource manager does not have it either
        raise exc from held
    return OpenedDevice(device, desc, "pcsc", f"the direct open failed: {held}")


def open_reader_device(reader: Union["ReaderDescriptor", str, int] = 0, sim: int = 0, *,
                       power_down_timeout: Optional[float] = DEFAULT_POWER_DOWN_TIMEOUT,
                       readers: Optional[Iterable["ReaderDescriptor"]] = None,
                       trace: Optional[Callable[[TraceRecord], None]] = None,
                       backend: str = "auto",
                       **list_options: Any) -> OpenedDevice:
    """What both open_reader()s share: check the options, find the reader,
    open its device by *backend* (traced if asked)."""
    from .discovery import ReaderDescriptor, ReaderNotFoundError, find_reader, list_readers
    backend = check_backend(backend)
    check_power_down_timeout(power_down_timeout)  # before the driver is loaded
    if isinstance(reader, ReaderDescriptor):
        desc = reader
    else:
        if readers is not None:
            pool = list(readers)
        else:
            # A direct open never needs the resource manager: not asking it
            # cannot start a socket-activated pcscd.
            list_options.setdefault("pcsc", backend != "direct")
            pool = list_readers(sim, **list_options)
        try:
            desc = find_reader(reader, pool)
        except ReaderNotFoundError:
            if backend == "pcsc":
                # Say that there is no resource manager, when there is none.
                from .discovery.resource_manager import resource_manager_names
                resource_manager_names()
            raise
    opened = open_backend_device(desc, backend)
    if trace is not None:
        opened = opened._replace(device=TracingDevice(opened.device, trace))
    return opened


def open_reader(reader: Union["ReaderDescriptor", str, int] = 0, sim: int = 0, *,
                power_down_timeout: Optional[float] = DEFAULT_POWER_DOWN_TIMEOUT,
                readers: Optional[Iterable["ReaderDescriptor"]] = None,
                trace: Optional[Callable[[TraceRecord], None]] = None,
                backend: str = "auto",
                **list_options: Any) -> Reader:
    """Open a reader by descriptor, name or index (see
    :func:`scardio.discovery.find_reader`) and run the start-up sequence.

    `sim` adds that many simulated readers to the candidates; `readers`
    replaces discovery; `trace` receives a :class:`TraceRecord` per IOCTL;
    `backend` is "auto" (the default: direct when it can, else through the
    PC/SC resource manager), "direct" or "pcsc" (see
    :func:`open_backend_device`; ValueError for any other value); the path
    taken is ``Reader.backend``.  Other keywords go to
    :func:`scardio.discovery.list_readers`.
    Raises ReaderNotFoundError (a LookupError) when nothing matches."""
    opened = open_reader_device(reader, sim, power_down_timeout=power_down_timeout,
                                readers=readers, trace=trace, backend=backend,
                                **list_options)
    return Reader(opened.device, opened.descriptor, power_down_timeout=power_down_timeout,
                  backend=opened.backend, backend_reason=opened.reason)
