"""Readers held by the PC/SC resource manager (pcscd on Linux and the BSDs,
the Smart Card service on Windows, macOS's own daemon), reached through its
client library, loaded at run time.

A device opened here speaks the same IOCTL contract as a reader opened
directly, so :class:`scardio.Reader` (connect loop, power-down timer,
tracing), :class:`scardio.monitor.Monitor` and the asyncio runtime run over
it unchanged.  What differs is who powers the card: the resource manager
does, when a client connects (see docs/architecture.md, "PC/SC")::

    from scardio import pcsc

    for name in pcsc.list_readers():
        print(name)
    with pcsc.open_reader("Virtual PCD 00 00") as reader:
        card = reader.connect()
        print(card.transmit(bytes.fromhex("00A4040000")))

Readers appearing and going away (hotplug): a :class:`ReaderListWatch` is a
:class:`scardio.monitor.Monitor`'s *reader_list*, so that the monitor
watches every reader the resource manager holds, with ``reader-added`` and
``reader-removed`` events::

    from scardio import Monitor, pcsc

    with Monitor(reader_list=pcsc.ReaderListWatch()) as mon:
        for event in mon.events(timeout=60):
            print(event.kind, event.reader.name)
"""

from __future__ import annotations

import threading
from typing import Callable, Optional

from . import errors
from ._core import Device, PcscReaderWatch, list_pcsc_readers
from .reader import Reader, open_pcsc_device
from .sequences.sharing import SHARE_MODES
from .session import DEFAULT_POWER_DOWN_TIMEOUT, check_power_down_timeout
from .tracing import TraceRecord, TracingDevice

__all__ = ["SHARE_MODES", "ReaderListWatch", "list_readers", "open_device", "open_reader"]


def list_readers() -> list[str]:
    """The names of the readers the resource manager holds, in its order
    (empty when it has none).

    Raises :class:`scardio.errors.ResourceManagerNotRunningError` when the
    resource manager is not running, and
    :class:`scardio.errors.DriverNotFoundError` when no PC/SC client library
    is installed."""
    return list_pcsc_readers()


def open_device(name: str, *, share: str = "shared", close_timeout_ms: int = 0) -> Device:
    """Open the reader the resource manager calls `name`.

    `share` ("shared" or "exclusive") is how card connections are shared
    with other clients.  Raises :class:`scardio.discovery.ReaderNotFoundError`
    (a LookupError) when no reader has that name, and the errors of
    :func:`list_readers` when the resource manager cannot be reached."""
    return open_pcsc_device(name, share=share, close_timeout_ms=close_timeout_ms)


def open_reader(name: str, *, share: str = "shared",
                power_down_timeout: Optional[float] = DEFAULT_POWER_DOWN_TIMEOUT,
                trace: Optional[Callable[[TraceRecord], None]] = None) -> Reader:
    """Open the reader the resource manager calls `name` and run the
    start-up sequence: a :class:`scardio.Reader` named `name`.

    `trace` receives a :class:`scardio.tracing.TraceRecord` per IOCTL;
    `power_down_timeout` is as for :func:`scardio.open_reader`."""
    check_power_down_timeout(power_down_timeout)
    device: object = open_device(name, share=share)
    if trace is not None:
        device = TracingDevice(device, trace)
    return Reader(device, power_down_timeout=power_down_timeout, name=name, backend="pcsc")


class ReaderListWatch:
    """The resource manager's reader list as a monitor's *reader_list*
    (:class:`scardio.monitor.ReaderList`): :meth:`wait_change` blocks on
    the ``\\\\?PnP?\\Notification`` pseudo reader (pcsc-lite, Windows and
    macOS all have it) on a context of its own, and readers that appear are
    opened with this watch's `share`, `power_down_timeout` and `trace`.

    pcsc-lite (1.9) reports a change of the reader count made during a
    wait, not one made since the caller's last listing: so each second
    without a notification the readers are counted again, and a change in
    the moment between a listing and the next wait shows within a second
    (one reader going and another coming in between shows at the next
    change).  Where the resource manager has no PnP pseudo reader the list
    is read once a second instead.  Raises the errors of :func:`list_readers` when
    the resource manager cannot be reached."""

    #: Seconds between listings where there is no PnP pseudo reader.
    POLL_INTERVAL = 1.0

    def __init__(self, *, share: str = "shared",
                 power_down_timeout: Optional[float] = DEFAULT_POWER_DOWN_TIMEOUT,
                 trace: Optional[Callable[[TraceRecord], None]] = None) -> None:
        if share not in SHARE_MODES:
            raise ValueError(f"share must be one of {SHARE_MODES}, not {share!r}")
        check_power_down_timeout(power_down_timeout)
        self._share = share
        self._power_down_timeout = power_down_timeout
        self._trace = trace
        self._watch = PcscReaderWatch()
        self._woken = threading.Event()

    def names(self) -> list[str]:
        """The resource manager's readers now (:func:`list_readers`)."""
        return list_readers()

    def wait_change(self, known: int) -> None:
        """Until the reader list changes or :meth:`wake` is called."""
        known = min(max(known, 0), 0xFFFF)
        while True:
            try:
                if self._watch.wait(self.POLL_INTERVAL, known) is not None:
                    return
            except errors.NotSupportedError:
                self._woken.wait(self.POLL_INTERVAL)
            if self._woken.is_set():
                self._woken.clear()
                return
            if len(list_readers()) != known:
                return

    def wake(self) -> None:
        """End a running :meth:`wait_change` (any thread)."""
        self._woken.set()
        self._watch.wake()

    def open(self, name: str) -> Reader:
        """Open a reader that appeared, with this watch's options."""
        return open_reader(name, share=self._share,
                           power_down_timeout=self._power_down_timeout, trace=self._trace)

    def close(self) -> None:
        """Stop watching (a running wait ends); idempotent."""
        self._woken.set()
        self._watch.close()

    def __enter__(self) -> "ReaderListWatch":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
