"""scardio.aio's reader lock (_ReaderLock): asyncio.Lock's behaviour where
AsyncReader relies on it (FIFO order, cancellation, wait_for timeouts), plus
the coroutine-free try_acquire of the per-APDU path."""

from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Callable

import pytest

from scardio.aio import _ReaderLock


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: Any) -> Callable[[Callable[[], Awaitable[Any]]], Any]:
    factory = asyncio.new_event_loop
    if request.param == "uvloop":
        factory = pytest.importorskip("uvloop").new_event_loop

    def runner(make: Callable[[], Awaitable[Any]]) -> Any:
        loop = factory()
        try:
            return loop.run_until_complete(asyncio.wait_for(make(), 10))
        finally:
            loop.close()
    return runner


def test_try_acquire_takes_a_free_lock_only(run: Any) -> None:
    async def main() -> None:
        lock = _ReaderLock()
        assert not lock.locked() and lock.try_acquire() and lock.locked()
        assert not lock.try_acquire()
        lock.release()
        assert not lock.locked()
        with pytest.raises(RuntimeError):
            lock.release()
    run(main)


def test_waiters_get_the_lock_in_order_and_nobody_overtakes(run: Any) -> None:
    async def main() -> None:
        lock = _ReaderLock()
        order: list[int] = []

        async def worker(i: int) -> None:
            async with lock:
                order.append(i)
                await asyncio.sleep(0)
        assert lock.try_acquire()
        tasks = [asyncio.ensure_future(worker(i)) for i in range(5)]
        await asyncio.sleep(0.01)
        lock.release()
        # handed to the first waiter: still held, a newcomer must wait
        assert lock.locked() and not lock.try_acquire()
        await asyncio.gather(*tasks)
        assert order == list(range(5)) and not lock.locked()
    run(main)


def test_a_cancelled_waiter_is_skipped(run: Any) -> None:
    async def main() -> None:
        lock = _ReaderLock()
        assert lock.try_acquire()
        first = asyncio.ensure_future(lock.acquire())
        second = asyncio.ensure_future(lock.acquire())
        await asyncio.sleep(0.01)
        first.cancel()
        await asyncio.sleep(0)
        lock.release()
        assert await asyncio.wait_for(second, 2) is True
        assert first.cancelled() and lock.locked()
        lock.release()
        assert not lock.locked()
    run(main)


def test_a_waiter_cancelled_after_the_hand_over_passes_the_lock_on(run: Any) -> None:
    async def main() -> None:
        lock = _ReaderLock()
        assert lock.try_acquire()
        first = asyncio.ensure_future(lock.acquire())
        second = asyncio.ensure_future(lock.acquire())
        await asyncio.sleep(0.01)
        lock.release()  # handed to `first`, which has not run yet
        first.cancel()  # ... and is cancelled before it does
        with pytest.raises(asyncio.CancelledError):
            await first
        assert await asyncio.wait_for(second, 2) is True
        lock.release()
        assert not lock.locked()
    run(main)


def test_wait_for_a_held_lock_times_out_and_leaves_no_waiter(run: Any) -> None:
    async def main() -> None:
        lock = _ReaderLock()
        assert lock.try_acquire()
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(lock.acquire(), 0.02)
        lock.release()
        assert not lock.locked() and lock.try_acquire()
        lock.release()
    run(main)
