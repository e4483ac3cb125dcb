"""One scenario, two calling styles: the `styled` fixture (conftest.py)
gives a :class:`Styled` driver, blocking or asyncio, so that a reader /
card / monitor scenario is written once and run against both front ends.

A scenario calls the front end's methods as it would the blocking ones and
passes every result through the driver: ``card = styled(reader.connect())``
returns the value for the blocking Reader and runs the coroutine to its end
(bounded) on the driver's loop for the AsyncReader.  Waiting goes through
the driver too (``styled.sleep``, ``styled.wait_for``), so that the loop
runs while the scenario waits for a timer or an event."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
from typing import Any, Iterator, Optional

from helpers_reader import Recorder, next_lun

BOUND = 20.0  # no call of a scenario may take longer


class Styled:
    style = "sync"

    def __call__(self, value: Any) -> Any:
        assert not inspect.isawaitable(value), "a blocking call returned an awaitable"
        return value

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)

    def wait_for(self, rec: Recorder, kind: str, timeout: float = 5.0, n: int = 1) -> Any:
        return rec.wait_for(kind, timeout, n)

    @contextlib.contextmanager
    def reader(self, power_down_timeout: Optional[float] = 5.0) -> Iterator[tuple[Any, Any]]:
        """(front end, SimControl) on a fresh simulated reader with no card."""
        from helpers_reader import sim_reader
        with sim_reader(power_down_timeout) as (reader, sim):
            yield reader, sim

    def close_reader(self, reader: Any) -> None:
        """close(), or aclose() on the loop (the asyncio way)."""
        reader.close()

    def monitor(self, readers: list[Any]) -> Any:
        from scardio.monitor import Monitor
        return Monitor(readers)

    def close(self) -> None:
        pass


class AsyncStyled(Styled):
    style = "async"

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()

    def __call__(self, value: Any) -> Any:
        assert inspect.isawaitable(value), "an asyncio call did not return an awaitable"

        async def bounded() -> Any:
            return await asyncio.wait_for(value, BOUND)
        return self.loop.run_until_complete(bounded())

    def sleep(self, seconds: float) -> None:
        self.loop.run_until_complete(asyncio.sleep(seconds))

    def wait_for(self, rec: Recorder, kind: str, timeout: float = 5.0, n: int = 1) -> Any:
        async def poll() -> None:
            deadline = time.monotonic() + timeout
            while sum(k == kind for k in rec.kinds()) < n and time.monotonic() < deadline:
                await asyncio.sleep(0.005)
        self.loop.run_until_complete(poll())
        return rec.wait_for(kind, 0, n)

    @contextlib.contextmanager
    def reader(self, power_down_timeout: Optional[float] = 5.0) -> Iterator[tuple[Any, Any]]:
        import scardio.aio as aio
        from scardio.discovery import ReaderDescriptor
        from scardio.sim import SIM_LIBRARY, SimControl
        lun = next_lun()
        desc = ReaderDescriptor(f"scardio Simulated Reader {lun}", "sim", SIM_LIBRARY,
                                f"sim:{lun}", lun, {"available": True})
        areader = self(aio.open_reader(desc, power_down_timeout=power_down_timeout))
        sim = SimControl(areader.device)
        try:
            yield areader, sim
        finally:
            if not areader.closed:
                try:
                    sim.stop()
                except Exception:
                    pass
                self(areader.aclose())

    def close_reader(self, reader: Any) -> None:
        self(reader.aclose())

    def monitor(self, readers: list[Any]) -> Any:
        from scardio.aio import AsyncMonitor

        async def make() -> Any:
            return AsyncMonitor(readers).start()
        return self(make())

    def close(self) -> None:
        self.loop.run_until_complete(self.loop.shutdown_asyncgens())
        self.loop.close()
