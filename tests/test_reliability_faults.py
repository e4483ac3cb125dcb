"""Reliability, part 1: the driver fault matrix.

Every IFDH entry point of the simulated reader x every failure its fault
injection can produce (each IFD_* return code 600..618, the card removed
during the call, a call that blocks until released, with and without an
error afterwards, a returned length larger than the buffer, an ATR of more
than 33 bytes), each run synchronously (Device.ioctl) and overlapped
(Device.submit + Operation.wait).  Each cell asserts the exact exception
class (or the documented result), then that the reader works again:
reinsert, connect, transmit.

The whole matrix is the three tables below (TRIGGERS, RETURN_CLASS and
EXPECTED); docs/reliability.md shows it as a table.
"""

from __future__ import annotations

import itertools
import struct
import threading
import time
from typing import NamedTuple, Optional, Union

import pytest

import scardio.sim
from scardio import IOCTL, Device, Protocol, State, errors
from scardio.sim import ATR_T1, EntryPoint, Fault, SimControl

_luns = itertools.count(0x21000)

WAIT = 5.0  # upper bound for anything that should finish at once


def dword(v: int) -> bytes:
    return struct.pack("<I", v)


ECHO_APDU = bytes([0x80, 0xEE, 0x00, 0x00, 0x03, 0xA1, 0xB2, 0xC3, 0x03])
ECHO_REQ = struct.pack("<II", Protocol.T1, 8) + ECHO_APDU
ECHO_OUT = struct.pack("<II", Protocol.T1, 8) + bytes([0xA1, 0xB2, 0xC3, 0x90, 0x00])
COUNTERS_CODE = 0x42000000 + 3505
COUNTERS_SIZE = 4 * 19


# ---- table 1: how each entry point is reached ---------------------------------

class Trigger(NamedTuple):
    setup: str          # card state before the call: none / inserted / powered / connected
    code: int           # the IOCTL that reaches the entry point
    input: bytes
    output_size: int
    normal: Union[bytes, type]   # its result on a healthy driver
    action: Optional[str] = None  # what the test does while the call is pending


TRIGGERS: dict[EntryPoint, Trigger] = {
    EntryPoint.GET_CAPABILITIES: Trigger("none", IOCTL.GET_ATTRIBUTE, dword(0x00010100), 64,
                                         b"scardio"),
    EntryPoint.SET_CAPABILITIES: Trigger("none", IOCTL.SET_ATTRIBUTE,
                                         dword(0x00010100) + b"x", 0,
                                         errors.NotSupportedError),  # read-only tag
    EntryPoint.SET_PROTOCOL: Trigger("powered", IOCTL.SET_PROTOCOL,
                                     dword(Protocol.T0 | Protocol.T1), 4, dword(Protocol.T1)),
    EntryPoint.POWER_ICC: Trigger("inserted", IOCTL.POWER, dword(1), 33, ATR_T1),
    EntryPoint.TRANSMIT: Trigger("connected", IOCTL.TRANSMIT, ECHO_REQ, 300, ECHO_OUT),
    EntryPoint.ICC_PRESENCE: Trigger("connected", IOCTL.GET_STATE, b"", 4,
                                     dword(State.SPECIFIC)),
    # SIM_CTL_COUNTERS: the result is the counters (checked by its length)
    EntryPoint.CONTROL: Trigger("connected", COUNTERS_CODE, b"", COUNTERS_SIZE, b"<counters>"),
    # The polling function runs inside IS_ABSENT while the card is in; the
    # test pulls the card 30 ms later.
    EntryPoint.POLLING: Trigger("connected", IOCTL.IS_ABSENT, b"", 0, b"", action="remove"),
}


# ---- table 2: what an IFD_* return code becomes -------------------------------

IFD_CODES = {
    600: "IFD_ERROR_TAG", 601: "IFD_ERROR_SET_FAILURE", 602: "IFD_ERROR_VALUE_READ_ONLY",
    603: "(undefined 603)", 604: "(undefined 604)", 605: "IFD_ERROR_PTS_FAILURE",
    606: "IFD_ERROR_NOT_SUPPORTED", 607: "IFD_PROTOCOL_NOT_SUPPORTED",
    608: "IFD_ERROR_POWER_ACTION", 609: "IFD_ERROR_SWALLOW", 610: "IFD_ERROR_EJECT",
    611: "IFD_ERROR_CONFISCATE", 612: "IFD_COMMUNICATION_ERROR", 613: "IFD_RESPONSE_TIMEOUT",
    614: "IFD_NOT_SUPPORTED", 615: "IFD_ICC_PRESENT", 616: "IFD_ICC_NOT_PRESENT",
    617: "IFD_NO_SUCH_DEVICE", 618: "IFD_ERROR_INSUFFICIENT_BUFFER",
}

RETURN_CLASS: dict[int, type] = {
    600: errors.NotSupportedError, 601: errors.DriverError, 602: errors.NotSupportedError,
    603: errors.DriverError, 604: errors.DriverError, 605: errors.DriverError,
    606: errors.NotSupportedError, 607: errors.NotSupportedError, 608: errors.DriverError,
    609: errors.DriverError, 610: errors.DriverError, 611: errors.DriverError,
    612: errors.DriverError, 613: errors.TimeoutError, 614: errors.NotSupportedError,
    615: errors.DriverError, 616: errors.NoCardError, 617: errors.DeviceGoneError,
    618: errors.BufferTooSmallError,
}

OK = "normal result"

# Exceptions to RETURN_CLASS, per entry point: the documented result.
RETURN_OVERRIDES: dict[EntryPoint, dict[int, object]] = {
    # A driver without PPS support still runs the card's default protocol.
    EntryPoint.SET_PROTOCOL: {606: OK, 614: OK},
    # Presence: IFD_ICC_PRESENT is "card in", IFD_ICC_NOT_PRESENT "no card".
    EntryPoint.ICC_PRESENCE: {615: OK, 616: dword(State.ABSENT)},
    # The polling function's result is only a hint (the core asks
    # IFDHICCPresence next); only IFD_NO_SUCH_DEVICE ends the wait.
    EntryPoint.POLLING: {c: OK for c in IFD_CODES if c != 617},
}

# IFD_ERROR_INSUFFICIENT_BUFFER from an entry point that was not given the
# caller's buffer (the core passes its own, large enough for any legal
# answer) is a driver failure, not something the caller can fix by passing
# a larger buffer: a BufferTooSmallError there invites an endless retry.
INSUFFICIENT_BUFFER_IS_DRIVER_ERROR = (
    EntryPoint.SET_CAPABILITIES, EntryPoint.SET_PROTOCOL, EntryPoint.POWER_ICC,
    EntryPoint.TRANSMIT, EntryPoint.ICC_PRESENCE)


# ---- table 3: the other failures ------------------------------------------------

class Failure(NamedTuple):
    kind: Fault
    value: int
    name: str


FAILURES = ([Failure(Fault.RETURN, c, f"return-{c}") for c in IFD_CODES] + [
    Failure(Fault.REMOVE_CARD, 0, "card-removed"),
    Failure(Fault.BLOCK, 0, "block-until-stop"),
    Failure(Fault.BLOCK, 612, "block-then-612"),
    Failure(Fault.OVERLONG_LENGTH, 1000, "length-past-buffer"),
    Failure(Fault.LONG_ATR, 40, "atr-40-bytes"),
])

EXPECTED_OTHER: dict[tuple[Fault, EntryPoint], object] = {
    # card removed during the call
    (Fault.REMOVE_CARD, EntryPoint.GET_CAPABILITIES): OK,     # needs no card
    (Fault.REMOVE_CARD, EntryPoint.SET_CAPABILITIES): OK,
    (Fault.REMOVE_CARD, EntryPoint.SET_PROTOCOL): errors.NoCardError,
    (Fault.REMOVE_CARD, EntryPoint.POWER_ICC): errors.NoCardError,
    (Fault.REMOVE_CARD, EntryPoint.TRANSMIT): errors.NoCardError,
    (Fault.REMOVE_CARD, EntryPoint.ICC_PRESENCE): dword(State.ABSENT),
    (Fault.REMOVE_CARD, EntryPoint.CONTROL): OK,
    (Fault.REMOVE_CARD, EntryPoint.POLLING): OK,               # the departure it waited for
    # a length larger than the buffer the driver was given
    (Fault.OVERLONG_LENGTH, EntryPoint.GET_CAPABILITIES): errors.DriverDataError,
    (Fault.OVERLONG_LENGTH, EntryPoint.POWER_ICC): errors.DriverDataError,
    (Fault.OVERLONG_LENGTH, EntryPoint.TRANSMIT): errors.DriverDataError,
    (Fault.OVERLONG_LENGTH, EntryPoint.CONTROL): errors.DriverDataError,
    # an ATR of more than 33 bytes
    (Fault.LONG_ATR, EntryPoint.POWER_ICC): errors.DriverDataError,
}


def expected(ep: EntryPoint, f: Failure) -> object:
    """The exception class, the exact output (bytes) or OK for one cell."""
    if f.kind is Fault.RETURN or (f.kind is Fault.BLOCK and f.value):
        over = RETURN_OVERRIDES.get(ep, {})
        if f.value in over:
            return over[f.value]
        if f.value == 618 and ep in INSUFFICIENT_BUFFER_IS_DRIVER_ERROR:
            return errors.DriverError
        return RETURN_CLASS[f.value]
    if f.kind is Fault.BLOCK:
        return OK
    return EXPECTED_OTHER.get((f.kind, ep), OK)  # the fault does not apply: normal


def _cells():
    for ep in TRIGGERS:
        for f in FAILURES:
            yield pytest.param(ep, f, id=f"{ep.name.lower()}-{f.name}")


# ---- running one call -----------------------------------------------------------

class Call:
    """One IOCTL run synchronously in a helper thread or overlapped; either
    way it can be polled and waited for with a timeout."""

    def __init__(self, dev: Device, mode: str, code: int, data: bytes, size: int) -> None:
        self.mode = mode
        self.result: object = None
        self.error: Optional[BaseException] = None
        if mode == "overlapped":
            self.op = dev.submit(code, data, size)
        else:
            self.op = None
            self._done = threading.Event()

            def run() -> None:
                try:
                    self.result = dev.ioctl(code, data, size)
                except BaseException as exc:  # noqa: BLE001 - reported to the test
                    self.error = exc
                finally:
                    self._done.set()

            self.thread = threading.Thread(target=run, daemon=True)
            self.thread.start()

    def done(self) -> bool:
        return self.op.done() if self.op is not None else self._done.is_set()

    def outcome(self, timeout: float) -> object:
        """The output bytes, or the exception instance raised."""
        if self.op is not None:
            try:
                return self.op.wait(timeout)
            except errors.ScardioError as exc:
                if isinstance(exc, errors.TimeoutError) and not self.op.done():
                    raise AssertionError(f"call still pending after {timeout} s") from None
                return exc
        if not self._done.wait(timeout):
            raise AssertionError(f"call still pending after {timeout} s")
        self.thread.join(timeout)
        return self.error if self.error is not None else self.result


def state(dev: Device) -> State:
    return State(struct.unpack("<I", dev.ioctl(IOCTL.GET_STATE, b"", 4))[0])


def connect(dev: Device) -> None:
    assert dev.ioctl(IOCTL.POWER, dword(1), 33) == ATR_T1
    assert dev.ioctl(IOCTL.SET_PROTOCOL, dword(Protocol.T0 | Protocol.T1), 4) == dword(2)


def prepare(dev: Device, sim: SimControl, setup: str) -> None:
    if setup == "none":
        return
    sim.insert()
    if setup in ("powered", "connected"):
        assert dev.ioctl(IOCTL.POWER, dword(1), 33) == ATR_T1
    if setup == "connected":
        assert dev.ioctl(IOCTL.SET_PROTOCOL, dword(3), 4) == dword(2)


def assert_usable_again(dev: Device, sim: SimControl) -> None:
    """Reinsert, connect, transmit: the reader works end to end."""
    sim.stop()  # disarm anything the cell did not consume
    sim.remove()
    assert state(dev) == State.ABSENT
    sim.insert()
    assert state(dev) == State.SWALLOWED
    connect(dev)
    assert dev.ioctl(IOCTL.TRANSMIT, ECHO_REQ, 300) == ECHO_OUT
    # and card tracking still works
    assert dev.submit(IOCTL.IS_PRESENT).wait(WAIT) == b""


def check_outcome(ep: EntryPoint, want: object, got: object) -> None:
    trig = TRIGGERS[ep]
    if want is OK:
        want = trig.normal
    if ep is EntryPoint.CONTROL and want == trig.normal:
        assert isinstance(got, bytes) and len(got) == COUNTERS_SIZE, repr(got)
        return
    if isinstance(want, type):
        assert isinstance(got, errors.ScardioError), f"expected {want.__name__}, got {got!r}"
        if want is errors.DriverError:
            # the fixed core may say DriverDataError (a DriverError) as well
            assert isinstance(got, errors.DriverError), f"expected DriverError, got {got!r}"
        else:
            assert type(got) is want, f"expected {want.__name__}, got {type(got).__name__}: {got}"
        return
    assert got == want, f"expected {want!r}, got {got!r}"


@pytest.mark.parametrize("mode", ["sync", "overlapped"])
@pytest.mark.parametrize("ep,failure", list(_cells()))
def test_fault_matrix(ep: EntryPoint, failure: Failure, mode: str) -> None:
    trig = TRIGGERS[ep]
    want = expected(ep, failure)
    dev = scardio.sim.open_device(next(_luns), close_timeout_ms=1000)
    sim = SimControl(dev)
    try:
        prepare(dev, sim, trig.setup)
        sim.fault(ep, failure.kind, failure.value)
        call = Call(dev, mode, trig.code, trig.input, trig.output_size)
        if failure.kind is Fault.BLOCK:
            time.sleep(0.05)
            assert not call.done(), "a BLOCKed call finished before STOP"
            if call.op is not None:
                with pytest.raises(errors.TimeoutError):
                    call.op.wait(0.02)  # a wait with a timeout never hangs
        if trig.action == "remove":
            time.sleep(0.03)
            sim.remove()
        if failure.kind is Fault.BLOCK:
            time.sleep(0.02)
            assert not call.done()
            sim.stop()
        got = call.outcome(WAIT)
        if isinstance(got, errors.ScardioError) and failure.kind is Fault.RETURN and \
                isinstance(want, type) and got.driver_code:
            assert got.driver_code == failure.value
        check_outcome(ep, want, got)
        if isinstance(got, errors.ScardioError):
            assert isinstance(got.status, int) and got.status_name
            assert str(got)  # the message renders
        assert_usable_again(dev, sim)
    finally:
        t = time.monotonic()
        dev.close()
        assert time.monotonic() - t < 1.5


def test_matrix_covers_every_entry_point_a_device_call_reaches() -> None:
    # CREATE_CHANNEL runs only inside open (see test_fault_armed_on_create_channel_never_fires)
    # and CLOSE_CHANNEL only inside close (test_close_channel_failures_*).
    assert set(TRIGGERS) | {EntryPoint.CREATE_CHANNEL, EntryPoint.CLOSE_CHANNEL} == \
        set(EntryPoint)
    assert [c for c in range(600, 619)] == sorted(IFD_CODES)


def test_fault_armed_on_create_channel_never_fires(sim_device, sim) -> None:
    for f in FAILURES:
        if f.kind is Fault.BLOCK:
            continue
        sim.fault(EntryPoint.CREATE_CHANNEL, f.kind, f.value)
        assert state(sim_device) == State.ABSENT
    assert_usable_again(sim_device, sim)


@pytest.mark.parametrize("failure", [f for f in FAILURES if f.kind is not Fault.BLOCK],
                         ids=lambda f: f.name)
def test_close_channel_failures_do_not_stop_close(failure: Failure) -> None:
    """IFDHCloseChannel failing: close still returns at once and the device
    is closed; the driver's LUN may stay open (a driver that failed to close
    its channel), which a reopen reports as ChannelOpenError."""
    lun = next(_luns)
    dev = scardio.sim.open_device(lun, close_timeout_ms=500)
    sim = SimControl(dev)
    prepare(dev, sim, "connected")
    sim.fault(EntryPoint.CLOSE_CHANNEL, failure.kind, failure.value)
    t = time.monotonic()
    dev.close()
    assert time.monotonic() - t < 0.5
    assert dev.closed
    with pytest.raises(errors.ClosedError):
        dev.ioctl(IOCTL.GET_STATE, b"", 4)
    try:
        again = scardio.sim.open_device(lun)
    except errors.ChannelOpenError:
        assert failure.kind is Fault.RETURN  # the sim kept the channel open
    else:
        again.close()


# ---- tracking and driver faults: events must not be invented -------------------

def test_transient_capability_failure_does_not_invent_an_arrival(sim_device, sim) -> None:
    """Regression (found here, fixed in the IFD backend: events_stale): a failed
    IFDHGetCapabilities(SCIO_IFD_TAG_CARD_EVENTS) while an IS_PRESENT completed on
    presence left the event baseline behind, so a later IS_PRESENT completed
    with no card in the reader (a phantom arrival)."""
    sim.insert()
    sim.fault(EntryPoint.GET_CAPABILITIES, Fault.RETURN, 612)
    assert sim_device.submit(IOCTL.IS_PRESENT).wait(WAIT) == b""  # card is in
    gone = sim_device.submit(IOCTL.IS_ABSENT)
    time.sleep(0.02)
    sim.remove()
    assert gone.wait(WAIT) == b""
    arrival = sim_device.submit(IOCTL.IS_PRESENT)
    try:
        with pytest.raises(errors.TimeoutError):
            arrival.wait(0.2)  # no card has arrived
    finally:
        arrival.cancel()
    assert state(sim_device) == State.ABSENT


@pytest.mark.parametrize("ep", [EntryPoint.ICC_PRESENCE, EntryPoint.GET_CAPABILITIES,
                                EntryPoint.POLLING])
@pytest.mark.parametrize("code", [612, 613])
def test_tracking_survives_a_transient_driver_error(sim_device, sim, ep, code) -> None:
    """A tracking request hit by a one-off driver error either fails typed or
    carries on; the next arrival and departure are then each reported."""
    sim.fault(ep, Fault.RETURN, code)
    op = sim_device.submit(IOCTL.IS_PRESENT)
    time.sleep(0.03)
    sim.insert()
    try:
        op.wait(WAIT)
    except (errors.DriverError, errors.TimeoutError) as exc:
        assert exc.driver_code == code
        assert sim_device.submit(IOCTL.IS_PRESENT).wait(WAIT) == b""
    gone = sim_device.submit(IOCTL.IS_ABSENT)
    time.sleep(0.02)
    assert not gone.done()
    sim.remove()
    assert gone.wait(WAIT) == b""
    assert_usable_again(sim_device, sim)


# ---- the same one-off errors under a Monitor: nothing lost, nothing made up -----

#: What a one-off IFD code from an entry point that card tracking reaches
#: becomes in a Monitor's stream: an exception class is one `error` event of
#: that class (tracking resumes; DeviceGoneError ends it, and add() starts it
#: again), None is no error event at all.  ICC_PRESENCE and the polling
#: function follow the matrix; a failed read of the card-event count
#: (GET_CAPABILITIES, an optional extension) falls back on IFDHICCPresence,
#: whatever the code, so it is never an error of its own.
def tracking_outcome(ep: EntryPoint, code: int) -> Optional[type]:
    if ep is EntryPoint.GET_CAPABILITIES:
        return None
    want = expected(ep, Failure(Fault.RETURN, code, f"return-{code}"))
    return want if isinstance(want, type) else None


# IFD_ICC_PRESENT / IFD_ICC_NOT_PRESENT from IFDHICCPresence are answers, not
# errors: each is armed only while it is true (a driver that says "no card"
# with a card in reports a departure, as it would to pcscd).
PRESENCE_ANSWER_IS_TRUE_WITH_CARD = {615: True, 616: False}


def _tracking_cells():
    for ep in (EntryPoint.ICC_PRESENCE, EntryPoint.POLLING, EntryPoint.GET_CAPABILITIES):
        for code in IFD_CODES:
            for card_in in (False, True):
                if ep is EntryPoint.ICC_PRESENCE and \
                        PRESENCE_ANSWER_IS_TRUE_WITH_CARD.get(code, card_in) != card_in:
                    continue
                yield pytest.param(ep, code, card_in,
                                   id=f"{ep.name.lower()}-{code}-{'in' if card_in else 'out'}")


@pytest.mark.parametrize("ep,code,card_in", list(_tracking_cells()))
def test_monitor_loses_no_event_under_a_one_off_driver_error(ep, code, card_in) -> None:
    """Item 7 of the reliability issue at the Monitor level, for every code
    of the matrix: the fault is armed while IS_PRESENT (card out) or
    IS_ABSENT (card in) is pending and fires on the card move that follows;
    the error is reported once (or not at all where the matrix says the code
    is not an error), tracking resumes, and that move and the next two
    insertions and two removals are each reported exactly once.  A
    DeviceGoneError ends tracking (the reader leaves Monitor.readers), and
    add() restarts it: a card that is in then is an arrival, and every later
    move is reported."""
    from helpers_reader import Recorder, sim_reader
    from scardio import Monitor
    from scardio.monitor import ARRIVAL, DEPARTURE, ERROR

    want_error = tracking_outcome(ep, code)
    rec = Recorder()
    with sim_reader() as (reader, sim), Monitor([reader], callback=rec) as mon:
        present = card_in
        if present:
            sim.insert()
            rec.wait_for(ARRIVAL)
        expect = [ARRIVAL] if present else []
        calls_before = sim.counters().calls[ep]
        sim.fault(ep, Fault.RETURN, code)
        if ep is EntryPoint.ICC_PRESENCE and code in PRESENCE_ANSWER_IS_TRUE_WITH_CARD:
            # An answer is only true before the move; the tracker makes no
            # presence call until a move wakes it, so fire it with a look of
            # the reader's own now (fired after the move it is a driver's lie,
            # which the Monitor reports as faithfully as pcscd would).
            reader.state()
            assert sim.counters().calls[ep] > calls_before, "the fault never fired"
        for move in range(5):
            if present:
                sim.remove()
            else:
                sim.insert()
            present = not present
            kind = ARRIVAL if present else DEPARTURE
            if move == 0:
                # Mostly the call this move causes; else a later one.
                deadline = time.monotonic() + WAIT
                while sim.counters().calls[ep] == calls_before:
                    assert time.monotonic() < deadline, "the fault never fired"
                    time.sleep(0.01)
            if move == 0 and want_error is errors.DeviceGoneError:
                assert isinstance(rec.wait_for(ERROR).error, errors.DeviceGoneError)
                assert mon.readers == []  # tracking ended, and that was reported
                # The move is seen when the fault hit a later call (the
                # polling function armed while a poll was running), not
                # when it hit the presence check that would have seen it.
                seen = [k for k in rec.kinds() if k != ERROR]
                assert seen in (expect, expect + [kind]), rec.kinds()
                expect = seen
                mon.add(reader)           # starts it again
                assert mon.readers == [reader]
                if present:               # a card that is in is an arrival at once
                    expect.append(ARRIVAL)
                    rec.wait_for(ARRIVAL, n=expect.count(ARRIVAL))
                continue
            expect.append(kind)
            rec.wait_for(kind, n=expect.count(kind))
        errs = [e.error for e in rec.events if e.kind == ERROR]
        if want_error is None:
            assert errs == []
        else:
            assert len(errs) == 1 and type(errs[0]) is want_error, errs
            if errs[0].driver_code:
                assert errs[0].driver_code == code
        assert [k for k in rec.kinds() if k != ERROR] == expect, rec.kinds()
        assert mon.readers == [reader]


def test_failed_presence_check_leaves_no_stale_event_behind(sim_device, sim) -> None:
    """An IS_ABSENT that fails in IFDHICCPresence (here IFD_NO_SUCH_DEVICE,
    the card being pulled meanwhile) must not leave that removal to be
    reported later: after the card comes back, an IS_ABSENT stays pending.
    Found by test_monitor_loses_no_event_under_a_one_off_driver_error
    (icc_presence-617-in): the Monitor restarted tracking, the next insertion
    was followed at once by a phantom departure and arrival."""
    sim.insert()
    assert sim_device.submit(IOCTL.IS_PRESENT).wait(WAIT) == b""
    absent = sim_device.submit(IOCTL.IS_ABSENT)
    time.sleep(0.02)
    sim.fault(EntryPoint.ICC_PRESENCE, Fault.RETURN, 617)
    sim.remove()
    with pytest.raises(errors.DeviceGoneError):
        absent.wait(WAIT)
    arrival = sim_device.submit(IOCTL.IS_PRESENT)
    time.sleep(0.02)
    sim.insert()
    assert arrival.wait(WAIT) == b""
    departure = sim_device.submit(IOCTL.IS_ABSENT)  # the card is in
    try:
        with pytest.raises(errors.TimeoutError):
            departure.wait(0.2)
    finally:
        departure.cancel()
