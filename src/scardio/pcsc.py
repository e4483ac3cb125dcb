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
"""

from __future__ import annotations

from typing import Callable, Optional

from ._core import Device, list_pcsc_readers
from .reader import Reader, open_pcsc_device
from .session import DEFAULT_POWER_DOWN_TIMEOUT, check_power_down_timeout
from .tracing import TraceRecord, TracingDevice

__all__ = ["SHARE_MODES", "list_readers", "open_device", "open_reader"]

#: How a device's card connections are shared with other clients.
SHARE_MODES = ("shared", "exclusive")


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
