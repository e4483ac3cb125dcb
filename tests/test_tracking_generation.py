"""Card tracking on many readers of a driver without a polling function that
counts card events, with and without the library-wide card-event generation
(ifd_ext.h): with it the poller reads the generation once per poll interval
for all readers and their counts only when it moves; without it, each
reader's counts every interval.  Either way a Monitor reports every arrival
and departure, including a card put in and taken out between two looks.

Driver calls are counted with the simulated reader's call counters, not CPU
time (the CPU figure is benchmarks/test_bench_scale.py's).
"""

from __future__ import annotations

import random
import struct
import time
from typing import Any

import pytest

from helpers_reader import Recorder, sim_readers
from scardio import IOCTL, Monitor, errors
from scardio.monitor import ARRIVAL, DEPARTURE

GENERATION = pytest.mark.parametrize("generation", [True, False],
                                     ids=["generation", "no-generation"])
TAG_GENERATION = 0x0007A004  # SCIO_IFD_TAG_CARD_EVENT_GENERATION (ifd_ext.h)
TAG_COUNTS = 0x0007A002  # SCIO_IFD_TAG_CARD_EVENTS
U32 = struct.Struct("<I")


def readers(n: int, generation: bool, poll_interval_ms: int) -> Any:
    """n (Reader, SimControl) pairs, presence-only readers that count card
    events, with or without the generation, no card in."""
    return sim_readers(n, polling=False, event_generation=generation,
                       poll_interval_ms=poll_interval_ms)


def _per_reader(rec: Recorder) -> dict[str, list[str]]:
    seen: dict[str, list[str]] = {}
    for ev in list(rec.events):
        seen.setdefault(ev.reader.name, []).append(ev.kind)
    return seen


@GENERATION
def test_the_generation_is_offered_unless_switched_off(generation: bool) -> None:
    with readers(1, generation, 0) as [(reader, _)]:
        if generation:
            assert len(reader.device.ioctl(IOCTL.GET_ATTRIBUTE, U32.pack(TAG_GENERATION),
                                           64)) == 4
        else:
            with pytest.raises(errors.ScardioError):
                reader.device.ioctl(IOCTL.GET_ATTRIBUTE, U32.pack(TAG_GENERATION), 64)
        assert len(reader.device.ioctl(IOCTL.GET_ATTRIBUTE, U32.pack(TAG_COUNTS), 64)) == 8


@GENERATION
def test_many_readers_report_every_arrival_and_removal(generation: bool) -> None:
    """On 200 readers (several of the poller's batches), cards into and out
    of readers picked at random: each arrival and each removal reported
    once, on its reader, in order."""
    n = 200
    rec = Recorder()
    rng = random.Random(7)
    with readers(n, generation, 10) as pairs, Monitor([r for r, _ in pairs], callback=rec):
        time.sleep(0.3)  # every request waits (and the poller settles)
        picked = rng.sample(range(n), 12)
        for k, i in enumerate(picked):
            pairs[i][1].insert()
            rec.wait_for(ARRIVAL, n=k + 1)
            assert rec.events[-1].reader.name == pairs[i][0].name
        for k, i in enumerate(picked):
            pairs[i][1].remove()
            rec.wait_for(DEPARTURE, n=k + 1)
            assert rec.events[-1].reader.name == pairs[i][0].name
        time.sleep(0.1)
        seen = _per_reader(rec)
        assert set(seen) == {pairs[i][0].name for i in picked}
        assert all(kinds == [ARRIVAL, DEPARTURE] for kinds in seen.values()), seen
        assert len(rec.events) == 2 * len(picked)


@GENERATION
def test_card_in_and_out_between_two_looks_is_reported(generation: bool) -> None:
    """A card put in and taken out again before the next look (150 ms poll
    interval; no presence call can see it) is still an arrival and a
    departure, on every reader it happened to, and on no other."""
    n = 64
    rec = Recorder()
    with readers(n, generation, 150) as pairs, Monitor([r for r, _ in pairs], callback=rec):
        time.sleep(0.4)  # every reader looked at: the requests wait
        hit = pairs[::5]
        for _, sim in hit:
            sim.insert()
            sim.remove()
        rec.wait_for(DEPARTURE, n=len(hit), timeout=10)
        time.sleep(0.4)  # more looks: nothing else comes
        seen = _per_reader(rec)
        assert set(seen) == {r.name for r, _ in hit}
        assert all(kinds == [ARRIVAL, DEPARTURE] for kinds in seen.values()), seen


@GENERATION
def test_idle_driver_calls_per_interval(generation: bool) -> None:
    """Idle, the poller makes one driver call per interval for all 64
    readers with the generation (its read), one per reader without it (the
    counts); neither asks presence."""
    from scardio.sim import EntryPoint
    n, interval = 64, 20
    with readers(n, generation, interval) as pairs, \
            Monitor([r for r, _ in pairs], callback=lambda ev: None):
        time.sleep(0.3)
        for _, sim in pairs:
            sim.reset_counters()
        t0 = time.monotonic()
        time.sleep(1.0)
        ticks = (time.monotonic() - t0) * 1000 / interval
        calls = [sim.counters().calls for _, sim in pairs]
        reads = sum(c[EntryPoint.GET_CAPABILITIES] for c in calls)
        assert sum(c[EntryPoint.ICC_PRESENCE] for c in calls) == 0
        if generation:
            assert ticks / 4 <= reads <= ticks + 4
        else:
            assert n * ticks / 4 <= reads <= n * (ticks + 4)
