"""scardio over PC/SC against pyscard, on the same pcscd and the same reader
(the simulated reader pcscd serves, conftest.py's ``pcscd_env``).

Both sides are clients of one pcscd, so every figure includes the same
Unix-socket round trips; what differs is the client code and how many
round trips an operation costs.  Interleaved in one run, every process
(this one, pcscd, the pyscard worker) pinned to the same CPUs
(harness.Placement):

  tx5 / tx261    Card.transmit on a card connected through PC/SC, against
                 pyscard's SCardTransmit on its own shared connection
                 (one SCardTransmit each).  The target compares like with
                 like: pyscard imported into this process (the worker's
                 own timing loop, pyscard_worker.Worker) against scardio
                 here (the same interpreter, threads and heap; without an
                 in-process pyscard, the two single-threaded workers
                 below).  The process matters more than the client: one
                 that has started a thread pays on every system call, and
                 this one always has (scardio's lanes, the power-down
                 timer), so pyscard runs here at ~0.94x of its
                 single-threaded worker, as scardio does against its own.
                 For reference (no target): pyscard's worker against
                 scardio here (the figure the target used to be), pyscard
                 in a worker that has started one idle thread, and scardio
                 in a single-threaded process of its own
                 (scardio_pcsc_worker.py, connected with timeout=None and
                 without a power-down timer, so that it starts no thread),
                 the same conditions as the pyscard worker's
  connect_leave  Reader.connect() + disconnect(LEAVE), with the default
                 timeout (bounded: on pcsc-lite the connect loop runs in
                 the calling thread under the backend's watchdog, else on
                 the device's I/O lane) and with timeout=None, against
                 pyscard's SCardConnect + SCardDisconnect(LEAVE), like with
                 like as the transmits (pyscard's worker against scardio
                 here in the note).  scardio
                 keeps the resource manager's handle while its power-down
                 timer runs, so its reconnect is the check that the handle
                 still holds the same card, not a new SCardConnect
  events         card arrival / removal latency: scardio's IS_PRESENT /
                 IS_ABSENT and Monitor (SCardGetStatusChange on the
                 device's tracking context) against pcscd's own latency,
                 a C client blocked in SCardGetStatusChange
                 (pcsc_waiter.py), and a pyscard thread blocked there;
                 for the floors, the synchronous Device.ioctl (no thread
                 hop) and a bare harvester woken through Device.waitable()
                 (the Monitor's wait, without its dispatch) or blocked in
                 Device.harvest(timeout) (events.HarvestArmed); a
                 separate process moves the card through the simulated
                 reader's vendor control (SCardControl) and takes t0.
                 Each path is armed alone for its events, the paths
                 taking turns (the target), and each scardio path is also
                 armed together with the C client for the same events

Needs root and a private namespace (benchmarks/run.py), pcscd and the
system's python3-pyscard; skips with the reason otherwise.
"""

from __future__ import annotations

import contextlib
import os
import time

import pytest

import events
import harness
import paths
from apdus import APDUS
from bench_common import SIM_PCSCD_NAME

# The whole file takes well under a minute: all of it is in the quick set.
pytestmark = [pytest.mark.pcscd, pytest.mark.quick]

ROUNDS = int(os.environ.get("SCARDIO_BENCH_ROUNDS", "25"))
BATCH_NS = float(os.environ.get("SCARDIO_BENCH_BATCH_MS", "4")) * 1e6
EVENT_ROUNDS = int(os.environ.get("SCARDIO_BENCH_PCSC_EVENT_ROUNDS", "30"))
OPS = ["tx5", "tx261", "connect_leave"]

SCARDIO = "scardio over PC/SC"
SCARDIO_UNBOUNDED = "scardio over PC/SC (timeout=None)"
PYSCARD = "pyscard"
PYSCARD_THREADED = "pyscard (process with a thread)"
PYSCARD_HERE = "pyscard in this process"
SCARDIO_ALONE = "scardio over PC/SC (single-threaded process: timeout=None, no timer)"
SIM_INSERT, SIM_REMOVE = 3500, 3501

WHAT = {"tx5": "Card.transmit 5 B", "tx261": "Card.transmit 261 B",
        "connect_leave": "connect() + disconnect(LEAVE)"}


def _wait(pred, timeout=10.0, what="condition"):
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.01)


def _settled_connect(reader, timeout=10.0):
    """The first connect after the card moved.  pcscd may still be taking
    the move in (powering the card up, or seeing it absent first after a
    swap; SCardConnect then answers SCARD_W_UNPOWERED_CARD, _UNRESPONSIVE_CARD
    or no card): try again until it has, within `timeout`."""
    from scardio import errors
    deadline = time.monotonic() + timeout
    while True:
        try:
            return reader.connect()
        except (errors.InvalidStateError, errors.UnrecognizedCardError, errors.NoCardError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


class _Worker(harness.Path):
    """A worker process's timing loop as a path of the interleaved run."""

    name = PYSCARD

    def __init__(self, worker, name: str = PYSCARD):
        self.worker = worker
        self.name = name

    def run(self, op: str, count: int) -> int:
        return self.worker.run(op, count)


class _WorkerHere(harness.Path):
    """The pyscard worker's own timing loop (pyscard_worker.Worker), run in
    this process: the same client code as the worker process, in the same
    process as scardio's paths."""

    name = PYSCARD_HERE

    def __init__(self, name: str, apdus: dict):
        import pyscard_worker  # importable once pcsc_peer.import_pyscard() succeeded
        self.worker = pyscard_worker.Worker()
        self.worker.cmd_open(match=name, apdus=apdus)

    def run(self, op: str, count: int) -> int:
        return self.worker.cmd_run(op, count)["ns"]

    def connect(self) -> None:
        """(Re)connect after the card moved: the transmits' standing card."""
        self.worker.cmd_disconnect()
        self.worker.cmd_connect()

    def disconnect(self) -> None:
        self.worker.cmd_disconnect()

    def close(self) -> None:
        self.worker.release()


@pytest.fixture(scope="module")
def pcsc_env(request):
    pe = request.getfixturevalue("pcscd_env")  # skips outside a private namespace
    import pcsc_peer
    from scardio import Disposition, pcsc
    stack = contextlib.ExitStack()
    try:
        place = stack.enter_context(harness.Placement())
        place.caller(pe["pcscd"].proc.pid)
        harness.record("pcsc", "placement", place.describe())
        w = pcsc_peer.PyscardWorker()
        stack.callback(w.close)
        apdus = {k: v.hex() for k, v in APDUS.items()}
        name = w.call("open", match=SIM_PCSCD_NAME, direct=True, apdus=apdus)["reader"]
        threaded = pcsc_peer.PyscardWorker()
        stack.callback(threaded.close)
        threaded.call("open", match=SIM_PCSCD_NAME, apdus=apdus)
        threaded.call("thread")
        alone = pcsc_peer.ScardioWorker()
        stack.callback(alone.close)
        # Two readers on the same pcscd reader: one holds a card for the
        # transmits, the other connects and disconnects.
        tx_reader = pcsc.open_reader(name)
        stack.callback(tx_reader.close)
        cycle_reader = pcsc.open_reader(name)
        stack.callback(cycle_reader.close)
        # A fresh card, whatever an earlier module left in the reader: out,
        # seen out by pcscd, then in (an insert over a card is a swap, which
        # pcscd takes in while it answers connects with errors).
        w.call("ctl", n=SIM_REMOVE)
        _wait(lambda: not tx_reader.is_card_present(), what="pcscd sees the reader empty")
        w.call("ctl", n=SIM_INSERT)
        _settled_connect(cycle_reader).disconnect(Disposition.LEAVE)
        connect = cycle_reader.connect

        def leave(timeout):
            def f() -> None:
                connect(timeout=timeout).disconnect(Disposition.LEAVE)
            return f
        here = None
        if pcsc_peer.import_pyscard() is not None:
            here = _WorkerHere(name, apdus)
            stack.callback(here.close)
        env = {"name": name, "worker": w, "threaded_worker": threaded, "place": place,
               "tx_reader": tx_reader, "pyscard_here": here,
               "paths": {SCARDIO: harness.FuncPath(SCARDIO, {"connect_leave": leave(10.0)}),
                         SCARDIO_UNBOUNDED: harness.FuncPath(
                             SCARDIO_UNBOUNDED, {"connect_leave": leave(None)}),
                         PYSCARD: _Worker(w),
                         PYSCARD_THREADED: _Worker(threaded, PYSCARD_THREADED),
                         SCARDIO_ALONE: _Worker(alone, SCARDIO_ALONE)},
               "alone_worker": alone}
        if here is not None:
            env["paths"][PYSCARD_HERE] = here
        alone.call("open", match=name, apdus=apdus)
        _connect_transmitters(env)
        yield env
    finally:
        stack.close()


def _connect_transmitters(env) -> None:
    """Both sides' standing connections for the transmits (again after the
    card moved)."""
    from functools import partial
    reader = env["tx_reader"]
    _wait(reader.is_card_present, what="scardio sees the card")
    card = env["card"] = _settled_connect(reader)
    ops = env["paths"][SCARDIO].ops
    for k in ("tx5", "tx261"):
        ops[k] = partial(card.transmit, APDUS[k])
    env["worker"].call("connect")
    if env["pyscard_here"] is not None:
        env["pyscard_here"].connect()
    env["threaded_worker"].call("disconnect")  # its handle is stale after a card move
    env["threaded_worker"].call("connect")
    threads = env["alone_worker"].call("connect")["threads"]
    assert threads == 1, f"the single-threaded scardio worker has {threads} threads"


def card_mover(pcsc_env, stack: contextlib.ExitStack):
    """Empty the reader and start the process that moves the card for the
    event benchmarks; returns ``trigger(kind)``, which moves it and returns
    a call that reads the move's t0 (CLOCK_MONOTONIC ns)."""
    import pcsc_peer
    # Start without a card (the standing connections end with it).
    pcsc_env["worker"].call("disconnect")
    if pcsc_env["pyscard_here"] is not None:
        pcsc_env["pyscard_here"].disconnect()
    pcsc_env["card"].disconnect()
    mover = pcsc_peer.PyscardWorker()
    stack.callback(mover.close)
    # The mover's own work after its SCardControl (its answer, and ours
    # reading it) must not run on the measured CPU at event time: it gets a
    # CPU of its own where there is one, and its answer is read once every
    # path has seen the event.
    place = pcsc_env["place"]
    spare = [c for c in place.saved if c not in place.caller_cpus]
    if place.pinned and spare:
        harness.pin(mover.proc.pid, spare[:1])
    mover.call("open", match=SIM_PCSCD_NAME, direct=True)
    mover.call("trigger", kind="remove")

    def trigger(kind: str):
        mover.send("trigger", kind=kind)
        return lambda: int(mover._read()["t0"])
    return trigger


@pytest.fixture(scope="module", params=OPS)
def op(request):
    return request.param


def _register(op: str, ratios: dict) -> None:
    """The target row of `op`.  `ratios`: the pyscard worker's median ÷
    each other path's.

    The target compares like with like: pyscard and scardio in this one
    process (same interpreter, same threads, same heap), or, without an
    in-process pyscard, transmits each in a single-threaded worker of its
    own and connects pyscard's worker against scardio here.  The process a
    client runs in moves its figure by more than the difference between
    the clients (a process that has started a thread pays on every system
    call, docs/benchmarks.md), and this process always has started threads
    while the pyscard worker has none: pyscard's worker against scardio
    here, the figure the target used to quote, is kept in the note."""
    note = "same pcscd, same simulated reader, all processes pinned alike"
    threaded, mine = ratios.get(PYSCARD_THREADED), ratios.get(SCARDIO)
    alone, here = ratios.get(SCARDIO_ALONE), ratios.get(PYSCARD_HERE)
    unbounded = ratios.get(SCARDIO_UNBOUNDED)
    parts = []
    if here and mine:
        measured, how = mine / here, "both in the benchmark process"
        if unbounded:
            parts.append(f"with timeout=None {unbounded / here:.2f}×")
        if alone:
            parts.append(f"each in a single-threaded worker of its own "
                         f"(scardio: timeout=None, no power-down timer) {alone:.2f}×")
    elif op == "connect_leave":
        measured, how = mine, "pyscard's worker ÷ scardio in the benchmark process"
        if unbounded:
            parts.append(f"with timeout=None {unbounded:.2f}×")
    else:
        measured, how = alone, "each in a single-threaded worker of its own"
    if here:
        parts.append(f"pyscard in the benchmark process runs at {here:.2f}× of its worker")
    if threaded:
        parts.append(f"in a worker with an idle thread at {threaded:.2f}×")
    if mine and here:
        parts.append(f"pyscard's worker ÷ scardio in the benchmark process {mine:.2f}× "
                     f"(different processes)")
    harness.record_target(f"PC/SC {WHAT[op]}: pyscard ÷ scardio over PC/SC, {how} (issue 13)",
                          measured, 1.0, "×", better="higher",
                          note="; ".join(parts + [note]))


def test_pcsc_ratio(pcsc_env, op):
    env_paths = pcsc_env["paths"]
    ps = [env_paths[SCARDIO], env_paths[PYSCARD], env_paths[PYSCARD_THREADED]]
    if op == "connect_leave":
        ps.insert(1, env_paths[SCARDIO_UNBOUNDED])
    else:
        ps.append(env_paths[SCARDIO_ALONE])
    if PYSCARD_HERE in env_paths:
        ps.insert(1, env_paths[PYSCARD_HERE])
    sizes = paths.batch_sizes(ps, op, BATCH_NS)
    res = harness.interleave(ps, op, ROUNDS, 0, counts=sizes)
    out = {name: harness.summary(v) for name, v in res.items()}
    meds = {name: s["median"] for name, s in out.items()}
    # pyscard ÷ each other path (for the threaded pyscard: how much slower
    # the same client is once its process has a thread)
    ratios = {k: meds[PYSCARD] / v for k, v in meds.items() if k != PYSCARD}
    out["_samples"] = res
    out["_batch"] = sizes
    out["_pyscard_over_scardio"] = ratios
    harness.record("pcsc", op, out)
    print(f"\nPC/SC {op} (placement {pcsc_env['place'].mode}): "
          + ", ".join(f"{k}: {v / 1000:.2f} us" for k, v in meds.items())
          + "; pyscard / scardio: " + ", ".join(f"{k}: {r:.2f}" for k, r in ratios.items()))
    _register(op, ratios)
    assert all(v > 0 for v in meds.values()), meds


def test_pcsc_benchmark(pcsc_env, op, benchmark):
    """pytest-benchmark's own timing of the scardio path."""
    benchmark.group = f"PC/SC {op}"
    benchmark.extra_info.update(path=SCARDIO, op=op)
    benchmark(pcsc_env["paths"][SCARDIO].ops[op])


def test_pcsc_event_latency(pcsc_env):
    """Arrival / removal through SCardGetStatusChange: scardio's tracking
    IOCTLs and Monitor against pcscd's own client (a C program blocked in
    SCardGetStatusChange) and pyscard's, the card moved by a process none
    of them runs in.  "alone": one path armed per event, the paths taking
    turns event by event (the target's figures); "together": a scardio path
    and the C client armed for the same events, the arming order
    alternating (docs/benchmarks.md, "scardio over PC/SC against pyscard")."""
    import pcsc_waiter
    from scardio import pcsc
    why = pcsc_waiter.unavailable_reason()
    if why:
        pytest.skip(why)
    w, name = pcsc_env["worker"], pcsc_env["name"]
    stack = contextlib.ExitStack()
    with stack:
        stack.callback(pcsc_waiter.cleanup)
        trigger = card_mover(pcsc_env, stack)
        own = pcsc_waiter.CWaiter(name)
        stack.callback(own.close)
        own_hop = pcsc_waiter.CWaiter(name, handoff=True)
        stack.callback(own_hop.close)
        ref = events.PyscardArmed(w)
        dev = pcsc.open_device(name)
        stack.callback(dev.close)
        device = events.DeviceArmed(dev)
        stack.callback(device.close)
        device.name += " over PC/SC"
        sync_dev = pcsc.open_device(name)
        stack.callback(sync_dev.close)
        sync = events.SyncDeviceArmed(sync_dev)
        stack.callback(sync.close)
        sync.name += " over PC/SC"
        wait_reader = pcsc.open_reader(name)
        stack.callback(wait_reader.close)
        waits = events.ReaderArmed(wait_reader)
        stack.callback(waits.close)
        waits.name += " over PC/SC"
        floors = {}
        for how in ("waitable", "blocking"):
            fdev = pcsc.open_device(name)
            stack.callback(fdev.close)
            floors[how] = events.HarvestArmed(fdev, how)
            stack.callback(floors[how].close)
            floors[how].name += " over PC/SC"
        mon_reader = pcsc.open_reader(name)
        stack.callback(mon_reader.close)
        monitor = events.MonitorArmed(mon_reader)
        monitor.name += " over PC/SC"
        stack.callback(monitor.close)
        alone_paths = [device, monitor, sync, waits, floors["waitable"], floors["blocking"],
                       own, own_hop, ref]
        alone: dict = {p.name: {k: [] for k in events.KINDS} for p in alone_paths}
        together: dict = {s.name: {} for s in (device, monitor)}

        def add(into: dict, got: dict) -> None:
            for path, kinds in got.items():
                for kind, v in kinds.items():
                    into.setdefault(path, {}).setdefault(kind, []).extend(v)
        try:
            for r in range(EVENT_ROUNDS):
                k = r % len(alone_paths)
                for p in alone_paths[k:] + alone_paths[:k]:
                    add(alone, events.run_together([p], trigger, 1, seed=r))
                for subject in (device, monitor):
                    order = [subject, own] if r % 2 == 0 else [own, subject]
                    add(together[subject.name], events.run_together(order, trigger, 1, seed=r))
        finally:
            w.call("ctl", n=SIM_INSERT)  # leave the card in, as found
            _connect_transmitters(pcsc_env)
    out: dict = {}
    tables = [("alone", alone)] + [(f"together with {s}", together[s]) for s in together]
    for how, armed in tables:
        for path, kinds in armed.items():
            if how != "alone" and path != own.name:
                key = f"{path}, armed with the C client"
            elif how != "alone":
                key = f"{path}, {how}"
            else:
                key = path
            out[key] = {kd: harness.summary(v) for kd, v in kinds.items()}
            out[key]["_samples"] = kinds
            print(f"\n{key}: " + ", ".join(
                f"{kd} median {harness.median(v):.3f} ms (p90 {harness.percentile(v, 0.9):.3f})"
                for kd, v in kinds.items()))
    harness.record("events_pcsc", "latency_ms", out)
    # "Equal to pcscd's own": scardio's median at most that of a C client
    # of the same shape, plus 10 %, each alone on events of the same kind,
    # taking turns.  A blocking wait (the Monitor's callback runs on the
    # thread that learns of the event) against the C client blocked in
    # SCardGetStatusChange; an overlapped request (the tracking lane waits,
    # the thread in Operation.wait() is told) against the C client handing
    # its result to a thread of its own.
    for subject, like in ((device, own_hop), (waits, own), (monitor, own)):
        for kind, label in (("insert", "arrival"), ("remove", "removal")):
            mine = harness.median(alone[subject.name][kind])
            theirs = harness.median(alone[like.name][kind])
            direct = harness.median(alone[own.name][kind])
            hop = harness.median(alone[own_hop.name][kind])
            py = harness.median(alone[ref.name][kind])
            floor = harness.median(alone[sync.name][kind])
            woken = {how: harness.median(alone[f.name][kind]) for how, f in floors.items()}
            both = ""
            pair = together.get(subject.name)
            if pair:
                t_mine, t_theirs = (harness.median(pair[n][kind])
                                    for n in (subject.name, own.name))
                both = (f"; armed together with the C client {t_mine / t_theirs:.2f}× "
                        f"({t_mine:.3f} ms vs {t_theirs:.3f} ms)")
            harness.record_target(
                f"PC/SC card {label}: {subject.name} ÷ {like.name}, each armed alone "
                f"(issue 13)", mine / theirs, 1.1, "×",
                note=f"medians {mine:.3f} ms vs {theirs:.3f} ms; ÷ the C client blocked in "
                     f"SCardGetStatusChange ({direct:.3f} ms) {mine / direct:.2f}×, "
                     f"÷ the C client handing its result to another thread "
                     f"({hop:.3f} ms, {hop / direct:.2f}× the first) {mine / hop:.2f}×; "
                     f"pyscard {py:.3f} ms, synchronous Device.ioctl {floor:.3f} ms; "
                     f"floors: a thread woken through Device.waitable() + harvest(), "
                     f"nothing more, {woken['waitable']:.3f} ms "
                     f"({woken['waitable'] / direct:.2f}×), one blocked in "
                     f"harvest(timeout) {woken['blocking']:.3f} ms "
                     f"({woken['blocking'] / direct:.2f}×){both}")
    assert all(len(k["insert"]) == EVENT_ROUNDS for k in alone.values()), alone
