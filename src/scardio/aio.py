"""asyncio front end: the same sequences, driven by overlapped IOCTLs.

Every IOCTL is submitted with ``Device.submit`` and awaited on a future; the
futures are settled from the device's completion waitable
(``Device.waitable()``).  On POSIX it is a descriptor, watched with
``loop.add_reader`` on the running loop: no thread at all, the loop's own
selector waits on the core's eventfd or pipe.  On Windows it is an event
handle, and one :class:`scardio.waiting.HandleWatcher` thread per reader and
loop (never one per call) waits on it and hands the harvest to the loop;
this works the same under the default proactor loop and a selector loop.
Every IOCTL goes overlapped, GET_STATE included: the loop never calls a
driver, so it never waits for a card round trip another call is making
(docs/architecture.md says why nothing completes inline).  uvloop works
as any other loop.

>>> import asyncio, scardio.aio
>>> from scardio.sim import SimControl
>>> async def main():
...     async with await scardio.aio.open_reader("scardio Simulated Reader 0",
...                                              sim=1) as reader:
...         SimControl(reader.device).insert()  # the simulated reader's test hook
...         await reader.wait_for_card(timeout=5)
...         async with await reader.connect() as card:
...             response = await card.transmit("00 A4 04 00 08 F07363617264696F")
...             print(card.protocol_name, hex(response.sw))
>>> asyncio.run(main())
T=1 0x9000

An :class:`AsyncReader` runs the same state machine as the blocking
:class:`scardio.reader.Reader` it wraps (their ``session``,
:class:`scardio.session.ReaderSession`): the card connected, the timer
armed and the events emitted through one are those of the other.  Both
have the same public surface with the same meaning, and so do
:class:`AsyncCard` and :class:`scardio.card.Card`, :class:`AsyncMonitor`
and :class:`scardio.monitor.Monitor`; the methods that run IOCTLs are
coroutines here.  The names only the asyncio classes have are
:data:`ASYNC_ONLY`.  Drive one reader from one loop (or one thread) at a
time: each front end serializes its own calls only.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import threading
import time
import weakref
from types import TracebackType
from typing import Any, AsyncIterator, Callable, Iterable, Optional, TypeVar, Union

from . import errors, waiting
from ._core import loop_outcome
from .apdu import ApduLike, check_length, to_apdu_bytes
from .card import Card, TransactionError
from .constants import IOCTL, Protocol, State
from .monitor import (ARRIVAL, DEPARTURE, ERROR, READER_ADDED, READER_REMOVED, CardEvent,
                      ReaderList, Tracker, _Hotplug, _ListWatcher)
from .recording import PathOrFile, Recorder
from .reader import CLOSE_LOCK_WAIT, Reader, SessionFront, open_reader_device
from .runner import run_sync
from .sequences import U32, Loop, LoopSteps, Steps, decode_state, replayed
from .sequences.connect import CONNECT_MAX_STEPS, Connected
from .sequences.disconnect import Disposition, DispositionLike, disposition_value
from .sequences.startup import startup_steps
from .sequences.transmit import (IO_HEADER, MAX_OUT, SHORT_OUT, Response, follow_up_steps,
                                 split_response, transmit_steps)
from .session import (DEFAULT_CONNECT_TIMEOUT, DEFAULT_POWER_DOWN_TIMEOUT, check_timeout,
                      deadline_after)

__all__ = ["AsyncReader", "AsyncCard", "AsyncTransaction", "AsyncMonitor", "open_reader",
           "ASYNC_ONLY"]

#: Public names of the asyncio classes that their blocking twins lack:
#: ``aclose`` (close with the power-down run on the loop) and
#: ``AsyncReader.reader`` (the blocking Reader it runs the session of).
#: Everything else is common (tests/test_surfaces.py checks it).
ASYNC_ONLY = frozenset({"aclose", "reader"})

T = TypeVar("T")

_TRANSMIT = int(IOCTL.TRANSMIT)
_GET_STATE = int(IOCTL.GET_STATE)
_GET_ATTRIBUTE = int(IOCTL.GET_ATTRIBUTE)
_SHORTEST_OUT = IO_HEADER + 2  # the I/O header and SW1 SW2
# A NamedTuple's __new__ is a Python function packing its arguments: the
# tuple built directly, as split_response does.
_new_tuple = tuple.__new__


class _ReaderLock:
    """The asyncio reader's lock: asyncio.Lock's surface as AsyncReader uses
    it (``acquire``, ``release``, ``locked``, ``async with``; FIFO) plus
    :meth:`try_acquire`, which takes a free lock without a coroutine: the
    per-APDU path pays for a coroutine only when it has to wait.

    The lock passes from :meth:`release` straight to the first waiter
    still waiting (it stays held throughout), so no task can slip in
    between; hence a lock that is not held has no waiters, and taking it
    at once never overtakes one."""

    __slots__ = ("_held", "_waiters")

    def __init__(self) -> None:
        self._held = False
        self._waiters: "collections.deque[asyncio.Future[None]]" = collections.deque()

    def locked(self) -> bool:
        return self._held

    def try_acquire(self) -> bool:
        """Take the lock if it is free; False if it is held."""
        if self._held:
            return False
        self._held = True
        return True

    async def acquire(self) -> bool:
        if not self._held:
            self._held = True
            return True
        fut: "asyncio.Future[None]" = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            await fut
        except BaseException:
            if fut.done() and not fut.cancelled():
                self.release()  # handed over just as we were cancelled: pass it on
            else:
                try:
                    self._waiters.remove(fut)
                except ValueError:  # release() dropped it already
                    pass
            raise
        return True

    def release(self) -> None:
        if not self._held:
            raise RuntimeError("Lock is not acquired.")
        waiters = self._waiters
        while waiters:
            fut = waiters.popleft()
            if not fut.done():  # a cancelled waiter is skipped
                fut.set_result(None)  # its owner now; still held
                return
        self._held = False

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(self, exc_type: Optional[type[BaseException]],
                        exc: Optional[BaseException], tb: Optional[TracebackType]) -> None:
        self.release()


class _LoopLink:
    """One reader's completion waitable watched for one loop, shared by
    every AsyncReader / AsyncMonitor using it (add_reader allows one
    callback per descriptor; a handle needs one watcher thread only)."""

    _links: dict[tuple[int, int], "_LoopLink"] = {}
    _guard = threading.Lock()

    def __init__(self, loop: asyncio.AbstractEventLoop, reader: Reader) -> None:
        self.loop = loop
        self.reader = reader
        self.refs = 0
        self.thread = threading.get_ident()
        self.fd = -1
        self.watcher: Optional[waiting.HandleWatcher] = None
        # Operations awaited through this link: op id -> (op, future).
        self._pending: dict[int, tuple[Any, "asyncio.Future[None]"]] = {}
        # What watch() calls per operation, looked up once.
        self._new_future = loop.create_future
        self._completions = reader.completions
        self._completions_watch = reader.completions.watch
        self._done_callback = self._op_done
        api = waiting.handle_api()
        if api is None:
            self.fd = reader.device.waitable()
            loop.add_reader(self.fd, self._harvest)
        else:
            self.watcher = waiting.HandleWatcher(api, reader.device.waitable(),
                                                 self._signalled, reader.name)
        reader.add_close_hook(self._closing)

    def _signalled(self, harvested: Callable[[], None]) -> bool:
        # On the watcher thread: harvest on the loop, then let it wait again.
        def harvest() -> None:
            try:
                self._harvest()
            finally:
                harvested()
        try:
            self.loop.call_soon_threadsafe(harvest)
        except RuntimeError:  # the loop is closed: nobody will harvest
            return False
        return True

    @classmethod
    def acquire(cls, reader: Reader) -> "_LoopLink":
        loop = asyncio.get_running_loop()
        key = (id(loop), id(reader))
        with cls._guard:
            link = cls._links.get(key)
            if link is None:
                link = cls._links[key] = _LoopLink(loop, reader)
            link.refs += 1
        return link

    def release(self) -> None:
        with self._guard:
            self.refs -= 1
            if self.refs > 0:
                return
        self._detach()

    def _detach(self) -> None:
        with self._guard:
            self._links.pop((id(self.loop), id(self.reader)), None)
        self.reader.remove_close_hook(self._closing)
        self._fail_pending()
        if self.watcher is not None:
            self.watcher.stop()
        if self.fd >= 0 and not self.loop.is_closed():
            try:
                self.loop.remove_reader(self.fd)
            except (ValueError, OSError, RuntimeError):
                pass
            self.fd = -1

    def _closing(self, reader: Reader) -> None:
        # The descriptor must leave the loop's selector before it is closed.
        self._detach()

    def settle(self, callback: Callable[[], None]) -> None:
        """Run `callback` on the loop: directly when the completion was
        harvested there (the usual case), else thread-safely."""
        if threading.get_ident() == self.thread:
            callback()
        elif not self.loop.is_closed():
            self.loop.call_soon_threadsafe(callback)

    def watch(self, op: Any) -> "asyncio.Future[None]":
        """A future settled (with None) on the loop once `op` completed."""
        fut: "asyncio.Future[None]" = self._new_future()
        # Entered before the watch: a completion seen at once settles it.
        self._pending[op.id] = (op, fut)
        self._completions_watch(op, self._done_callback)
        return fut

    def unwatch(self, op: Any) -> None:
        self._pending.pop(op.id, None)
        self.reader.completions.unwatch(op)

    def _harvest(self) -> None:
        """The loop's harvest of the reader's queue, on the loop.  This
        link's own operations settle their futures here directly: a future's
        set_result only schedules its awaiter, so it cannot watch again
        and needs no trampoline.  Everything else watched (a Monitor's
        tracking requests, another link's operations) runs through the
        dispatcher as from any harvest."""
        completions = self._completions
        entries = completions.take(0.0)
        if not entries:
            return
        mine = self._done_callback
        pending = self._pending
        others = None
        for entry in entries:
            if entry[1] is mine:
                found = pending.pop(entry[0].id, None)
                if found is not None and not found[1].done():
                    found[1].set_result(None)
            elif others is None:
                others = [entry]
            else:
                others.append(entry)
        if others is not None:
            completions.run(others)

    def _op_done(self, op: Any) -> None:
        # The completion callback, on whichever thread harvested: one bound
        # method for every operation, no closure per call.
        if threading.get_ident() != self.thread:
            if not self.loop.is_closed():
                try:
                    self.loop.call_soon_threadsafe(self._op_done, op)
                except RuntimeError:  # closed meanwhile: nobody awaits
                    pass
            return
        entry = self._pending.pop(op.id, None)
        if entry is not None and not entry[1].done():
            entry[1].set_result(None)

    def _fail_pending(self) -> None:
        """The reader closes under awaiting coroutines: their operations
        will never be harvested here, so they get a ClosedError."""
        def fail(fut: "asyncio.Future[None]") -> None:
            if not fut.done():
                fut.set_exception(errors.ClosedError("the reader was closed"))
        while self._pending:
            _, (op, fut) = self._pending.popitem()
            self.reader.completions.unwatch(op)
            self.settle(functools.partial(fail, fut))


def _expire(fut: "asyncio.Future[None]") -> None:
    if not fut.done():
        fut.set_exception(asyncio.TimeoutError())


def _abandon(link: _LoopLink, op: Any) -> None:
    """The awaiting coroutine was cancelled: forget `op` and cancel it."""
    link.unwatch(op)
    op.cancel()


async def _await_op(link: _LoopLink, op: Any, timeout: Optional[float]) -> bytes:
    fut = link.watch(op)
    if timeout is None:
        try:
            await fut
        except asyncio.CancelledError:
            _abandon(link, op)
            raise
        return op.result()  # type: ignore[no-any-return]
    # A timer instead of asyncio.wait_for: no task per operation.
    timer = link.loop.call_later(max(timeout, 0.0), _expire, fut)
    try:
        await fut
    except asyncio.TimeoutError:
        # Let the driver release the request (the reader's one tracking
        # slot, for IS_PRESENT / IS_ABSENT) before the caller goes on.
        op.cancel()
        try:
            await asyncio.wait_for(link.watch(op), 1.0)
        except asyncio.TimeoutError:
            link.unwatch(op)
        raise
    except asyncio.CancelledError:
        _abandon(link, op)
        raise
    finally:
        timer.cancel()
    return op.result()  # type: ignore[no-any-return]


async def _hop(link: _LoopLink, code: int, data: bytes, output_size: int) -> bytes:
    """One overlapped IOCTL awaited without a deadline: its output."""
    op = link.reader.device.submit(code, data, output_size)
    fut = link.watch(op)
    try:
        await fut
    except asyncio.CancelledError:
        _abandon(link, op)
        raise
    return op.result()  # type: ignore[no-any-return]


async def run_async(link: _LoopLink, steps: "LoopSteps[T]", *,
                    deadline: Optional[float] = None) -> T:
    """Drive a sequence generator with overlapped IOCTLs."""
    submit = link.reader.device.submit
    try:
        req = next(steps)
        while True:
            try:
                if isinstance(req, Loop):
                    out = await _run_loop(link, req, deadline)
                elif deadline is None:
                    # The common case, kept to one coroutine frame.
                    op = submit(req.code, req.input, req.output_size)
                    fut = link.watch(op)
                    try:
                        await fut
                    except asyncio.CancelledError:
                        _abandon(link, op)
                        raise
                    out = op.result()
                else:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise errors.TimeoutError("timed out", ioctl=req.code)
                    op = submit(req.code, req.input, req.output_size)
                    out = await _await_op(link, op, left)
            except errors.ScardioError as exc:  # first: it is a TimeoutError too
                req = steps.throw(exc)
            except asyncio.TimeoutError:  # the deadline's timer (_expire), on a Request
                req = steps.throw(errors.TimeoutError(
                    "no answer from the driver within the timeout (cancelled)",
                    ioctl=getattr(req, "code", None)))
            else:
                req = steps.send(out)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]
    finally:
        steps.close()


async def _run_loop(link: _LoopLink, loop: Loop, deadline: Optional[float]) -> Any:
    """What ``loop.steps(deadline)`` returns: the core's one overlapped
    operation where the device can (``Device.submit_loop``), its steps
    (as ``yield from``) where it cannot, or after the core stopped, its
    record replayed through them (as scardio.runner.run_loop)."""
    device = link.reader.device
    submit_loop = getattr(device, "submit_loop", None)
    if submit_loop is None:
        return await run_async(link, loop.steps(deadline), deadline=deadline)
    left = None if deadline is None else deadline - time.monotonic()
    if left is not None and left <= 0:
        raise errors.TimeoutError("timed out before the loop started")
    op = submit_loop(loop.kind, loop.protocols, loop.max_steps, left)
    done, got, trail = loop_outcome(await _await_op(link, op, left))
    if done and trail is not None:
        return loop.result(got, trail)
    return await run_async(link, replayed(loop.steps(deadline), got), deadline=deadline)


class AsyncCard:
    """A card connected through an :class:`AsyncReader`: the same card as
    the blocking :class:`scardio.Card` it wraps (``reader.reader.card``),
    with :meth:`transmit` and :meth:`disconnect` awaited."""

    def __init__(self, areader: "AsyncReader", card: Card) -> None:
        self.reader = areader
        self._card = card

    atr = property(lambda self: self._card.atr)
    atr_bytes = property(lambda self: self._card.atr_bytes)
    atr_error = property(lambda self: self._card.atr_error)
    protocol = property(lambda self: self._card.protocol)
    protocol_name = property(lambda self: self._card.protocol_name)
    connect_actions = property(lambda self: self._card.connect_actions)
    connected = property(lambda self: self._card.connected)
    share = property(lambda self: self._card.share)

    @property
    def auto_get_response(self) -> bool:
        return self._card.auto_get_response

    @auto_get_response.setter
    def auto_get_response(self, value: bool) -> None:
        self._card.auto_get_response = value

    @property
    def auto_resend(self) -> bool:
        return self._card.auto_resend

    @auto_resend.setter
    def auto_resend(self, value: bool) -> None:
        self._card.auto_resend = value

    def info(self) -> dict[str, Any]:
        return self._card.info()

    async def transmit(self, apdu: ApduLike, *, auto_get_response: Optional[bool] = None,
                       auto_resend: Optional[bool] = None,
                       timeout: Optional[float] = None) -> Response:
        """As :meth:`scardio.card.Card.transmit`."""
        card = self._card
        if (type(apdu) is not bytes or timeout is not None or auto_get_response is not None
                or auto_resend is not None):
            steps = transmit_steps(
                to_apdu_bytes(apdu), card.protocol,
                auto_get_response=card.auto_get_response if auto_get_response is None
                else auto_get_response,
                auto_resend=card.auto_resend if auto_resend is None else auto_resend)
            deadline = None if timeout is None else time.monotonic() + timeout
            return await self._transmit_steps(steps, deadline)
        # The common call (bytes, the card's defaults, no timeout), in this
        # one coroutine frame: the TRANSMIT awaited here, output_size and
        # split_response inlined as in Card.transmit, the sequence generator
        # only for 61xx / 6Cxx follow-ups.  The same IOCTLs, checks and
        # errors, in the same order, as transmit_steps.
        areader = self.reader
        lock = areader._lock
        txn = areader._txn_task
        mine = txn is not None and txn is asyncio.current_task()  # _in_transaction()
        if not mine and not lock.try_acquire():
            await lock.acquire()
        try:
            if card._gone is not None:
                card._check()
            try:
                n = len(apdu)
                if n < 4 or n > 5:
                    check_length(apdu, card.protocol)
                link = areader._link()
                header = card._header
                op = link.reader.device.submit(
                    _TRANSMIT, header + apdu, MAX_OUT if n > 5 and apdu[4] == 0 else SHORT_OUT)
                fut = link.watch(op)
                try:
                    await fut
                except asyncio.CancelledError:
                    _abandon(link, op)
                    raise
                try:
                    out: bytes = op.result()
                except errors.BufferTooSmallError:
                    out = await _hop(link, _TRANSMIT, header + apdu, MAX_OUT)
                if len(out) < _SHORTEST_OUT:
                    split_response(out)  # raises: no status word
                sw1 = out[-2]
                resp: Response = _new_tuple(Response, (out[IO_HEADER:-2], sw1, out[-1]))
                if sw1 == 0x61 or sw1 == 0x6C:
                    resp = await run_async(link, follow_up_steps(
                        apdu, header, resp, card.auto_get_response, card.auto_resend))
                return resp
            except (errors.NoCardError, errors.InvalidStateError) as exc:
                areader.session.transmit_failed(card, exc)
                raise
        finally:
            if not mine:
                lock.release()

    async def _transmit_steps(self, steps: "Steps[Response]",
                              deadline: Optional[float]) -> Response:
        """Run transmit sequence `steps` under the reader's lock (transmit's,
        and the recorder's, which watches the sequence)."""
        card = self._card
        lock = self.reader._lock
        mine = self.reader._in_transaction()  # the lock is this task's already
        if not mine:
            await lock.acquire()  # not `async with`: one coroutine less per APDU
        try:
            card._check()
            try:
                return await run_async(self.reader._link(), steps, deadline=deadline)
            except (errors.NoCardError, errors.InvalidStateError) as exc:
                self.reader.session.transmit_failed(card, exc)
                raise
        finally:
            if not mine:
                lock.release()

    def record(self, target: PathOrFile) -> Recorder:
        """As :meth:`scardio.card.Card.record`: the recorder stands in for
        this object's transmit and disconnect (awaited as ever)."""
        return Recorder(self._card, target, front=self)

    async def disconnect(self, disposition: DispositionLike = Disposition.LEAVE) -> None:
        """As :meth:`scardio.card.Card.disconnect`."""
        value = disposition_value(disposition)
        mine = self.reader._in_transaction()
        if not mine:
            await self.reader._lock.acquire()
        try:
            if self._card.connected:
                await self.reader._disconnected(self._card, value)
        finally:
            if not mine:
                self.reader._lock.release()

    def transaction(self, timeout: Optional[float] = None) -> "AsyncTransaction":
        """``async with card.transaction():`` -- as
        :meth:`scardio.card.Card.transaction` (`timeout` too), with the async reader's lock
        held by the task for the block (its other tasks wait; the blocking
        front end's threads are not kept out by it, only other clients
        are, through PC/SC)."""
        return AsyncTransaction(self, timeout)

    async def __aenter__(self) -> "AsyncCard":
        return self

    async def __aexit__(self, exc_type: Optional[type[BaseException]],
                        exc: Optional[BaseException], tb: Optional[TracebackType]) -> None:
        await self.disconnect()

    def __repr__(self) -> str:
        return f"<scardio.aio.AsyncCard {self._card!r}>"


class AsyncTransaction:
    """What :meth:`AsyncCard.transaction` returns."""

    __slots__ = ("acard", "timeout")

    def __init__(self, acard: AsyncCard, timeout: Optional[float] = None) -> None:
        check_timeout(timeout)
        self.acard = acard
        self.timeout = timeout

    async def __aenter__(self) -> AsyncCard:
        areader = self.acard.reader
        if areader._in_transaction():
            raise TransactionError(f"a transaction is already open on {areader.name!r} "
                                   "(transactions do not nest)")
        deadline = deadline_after(self.timeout)
        try:
            await asyncio.wait_for(areader._lock.acquire(), self.timeout)
        except asyncio.TimeoutError:
            raise errors.TimeoutError("another task's transaction did not end within the "
                                      "timeout") from None
        try:
            await run_async(areader._link(),
                            areader.session.begin_transaction_steps(self.acard._card),
                            deadline=deadline)
        except BaseException:
            areader._lock.release()
            raise
        areader._txn_task = asyncio.current_task()
        return self.acard

    async def __aexit__(self, exc_type: Optional[type[BaseException]],
                        exc: Optional[BaseException], tb: Optional[TracebackType]) -> None:
        areader = self.acard.reader
        try:
            steps = areader.session.end_transaction_steps(self.acard._card,
                                                          quiet=exc is not None)
            if areader.session.closed:
                run_sync(None, steps)  # a closed reader's end runs no IOCTL
            else:
                await run_async(areader._link(), steps)
        finally:
            areader._txn_task = None
            areader._lock.release()


class AsyncReader(SessionFront):
    """The asyncio runtime of a :class:`Reader`'s state machine (see the
    module doc): the same public surface, with the IOCTL-running methods
    awaited.  ``reader`` is the blocking Reader, sharing the session."""

    def __init__(self, reader: Reader) -> None:
        self.reader = reader
        self.session = reader.session
        self._lock = _ReaderLock()
        # The AsyncCard last handed out, weakly: the session's slot alone
        # decides which card is connected (and keeps it alive).
        self._acard: "Optional[weakref.ref[AsyncCard]]" = None
        self._link_obj: Optional[_LoopLink] = None
        # The task inside `async with card.transaction()` (holding _lock).
        self._txn_task: "Optional[asyncio.Task[Any]]" = None

    def _in_transaction(self) -> bool:
        """Whether the current task holds this reader's transaction."""
        return self._txn_task is not None and self._txn_task is asyncio.current_task()

    # -- what the blocking Reader has ------------------------------------------
    name = property(lambda self: self.reader.name, doc="As :attr:`scardio.reader.Reader.name`.")
    names = property(lambda self: self.reader.names, doc="As :attr:`scardio.reader.Reader.names`.")
    device = property(lambda self: self.reader.device,
                      doc="The reader's :class:`scardio.Device` (as ``Reader.device``).")
    descriptor = property(lambda self: self.reader.descriptor)
    backend = property(lambda self: self.reader.backend,
                       doc="As :attr:`scardio.reader.Reader.backend`.")
    backend_reason = property(lambda self: self.reader.backend_reason)
    attributes = property(lambda self: self.reader.attributes)
    completions = property(lambda self: self.reader.completions)

    @property
    def card(self) -> Optional[AsyncCard]:
        """The connected card, if any (connected through either front end)."""
        c = self.session.connected_card()
        if c is None:
            return None
        acard = self._acard() if self._acard is not None else None
        if acard is None or acard._card is not c:
            acard = self._wrap(c)
        return acard

    def _wrap(self, card: Card) -> AsyncCard:
        acard = AsyncCard(self, card)
        self._acard = weakref.ref(acard)
        return acard

    def info(self) -> dict[str, Any]:
        return self.reader.info()

    def _link(self) -> _LoopLink:
        self.session.check_open()
        if self._link_obj is None:
            self._link_obj = _LoopLink.acquire(self.reader)
        return self._link_obj

    async def _startup(self) -> None:
        self.reader.attributes = await run_async(self._link(), startup_steps())

    # -- plain IOCTL helpers ------------------------------------------------------
    async def state(self) -> State:
        """GET_STATE."""
        # One IOCTL, awaited in this frame (no sequence generator): what
        # get_state_steps asks, decoded as it does.
        link = self._link()
        op = link.reader.device.submit(_GET_STATE, b"", 4)
        fut = link.watch(op)
        try:
            await fut
        except asyncio.CancelledError:
            _abandon(link, op)
            raise
        return decode_state(op.result())

    async def is_card_present(self) -> bool:
        return await self.state() not in (State.UNKNOWN, State.ABSENT)

    async def get_attribute(self, attr: int, output_size: int = 256) -> bytes:
        return await _hop(self._link(), _GET_ATTRIBUTE, U32.pack(int(attr)), output_size)

    # -- tracking -----------------------------------------------------------
    async def _wait_tracking(self, present: bool, timeout: Optional[float]) -> None:
        session = self.session
        link = self._link()
        if session.tracked_by:
            # A monitor holds the reader's one tracking request: follow it.
            fut: "asyncio.Future[None]" = link.loop.create_future()

            def settle_once() -> None:
                if not fut.done():
                    fut.set_result(None)

            def waiter(p: bool) -> None:
                if p == present:
                    link.settle(settle_once)
            session.add_presence_waiter(waiter)
            try:
                now = session.present
                if now is None:
                    now = await self.is_card_present()
                if now == present:
                    return
                await asyncio.wait_for(fut, timeout)
            except asyncio.TimeoutError:
                raise session.tracking_timeout(present, timeout) from None
            finally:
                session.remove_presence_waiter(waiter)
            return
        try:
            op = self.device.submit(session.tracking_code(present))
            await _await_op(link, op, timeout)
        except asyncio.TimeoutError:
            raise session.tracking_timeout(present, timeout) from None
        except errors.DeviceBusyError as exc:
            raise session.tracking_busy(exc, present) from None
        session.tracking_done(present)

    async def wait_for_card(self, timeout: Optional[float] = None) -> None:
        """Return once a card is in; scardio.errors.TimeoutError after
        `timeout` seconds (the IS_PRESENT request is cancelled)."""
        await self._wait_tracking(True, timeout)

    async def wait_for_removal(self, timeout: Optional[float] = None) -> None:
        """Return once the reader is empty (at once if it is)."""
        await self._wait_tracking(False, timeout)

    # -- connect / power-down -------------------------------------------------
    async def connect(self, protocols: int = Protocol.T0 | Protocol.T1, *,
                      timeout: Optional[float] = DEFAULT_CONNECT_TIMEOUT,
                      max_steps: int = CONNECT_MAX_STEPS, auto_get_response: bool = True,
                      auto_resend: bool = True, share: Optional[str] = None) -> AsyncCard:
        """As :meth:`scardio.reader.Reader.connect` (`share` too)."""
        def make_card(conn: Connected) -> Card:
            return Card(self.reader, conn.atr, conn.protocol, conn.actions,
                        auto_get_response=auto_get_response, auto_resend=auto_resend)
        async with self._lock:
            deadline = None if timeout is None else time.monotonic() + timeout
            card = await run_async(self._link(), self.session.connect_steps(
                protocols, make_card, max_steps=max_steps, deadline=deadline, share=share),
                deadline=deadline)
            return self._wrap(card)

    async def _disconnected(self, card: Card, disposition: Disposition) -> None:
        """AsyncCard.disconnect(), with the lock held."""
        steps = self.session.disconnect_steps(card, disposition)
        if self.session.closed:
            run_sync(None, steps)  # a closed reader's disconnect runs no IOCTL
            return
        link = self._link()
        delay = await run_async(link, steps)
        if delay is not None:
            loop = link.loop
            self.session.arm_timer(lambda delay, token: loop.call_later(
                delay, lambda: loop.create_task(self._timer_fired(token))), delay)

    async def _timer_fired(self, token: int) -> None:
        async with self._lock:
            if self.session.closed:
                return
            await run_async(self._link(), self.session.timer_fired_steps(token))

    async def power_down(self) -> list[str]:
        """As :meth:`scardio.reader.Reader.power_down`."""
        async with self._lock:
            return await run_async(self._link(), self.session.explicit_power_down_steps())

    # -- closing ----------------------------------------------------------------
    async def aclose(self) -> None:
        """Power the card down (on the loop), cancel everything, close."""
        session = self.session
        if session.closed:
            return
        session.cancel_timer("close")
        try:
            # Bounded, like Reader.close: a call stuck in the driver must
            # not hold the close up; the device close cancels it.
            await asyncio.wait_for(self._lock.acquire(), CLOSE_LOCK_WAIT)
        except asyncio.TimeoutError:
            self.close(power_down=False)
            return
        try:
            session.drop_card("the reader was closed")
            try:
                await run_async(self._link(), session.power_down_steps("close"))
            except errors.ScardioError:
                pass
        finally:
            self._lock.release()
        self.close(power_down=False)

    def close(self, *, power_down: bool = True) -> None:
        """Close at once (the reader's own close powers the card down
        synchronously; aclose() does it on the loop)."""
        self.session.cancel_timer("close")
        if self._link_obj is not None:
            self._link_obj.release()
            self._link_obj = None
        self.reader.close(power_down=power_down)

    async def __aenter__(self) -> "AsyncReader":
        return self

    async def __aexit__(self, exc_type: Optional[type[BaseException]],
                        exc: Optional[BaseException], tb: Optional[TracebackType]) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"<scardio.aio.AsyncReader {self.name!r}>"


async def open_reader(reader: Any = 0, sim: int = 0, *,
                      power_down_timeout: Optional[float] = DEFAULT_POWER_DOWN_TIMEOUT,
                      readers: Optional[Iterable[Any]] = None,
                      trace: Optional[Callable[[Any], None]] = None,
                      backend: str = "auto",
                      **list_options: Any) -> AsyncReader:
    """Like :func:`scardio.open_reader` (*backend* included), with the
    start-up IOCTLs awaited."""
    opened = open_reader_device(reader, sim, power_down_timeout=power_down_timeout,
                                readers=readers, trace=trace, backend=backend,
                                **list_options)
    r = Reader(opened.device, opened.descriptor, power_down_timeout=power_down_timeout,
               startup=False, backend=opened.backend, backend_reason=opened.reason)
    ar = AsyncReader(r)
    try:
        await ar._startup()
    except BaseException:
        ar.close()
        raise
    return ar


ReaderLike = Union[AsyncReader, Reader]


class AsyncMonitor:
    """``async for event in AsyncMonitor(readers)``: arrivals and
    departures (:class:`scardio.monitor.CardEvent`) from completions
    harvested on the running loop.

    *reader_list*: as for :class:`scardio.monitor.Monitor`, watch every
    reader of the list, with ``reader-added`` and ``reader-removed`` events
    (a thread waits for the list to change; listings are applied, and
    readers that appear opened, on the loop)."""

    def __init__(self, readers: Iterable[ReaderLike] = (), *,
                 reader_list: Optional[ReaderList] = None) -> None:
        self._readers = [r.reader if isinstance(r, AsyncReader) else r for r in readers]
        self._queue: "asyncio.Queue[Optional[CardEvent]]" = asyncio.Queue()
        self._callbacks: list[Callable[[CardEvent], None]] = []
        self._trackers: dict[int, tuple[Tracker, _LoopLink]] = {}
        self._seq = 0
        self._started = False
        self._closed = False
        self._reader_list = reader_list
        self._hotplug: Optional[_Hotplug] = None
        self._list_watcher: Optional[_ListWatcher] = None

    def start(self) -> "AsyncMonitor":
        if not self._started:
            self._started = True
            for r in self._readers:
                self.add(r)
            if self._reader_list is not None:
                self._start_hotplug(self._reader_list)
        return self

    def _start_hotplug(self, source: ReaderList) -> None:
        loop = asyncio.get_running_loop()
        hotplug = _Hotplug(source, lambda: [t for t, _ in self._trackers.values()],
                           self.add, self.remove,
                           lambda kind, r: self._put(kind, r, time.monotonic(), None),
                           loop.call_later)
        self._hotplug = hotplug
        hotplug.apply(source.names(), True)

        def post(names: list[str]) -> bool:
            done = threading.Event()

            def apply() -> None:
                try:
                    if not self._closed:
                        hotplug.apply(names, False)
                finally:
                    done.set()
            try:
                loop.call_soon_threadsafe(apply)
            except RuntimeError:  # the loop is closed
                return False
            while not done.wait(0.5):
                if self._closed or loop.is_closed():
                    return False
            return not self._closed
        self._list_watcher = _ListWatcher(source, post)
        self._list_watcher.start()

    def add_callback(self, callback: Callable[[CardEvent], None]) -> None:
        """Call `callback(CardEvent)` for every event, on the loop, as it
        is queued (as :meth:`scardio.monitor.Monitor.add_callback`)."""
        self._callbacks.append(callback)

    @property
    def dropped(self) -> int:
        """Events dropped because the queue was full: always 0, the
        asyncio monitor's queue is unbounded and read on the loop (as
        :attr:`scardio.monitor.Monitor.dropped`)."""
        return 0

    @property
    def readers(self) -> list[Reader]:
        """The (blocking) readers being tracked."""
        return [tracker.reader for tracker, _ in self._trackers.values()
                if not tracker.stopped]

    def add(self, reader: ReaderLike) -> None:
        r = reader.reader if isinstance(reader, AsyncReader) else reader
        old = self._trackers.get(id(r))
        if old is not None and not old[0].stopped:
            return
        if old is not None:  # its reader went away once: track it afresh
            self.remove(r)
        link = _LoopLink.acquire(r)

        def emit(kind: str, error: Optional[BaseException]) -> None:
            ts = time.monotonic()  # when the completion was seen
            link.settle(lambda: self._tracked_event(kind, r, ts, error))
        tracker = Tracker(r, emit)
        self._trackers[id(r)] = (tracker, link)
        tracker.start()

    def _tracked_event(self, kind: str, reader: Reader, ts: float,
                       error: Optional[BaseException]) -> None:
        if kind == ERROR and self._hotplug is not None and self._hotplug.vanished(reader, error):
            return  # reported as its removal
        self._put(kind, reader, ts, error)

    def _put(self, kind: str, reader: Reader, ts: float,
             error: Optional[BaseException]) -> None:
        self._seq += 1
        ev = CardEvent(kind, reader, ts, self._seq, error)
        for cb in list(self._callbacks):
            try:
                cb(ev)
            except Exception:
                pass  # one bad callback must not stop the monitor
        self._queue.put_nowait(ev)

    def remove(self, reader: ReaderLike) -> None:
        r = reader.reader if isinstance(reader, AsyncReader) else reader
        entry = self._trackers.pop(id(r), None)
        if entry is not None:
            tracker, link = entry
            tracker.stop(wait=0.2)  # cancellation completes at once in practice
            link.release()

    async def get(self, timeout: Optional[float] = None) -> CardEvent:
        self.start()
        try:
            ev = await asyncio.wait_for(self._queue.get(), timeout)
        except asyncio.TimeoutError:
            raise errors.TimeoutError(f"no card event within {timeout} s") from None
        if ev is None:
            self._queue.put_nowait(None)
            raise errors.ClosedError("monitor is closed")
        return ev

    def __aiter__(self) -> AsyncIterator[CardEvent]:
        self.start()
        return self

    async def __anext__(self) -> CardEvent:
        try:
            return await self.get()
        except errors.ClosedError:
            raise StopAsyncIteration from None

    async def events(self, timeout: Optional[float] = None,
                     count: Optional[int] = None) -> AsyncIterator[CardEvent]:
        """Events until `count`, `timeout` seconds in all, or close."""
        deadline = None if timeout is None else time.monotonic() + timeout
        n = 0
        while count is None or n < count:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return
            try:
                ev = await self.get(left)
            except (errors.TimeoutError, errors.ClosedError):
                return
            n += 1
            yield ev

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._list_watcher is not None:
            self._list_watcher.stop(5.0)
        for key in list(self._trackers):
            tracker, _ = self._trackers[key]
            self.remove(tracker.reader)
        if self._hotplug is not None:
            self._hotplug.close()
        self._queue.put_nowait(None)

    async def __aenter__(self) -> "AsyncMonitor":
        return self.start()

    async def __aexit__(self, exc_type: Optional[type[BaseException]],
                        exc: Optional[BaseException], tb: Optional[TracebackType]) -> None:
        self.close()


__all__ += ["run_async", "ARRIVAL", "DEPARTURE", "ERROR", "READER_ADDED", "READER_REMOVED"]
