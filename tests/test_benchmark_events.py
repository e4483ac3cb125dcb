"""benchmarks/events.py's run_together, the card-event comparison of
clients armed for the same events: every path takes every arming place
equally often for each kind, each is timed from the one t0 of its event
(read after every path has seen it when the mover answers late), and an
event seen before the card moved is refused.  Fake paths: nothing here
runs a driver or a resource manager."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Callable, Union

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.fixture(scope="module")
def events() -> ModuleType:
    spec = importlib.util.spec_from_file_location("_bench_events", BENCH / "events.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Fake:
    """An armed path that sees each event `delay` ns after the card moved."""

    def __init__(self, name: str, log: list[tuple[str, str, str]], clock: list[int],
                 delay: int) -> None:
        self.name = name
        self.log = log
        self.clock = clock
        self.delay = delay
        self.kind = ""

    def arm(self, kind: str, timeout: float = 10.0) -> None:
        self.kind = kind
        self.log.append(("arm", self.name, kind))

    def seen(self, timeout: float = 10.0) -> int:
        self.log.append(("seen", self.name, self.kind))
        return self.clock[0] + self.delay

    def disarm(self) -> None:
        self.log.append(("disarm", self.name, self.kind))


def fast(events: ModuleType, paths: list[Fake], trigger: Callable[[str], object],
         rounds: int) -> dict[str, dict[str, list[float]]]:
    out: dict[str, dict[str, list[float]]] = events.run_together(
        paths, trigger, rounds, pause=0.0, jitter=0.0, asleep=0.0, phase=0.0)
    return out


def test_every_path_takes_every_place_for_each_kind(events: ModuleType) -> None:
    log: list[tuple[str, str, str]] = []
    clock = [0]
    paths = [Fake(n, log, clock, 1000) for n in ("a", "b", "c")]

    def trigger(kind: str) -> int:
        clock[0] += 10**6
        return clock[0]
    fast(events, paths, trigger, 6)
    arms = [(name, kind) for what, name, kind in log if what == "arm"]
    places: dict[tuple[str, str, int], int] = {}
    for i in range(0, len(arms), 3):
        for place, (name, kind) in enumerate(arms[i:i + 3]):
            places[(name, kind, place)] = places.get((name, kind, place), 0) + 1
    assert set(places.values()) == {2}, places
    assert len(places) == 3 * 2 * 3  # every path, kind and place seen


def test_each_path_is_timed_from_its_events_t0(events: ModuleType) -> None:
    log: list[tuple[str, str, str]] = []
    clock = [0]
    paths = [Fake("quick", log, clock, 150_000), Fake("slow", log, clock, 400_000)]

    def trigger(kind: str) -> int:
        clock[0] += 10**7
        return clock[0]
    out = fast(events, paths, trigger, 2)
    assert out["quick"] == {"insert": [0.15, 0.15], "remove": [0.15, 0.15]}
    assert out["slow"] == {"insert": [0.4, 0.4], "remove": [0.4, 0.4]}


def test_a_late_answer_is_read_after_every_path_saw_the_event(events: ModuleType) -> None:
    log: list[tuple[str, str, str]] = []
    clock = [0]
    paths = [Fake("a", log, clock, 200_000), Fake("b", log, clock, 300_000)]

    def trigger(kind: str) -> Callable[[], int]:
        clock[0] += 10**7
        t0 = clock[0]

        def answer() -> int:
            log.append(("answer", "", kind))
            return t0
        return answer
    out = fast(events, paths, trigger, 1)
    assert out == {"a": {"insert": [0.2], "remove": [0.2]},
                   "b": {"insert": [0.3], "remove": [0.3]}}
    first = log[:log.index(("answer", "", "insert")) + 1]
    assert [e[0] for e in first] == ["arm", "arm", "seen", "seen", "answer"]


def test_an_event_seen_before_the_card_moved_is_refused(events: ModuleType) -> None:
    log: list[tuple[str, str, str]] = []
    clock = [0]
    early = Fake("early", log, clock, -5)

    def trigger(kind: str) -> Union[int, Callable[[], int]]:
        clock[0] += 10**6
        return clock[0]
    with pytest.raises(RuntimeError, match="early: insert seen before the card moved"):
        fast(events, [early], trigger, 1)
