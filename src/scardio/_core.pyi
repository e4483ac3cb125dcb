"""Type stubs for the Cython binding over the scardio C core (native/scio.h)."""

from types import TracebackType
from typing import Any, Callable, Iterator, Optional, Sequence, TypeVar, Union

from .apdu import ApduLike
from .sequences.transmit import Response

from typing_extensions import Self  # stubs are never imported at run time

_T = TypeVar("_T")

# Limits and defaults mirrored from scio.h.
MAX_INPUT: int
MAX_OUTPUT: int
MAX_ATR: int
MAX_APDU: int
MAX_RESPONSE: int
DEFAULT_POLL_MS: int
DEFAULT_CLOSE_MS: int
#: The loops Device.run_loop() runs, and the decisions their trails record.
LOOP_CONNECT: int
LOOP_POWER_DOWN: int
LOOP_TRAIL: dict[str, int]
STATUS_PENDING: int
MAX_DWORD: int  # 0xFFFFFFFF: LUNs, IOCTL codes and option values are DWORDs

def status_name(status: int) -> Optional[str]:
    """ValueError unless 0 <= status <= MAX_DWORD."""
def list_device_paths() -> list[str]: ...
def list_pcsc_readers() -> list[str]:
    """The PC/SC resource manager's reader names.  Raises
    scardio.errors.ResourceManagerNotRunningError without a resource manager,
    DriverNotFoundError without a PC/SC client library."""

class PcscReaderWatch:
    """The PC/SC resource manager's reader-list changes (PnP notification)."""
    def wait(self, timeout: Optional[float] = None, known: int = 0) -> Optional[int]: ...
    def wake(self) -> None: ...
    def close(self) -> None: ...
    @property
    def closed(self) -> bool: ...
    def __enter__(self) -> Self: ...
    def __exit__(self, *exc: object) -> None: ...

def set_driver_log(callback: Optional[Callable[[int, str], None]]) -> None: ...
def bytes_callback(fn: Callable[[int, bytes], Union[bytes, int]]) -> tuple[int, int, int]:
    """(call, release, ctx) C function-pointer addresses that call
    fn(op, data) from C; release(ctx) drops the reference taken to fn.
    TypeError unless fn is callable."""

class Operation:
    """An overlapped IOCTL.  Completes into its device's completion queue.
    Made by Device.submit() only (Operation() raises TypeError).  In a child
    of fork() every method raises InvalidStateError."""

    @property
    def id(self) -> int: ...
    code: int
    device: "Device"
    def done(self) -> bool: ...
    def wait(self, timeout: Optional[float] = None) -> bytes:
        """Block (GIL released) until complete; return the output or raise the
        typed error.  Raises scardio.errors.TimeoutError (the operation stays
        pending) when `timeout` seconds pass first (None or inf: no timeout;
        ValueError if negative or NaN).  Ctrl-C cancels it and propagates."""
    def result(self) -> bytes:
        """Output of a completed operation, or its typed error; raises
        scardio.errors.InvalidStateError while still pending."""
    @property
    def status(self) -> int: ...  # SCIO_PENDING (0x103) while pending
    def cancel(self) -> None: ...

def run_loop_on(device: Any, loop: Any, deadline: Optional[float] = None) -> Any:
    """scardio.runner.run_loop."""
def reader_connect(reader: Any, protocols: int, timeout: Optional[float], max_steps: int,
                   auto_get_response: bool, auto_resend: bool, share: Optional[str]) -> Any:
    """Reader.connect()."""
def loop_outcome(raw: bytes) -> tuple[bool, Any, Optional[bytes]]:
    """What run_loop() answers, from a submit_loop() operation's result()."""


class Device:
    """A reader device.  In a child of fork() every method of an inherited
    device raises InvalidStateError but close(), which is immediate."""
    @classmethod
    def open_ifd(cls, library: str, device_name: str = "", lun: int = 0, *,
                 poll_interval_ms: int = 0, close_timeout_ms: int = 0) -> "Device":
        """`lun`, `poll_interval_ms`, `close_timeout_ms` (0: defaults): ValueError
        outside 0..MAX_DWORD, naming the argument and its range.  ValueError
        if `library` or `device_name` contains a NUL character."""
    @classmethod
    def open_path(cls, path: str) -> "Device":
        """ValueError if `path` contains a NUL character."""
    @classmethod
    def open_pcsc(cls, reader: str, *, share: str = "shared",
                  close_timeout_ms: int = 0) -> "Device":
        """A reader the PC/SC resource manager holds, by name.  `share`:
        "shared" or "exclusive" (ValueError otherwise); TypeError unless
        `reader` is a str; ValueError if it contains a NUL character."""
    @property
    def closed(self) -> bool: ...
    library: str
    device_name: str
    #: The share mode connections get unless they ask for another
    #: (SET_SHARE_MODE): open_pcsc's `share`; "exclusive" for a direct reader.
    share: str
    lun: int
    def ioctl(self, code: int, input: bytes = b"", output_size: int = 0) -> bytes:
        """Synchronous IOCTL (GIL released).  Raises a scardio.errors type;
        ValueError unless 0 <= code <= MAX_DWORD and output_size >= 0."""
    def submit(self, code: int, input: bytes = b"", output_size: int = 0) -> Operation:
        """Overlapped IOCTL; arguments checked as ioctl()'s."""
    def wait_tracking(self, code: int, timeout: Optional[float] = None) -> None:
        """IS_PRESENT / IS_ABSENT to completion, waiting at most `timeout`
        seconds (None or inf: no limit; then TimeoutError, the request
        cancelled): in the calling thread (in the main thread in slices
        between which Ctrl-C raises), where the backend can bound its
        tracking wait; else on the
        tracking lane.  DeviceBusyError: another tracking request is
        pending; CancelledError: cancel_all() or close() ended it; ValueError
        for another code."""
    def ioctl_on_lane(self, code: int, input: bytes = b"", output_size: int = 0,
                      timeout: Optional[float] = None) -> bytes:
        """ioctl() run on the device's I/O lane while the caller waits at
        most `timeout` seconds (GIL released): then TimeoutError (status
        STATUS_PENDING), the IOCTL left to finish unwaited."""
    def lane_apart(self) -> bool:
        """Whether a bounded sequence costs least one ioctl_on_lane() per
        IOCTL (the lane thread runs on another processor and both spin)
        rather than as one call_on_lane()."""
    def call_on_lane(self, fn: Callable[[], _T], timeout: Optional[float] = None) -> _T:
        """Run fn() on the device's I/O lane thread (after the overlapped
        IOCTLs submitted before it) and return its result or raise its
        exception, waiting at most `timeout` seconds (GIL released): then
        TimeoutError, and fn runs on unwaited."""
    def run_loop(self, kind: int, protocols: int, max_steps: int,
                 timeout: Optional[float] = None) -> tuple[bool, Any, Optional[bytes]]:
        """A loop of the spec (LOOP_CONNECT, LOOP_POWER_DOWN) run by the
        core, ordinary answers only: (True, atr, trail) once done so, else
        (False, steps, None) with each step (code, input, status,
        driver_code, output) for the caller's sequence to replay.
        `timeout` None: in the calling thread; else on the I/O lane, waited
        for at most `timeout` seconds (then TimeoutError, status
        STATUS_PENDING)."""
    def submit_loop(self, kind: int, protocols: int, max_steps: int,
                    timeout: Optional[float] = None) -> Operation:
        """run_loop() overlapped: an Operation completing into the queue,
        whose result() loop_outcome() reads."""
    def fileno(self) -> int:
        """Descriptor readable while completions wait; see harvest().  -1 on
        Windows (use waitable())."""
    def waitable(self) -> int:
        """The completion queue's waitable, signalled exactly while
        completions (or a wake()) wait to be harvested: on POSIX the
        descriptor of fileno() (select, poll, loop.add_reader), on Windows an
        event HANDLE (WaitForSingleObject / WaitForMultipleObjects).  Owned
        by the device; valid until close().  Raises ClosedError once closed."""
    def wake(self) -> None:
        """Signal the waitable until the next harvest() consumes the wake-up
        (that harvest returns what completed, possibly nothing)."""
    def harvest(self, timeout: Optional[float] = 0.0) -> list[Operation]:
        """Pop the operations completed since the last harvest (waits up to
        `timeout` seconds for the first one, a wake() or Ctrl-C; None or inf:
        no timeout; ValueError if negative or NaN)."""
    def cancel_all(self) -> None: ...
    def close(self) -> None:
        """Cancel every pending operation, wait for them, release the driver."""
    def __enter__(self) -> Self: ...
    def __exit__(self, exc_type: Optional[type[BaseException]],
                 exc: Optional[BaseException], tb: Optional[TracebackType]) -> None: ...

class CompletionQueue:
    """A completion queue of its own: operations submitted through it
    complete here, and dispatch() calls their callbacks.  submit() and
    dispatch() belong to one thread; wake() to any."""
    def submit(self, device: Device, code: int,
               callback: Callable[[Operation], object],
               herald: Optional[Herald] = None) -> Operation: ...
    def unwatch(self, op: Operation) -> None: ...
    def wake(self) -> None: ...
    def pending(self) -> int: ...
    def waitable(self) -> int: ...
    def dispatch(self, timeout: Optional[float] = None) -> int: ...

class Herald:
    """An event made before its tracking request went out, and what a
    TrackingSet or CompletionQueue tells first when the request succeeded:
    the reader's session (note_presence), then the event stamped
    (timestamp, seq) and handed to the callbacks, then after(event)."""
    @classmethod
    def for_event(cls, event: object, session: SessionBase, present: bool,
                  seq: Iterator[int], callbacks: list[Any],
                  after: Optional[Callable[[Any], object]] = None) -> Herald: ...
    @property
    def event(self) -> object: ...
    @property
    def ran(self) -> bool: ...

class TrackingSet:
    """The tracking requests of many devices, waited for together in the
    calling thread (one driver call over all of them); dispatch() calls
    their callbacks.  submit() and dispatch() belong to one thread; wake()
    to any."""
    @classmethod
    def for_device(cls, device: Device) -> TrackingSet: ...
    @property
    def capacity(self) -> int: ...
    def accepts(self, device: Device) -> bool: ...
    def submit(self, device: Device, code: int,
               callback: Callable[[Operation], object],
               herald: Optional[Herald] = None) -> Operation: ...
    def unwatch(self, op: Operation) -> None: ...
    def wake(self) -> None: ...
    def pending(self) -> int: ...
    def dispatch(self, timeout: Optional[float] = None) -> int: ...
    def close(self) -> None: ...
    @property
    def closed(self) -> bool: ...

class ReaderLock:
    """A reentrant lock with threading.RLock's interface, taken by the
    binding without a Python call (a Reader's lock)."""

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        """As RLock.acquire; ValueError for a timeout with blocking false, or
        a negative one other than -1; OverflowError past PY_TIMEOUT_MAX."""
    def release(self) -> None:
        """RuntimeError unless the calling thread holds the lock."""
    def _is_owned(self) -> bool: ...
    def __enter__(self) -> bool: ...
    def __exit__(self, exc_type: Optional[type[BaseException]],
                 exc: Optional[BaseException], tb: Optional[TracebackType]) -> None: ...

class SessionBase:
    """The base of scardio.session.ReaderSession: what every connect and
    disconnect reads and changes (ReaderSession documents it)."""

    closed: bool
    card: Any
    timer: Any
    _timer_token: int
    _listeners: list[Callable[[Any], None]]
    _share_set: Optional[int]
    _share_in_force: int
    transaction: Any
    _power_down_timeout: Optional[float]
    present: Optional[bool]
    _presence_waiters: list[Callable[[bool], None]]
    _presence_lock: Any
    def begin_connect(self, share: Optional[str] = None) -> tuple[float, Optional[int]]: ...
    def finish_connect(self, conn: Any, card: _T, started: float) -> _T: ...
    def release_card(self, card: Any, disposition: int) -> Optional[float]: ...
    def disconnect_needs_io(self, disposition: int) -> bool: ...
    def arm_timer(self, schedule: Callable[[float, int], Any], delay: float) -> None: ...
    def cancel_timer(self, why: str) -> None: ...
    def note_presence(self, present: bool) -> None:
        """A monitor saw an arrival (True) or a departure (False): the
        presence recorded, a departed card dropped."""
    def tell_presence_waiters(self, present: bool) -> None:
        """The waiters following a monitor (after its next request is out)."""

class CardBase:
    """The base of scardio.card.Card: the attributes its transmit fast path
    reads, and that path."""

    reader: Any
    protocol: int
    _gone: Optional[str]
    _header: bytes
    atr_bytes: bytes
    atr: Any
    atr_error: Any
    connect_actions: list[str]
    auto_get_response: bool
    auto_resend: bool
    _share: Optional[str]
    def _init(self, reader: Any, atr: bytes, protocol: int, actions: Optional[Sequence[str]],
              auto_get_response: bool, auto_resend: bool) -> None:
        """Card.__init__: every field set, the ATR parsed once per ATR bytes."""
    def _mark_gone(self, why: str) -> None:
        """The card is dead; the first reason given is kept."""
    def _release(self, disposition: int) -> None:
        """Card.disconnect() with a checked Disposition."""
    def transmit(self, apdu: ApduLike, *, auto_get_response: Optional[bool] = None,
                 auto_resend: Optional[bool] = None,
                 timeout: Optional[float] = None) -> Response:
        """A short APDU as bytes with no options runs in the binding; every
        other call in Card._transmit_py."""
