"""The blocking and the asyncio front ends have the same public surface.

Reader / AsyncReader, Card / AsyncCard and Monitor / AsyncMonitor are
compared as live objects (``dir()``, public names only), minus the
documented asyncio-only names (``scardio.aio.ASYNC_ONLY``); a common name
is a method on both or an attribute on both, with the same parameters, and
the asyncio method is a coroutine exactly where the blocking one runs
IOCTLs or waits."""

from __future__ import annotations

import asyncio
import inspect

from helpers_reader import sim_reader
import scardio.aio as aio
from scardio.monitor import Monitor

# The blocking methods that run IOCTLs or wait: awaited on the asyncio side.
AWAITED = {
    "Reader": {"state", "is_card_present", "get_attribute", "connect", "power_down",
               "wait_for_card", "wait_for_removal"},
    "Card": {"transmit", "disconnect"},
    "Monitor": {"get", "events"},
}
# Parameters only the threaded Monitor has: they bound the wait for its
# harvesting thread's reply, and the asyncio monitor has no thread.
THREAD_ONLY_PARAMETERS = {("Monitor", "add"): {"timeout"}, ("Monitor", "remove"): {"timeout"},
                          ("Monitor", "close"): {"timeout"}}


def public(obj):
    return {n for n in dir(obj) if not n.startswith("_")}


def live_pairs():
    """[(kind, blocking object, asyncio object)] on one simulated reader."""
    out = []
    with sim_reader() as (reader, sim):
        sim.insert()

        async def build():
            areader = aio.AsyncReader(reader)
            acard = await areader.connect(timeout=5)
            card = reader.card
            amon = aio.AsyncMonitor([areader]).start()
            mon = Monitor([reader])
            try:
                out.extend([("Reader", reader, areader), ("Card", card, acard),
                            ("Monitor", mon, amon)])
                return [(kind, public(s), public(a), type(s), type(a))
                        for kind, s, a in out]
            finally:
                mon.close()
                amon.close()
                await acard.disconnect()
                areader.close()
        return asyncio.run(build())


def test_the_documented_async_only_names_are_all_there_is():
    assert aio.ASYNC_ONLY == {"aclose", "reader"}
    for kind, sync_names, async_names, _, _ in live_pairs():
        assert sync_names, kind  # dir() really listed something
        assert sync_names - async_names == set(), f"{kind}: only the blocking one has these"
        assert async_names - aio.ASYNC_ONLY - sync_names == set(), \
            f"{kind}: only the asyncio one has these (undocumented)"


def test_common_names_mean_the_same():
    for kind, sync_names, async_names, S, A in live_pairs():
        for name in sorted(sync_names & async_names):
            s, a = inspect.getattr_static(S, name, None), inspect.getattr_static(A, name, None)
            # a method may be implemented in the binding (Card.transmit)
            s_method = inspect.isroutine(s)
            a_method = inspect.isroutine(a)
            assert s_method == a_method, f"{kind}.{name}: a method on one side only"
            if not s_method:
                continue
            awaited = inspect.iscoroutinefunction(a) or inspect.isasyncgenfunction(a)
            assert awaited == (name in AWAITED[kind]), \
                f"{kind}.{name}: awaited on the asyncio side: {awaited}"
            skip = THREAD_ONLY_PARAMETERS.get((kind, name), set())
            ps = [(p.name, p.kind, p.default) for p in inspect.signature(s).parameters.values()
                  if p.name not in skip]
            pa = [(p.name, p.kind, p.default) for p in inspect.signature(a).parameters.values()]
            assert ps == pa, f"{kind}.{name}: parameters differ"
