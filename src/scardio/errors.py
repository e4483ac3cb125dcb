"""Typed exceptions.  Every failure of the core maps to one class here.

Each error carries ``status`` (the core's NTSTATUS-style code), its
``status_name``, the ``driver_code`` the driver returned when there was one
(an ``IFD_*`` code for IFD handlers, a Win32 error on Windows), and the
``ioctl`` code of the failed request when it came from one.

Status names are the C core's own (``scardio._core.status_name``, from
native/core/status.c).  The binding raises these errors, so it imports this
module and not the reverse: it hands its ``status_name`` over with
:func:`use_status_names` when it loads.
"""

from __future__ import annotations

import builtins

TYPE_CHECKING = False  # typing costs more to import than this whole module
if TYPE_CHECKING:
    from collections.abc import Callable

    from .holders import Holder

__all__ = [
    "ScardioError", "NoCardError", "TimeoutError", "CancelledError",
    "DeviceBusyError", "ReaderInUseError", "NotSupportedError",
    "InvalidRequestError", "InvalidParameterError", "InputTooLargeError",
    "BufferTooSmallError", "InvalidStateError", "ReentryError", "DriverError",
    "DriverDataError", "UnrecognizedCardError", "DeviceGoneError",
    "ClosedError", "ResourceManagerNotRunningError", "DriverLoadError", "DriverNotFoundError", "NotADriverError",
    "MissingEntryPointError", "ChannelOpenError", "error_for_status", "status_name",
    "use_status_names",
]


def _no_names(status: int) -> str | None:
    return None


_core_status_name: Callable[[int], str | None] = _no_names


def use_status_names(namer: Callable[[int], str | None]) -> None:
    """Take status names from `namer` (the binding's ``status_name``: the
    core's short name of a status, or None for one it does not know)."""
    global _core_status_name
    _core_status_name = namer


def status_name(status: int) -> str:
    """The core's short name of a status ("NO_MEDIA"), else its hex form."""
    name = _core_status_name(status) if 0 <= status <= 0xFFFFFFFF else None
    return name if name is not None else f"0x{status:08X}"


class ScardioError(Exception):
    """Base class of every scardio error."""

    status: int = 0xC0000001

    def __init__(self, message: str, *, status: int | None = None,
                 driver_code: int = 0, ioctl: int | None = None) -> None:
        super().__init__(message)
        if status is not None:
            self.status = status
        self.driver_code = driver_code
        self.ioctl = ioctl

    @property
    def status_name(self) -> str:
        return status_name(self.status)


class NoCardError(ScardioError):
    """No card in the reader (or it was removed during the call)."""
    status = 0xC0000178


class TimeoutError(ScardioError, builtins.TimeoutError):
    """The driver or a wait timed out."""
    status = 0xC00000B5


class CancelledError(ScardioError):
    """The request was cancelled (cancel(), close(), Ctrl-C)."""
    status = 0xC0000120


class DeviceBusyError(ScardioError):
    """A tracking request (IS_PRESENT / IS_ABSENT) is already pending."""
    status = 0x80000011


class NotSupportedError(ScardioError):
    """The reader, driver or card does not support this."""
    status = 0xC00000BB


class InvalidRequestError(ScardioError, ValueError):
    """Unknown IOCTL code."""
    status = 0xC0000010


class InvalidParameterError(ScardioError, ValueError):
    """Malformed input buffer."""
    status = 0xC000000D


class InputTooLargeError(InvalidParameterError):
    """Input larger than the IOCTL contract allows."""
    status = 0xC0000206


class BufferTooSmallError(ScardioError):
    """The output buffer cannot hold the result."""
    status = 0xC0000023


class InvalidStateError(ScardioError):
    """The card is not in a state that allows this request."""
    status = 0xC0000184


class ReentryError(ScardioError):
    """A call on a reader made from inside one of its own driver calls (a
    driver log callback that uses the reader whose driver is logging, for
    instance): the reader is busy with the call that logs, so this one is
    refused rather than left waiting for good."""
    status = 0xC0000194


class DriverError(ScardioError):
    """The driver failed the call; ``driver_code`` says how."""
    status = 0xC0000185


class DriverDataError(DriverError):
    """The driver returned data that cannot be trusted (e.g. a length
    larger than the buffer it was given)."""
    status = 0xC000009C


class UnrecognizedCardError(ScardioError):
    """The card answered with no usable ATR."""
    status = 0xC0000014


class DeviceGoneError(ScardioError):
    """The reader is no longer connected."""
    status = 0xC000009D


class ClosedError(DeviceGoneError):
    """The device or reader has been closed."""


class ResourceManagerNotRunningError(DeviceGoneError):
    """The PC/SC resource manager (pcscd, the Smart Card service) is not
    running, or stopped while a reader was open through it."""
    status = 0xE0000001


class DriverLoadError(ScardioError, OSError):
    """The driver could not be loaded or its channel opened."""
    status = 0xC0000001


class DriverNotFoundError(DriverLoadError):
    status = 0xC0000135


class NotADriverError(DriverLoadError):
    """The file is not a loadable library."""
    status = 0xC000007B


class MissingEntryPointError(DriverLoadError):
    """The library does not export the IFD-handler entry points."""
    status = 0xC0000139


class ChannelOpenError(DriverLoadError):
    """The driver could not open the reader's channel."""
    status = 0xC000000E


class ReaderInUseError(DeviceBusyError, ChannelOpenError):
    """Another owner holds the reader exclusively: another process (pcscd,
    most often; the message names it where it can be found, and says how to
    free the reader) or another open Device of this process.

    ``holders`` lists the processes found holding it (or, when their
    descriptors could not be read, the known holders that are running), as
    :class:`scardio.holders.Holder`; it is empty when none was found."""
    status = 0xC0000043
    holders: tuple["Holder", ...] = ()


_CLASS_FOR_STATUS: dict[int, type[ScardioError]] = {
    cls.status: cls
    for cls in (NoCardError, TimeoutError, CancelledError, DeviceBusyError,
                ReaderInUseError, NotSupportedError, InvalidRequestError,
                InvalidParameterError, InputTooLargeError, BufferTooSmallError,
                InvalidStateError, ReentryError, DriverError, DriverDataError,
                UnrecognizedCardError, DeviceGoneError, ResourceManagerNotRunningError,
                DriverNotFoundError,
                NotADriverError, MissingEntryPointError, ChannelOpenError)
}
_CLASS_FOR_STATUS[0xC0000034] = DriverNotFoundError  # OBJECT_NAME_NOT_FOUND
_CLASS_FOR_STATUS[0xC0000001] = DriverError  # UNSUCCESSFUL


def error_for_status(status: int, message: str = "", *, driver_code: int = 0,
                     ioctl: int | None = None) -> ScardioError:
    """The exception instance for a failed status (not raised)."""
    cls = _CLASS_FOR_STATUS.get(status, ScardioError)
    name = status_name(status)
    if not message and cls is ResourceManagerNotRunningError:
        message = "the PC/SC resource manager is not running (or it stopped)"
    elif not message and cls is ReaderInUseError:
        message = "another client holds the reader exclusively"
    text = message or name
    if ioctl is not None:
        from .constants import ioctl_name
        text = f"{ioctl_name(ioctl)}: {text}"
    if message and name not in message:
        text = f"{text} [{name}]"
    if driver_code:
        text = f"{text} (driver code {driver_code})"
    return cls(text, status=status, driver_code=driver_code, ioctl=ioctl)
