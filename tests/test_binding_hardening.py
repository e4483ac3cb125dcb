"""The binding cannot be crashed, hung or fooled from Python: objects that
were never initialised, deallocation of a pending operation whose driver
stop function blocks, a fork() after opening, timeouts of every shape, and
strings with a NUL inside.  Anything that could crash or hang runs in a
child process with a timeout, so it fails the test instead of pytest."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap

import pytest

import scardio
import scardio.sim
from platform_support import WINDOWS
from scardio import IOCTL, _core
from scardio.sim import SimControl


def run_child(code: str, timeout: float = 30.0, env: dict | None = None) -> str:
    """Run `code` in a fresh interpreter: its output; the test fails if it
    crashes (a signal), exits non-zero or hangs."""
    child_env = dict(os.environ)
    pkg_parent = os.path.dirname(os.path.dirname(os.path.abspath(scardio.__file__)))
    child_env["PYTHONPATH"] = pkg_parent + os.pathsep + child_env.get("PYTHONPATH", "")
    child_env.update(env or {})
    try:
        proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)],
                              capture_output=True, text=True, timeout=timeout, env=child_env)
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        raise AssertionError(f"child hung (> {timeout} s); output:\n{out}") from None
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"child exited with {proc.returncode}:\n{out}"
    return out


# ---- objects that were never initialised -------------------------------------------

def test_binding_objects_cannot_be_constructed_directly():
    with pytest.raises(TypeError, match="Device.submit"):
        _core.Operation()
    with pytest.raises(TypeError, match="open_ifd"):
        _core.Device()


# Arguments for the methods that take some (every other one is called bare).
UNINITIALISED_CHILD = """
    import math
    from scardio import _core, errors
    from scardio.constants import IOCTL
    ARGS = {
        "ioctl": (IOCTL.GET_STATE, b"", 4), "submit": (IOCTL.GET_STATE, b"", 4),
        "harvest": (0.01,), "wait": (0.01,), "dispatch": (0.01,), "__exit__": (None, None, None),
        "call_on_lane": (lambda: None, 0.01), "transmit": (b"\\x00\\xA4\\x04\\x00",),
        "open_ifd": None, "open_path": None, "open_pcsc": None,  # constructors: tested elsewhere
    }
    SAFE = (errors.ScardioError, TypeError, ValueError)
    # ReaderLock is RLock's twin: releasing a lock one does not hold is its RuntimeError.
    ALSO_SAFE = {("ReaderLock", "release"): (RuntimeError,)}
    # Every class the binding defines, so that a new one is walked without editing this.
    classes = [v for v in vars(_core).values()
               if isinstance(v, type) and v.__module__ == "scardio._core"]
    print("CLASSES", " ".join(sorted(c.__name__ for c in classes)), flush=True)
    for cls in classes:
        try:
            obj = cls.__new__(cls)
        except SAFE as exc:  # a class whose __cinit__ needs a service here absent
            print(cls.__name__, "__new__ raised", type(exc).__name__, flush=True)
            continue
        names = [n for n in dir(cls) if not n.startswith("_")] + ["__repr__", "__enter__", "__exit__"]
        for name in names:
            if ARGS.get(name, ()) is None or not hasattr(cls, name):
                continue
            attr = getattr(cls, name)
            try:
                if isinstance(attr, property) or not callable(getattr(obj, name)):
                    value = getattr(obj, name)
                else:
                    value = getattr(obj, name)(*ARGS.get(name, ()))
                outcome = "returned " + repr(value)[:40]
            except SAFE + ALSO_SAFE.get((cls.__name__, name), ()) as exc:
                outcome = "raised " + type(exc).__name__
            print(cls.__name__, name, outcome, flush=True)
    print("SURVIVED", flush=True)
"""


def test_every_method_of_an_uninitialised_binding_object_is_safe():
    """cls.__new__ bypasses the constructors of every class the binding
    defines: every method and property then gives a typed error or a value,
    never a crash nor an AttributeError from inside (regressions:
    Operation's read a NULL pointer, SIGSEGV; CardBase.transmit raised
    AttributeError on its missing reader)."""
    out = run_child(UNINITIALISED_CHILD)
    assert "SURVIVED" in out, out
    walked = out.split("CLASSES", 1)[1].split("\n", 1)[0].split()
    assert {"Operation", "Device", "PcscReaderWatch", "ReaderLock", "CardBase"} <= set(walked), out
    # the methods that reach the core refuse, naming what is wrong
    for line in ("Operation wait raised InvalidStateError", "Operation id raised InvalidStateError",
                 "Operation result raised InvalidStateError", "Operation cancel raised InvalidStateError",
                 "Device ioctl raised ClosedError", "Device harvest raised ClosedError",
                 "Device call_on_lane raised ClosedError",
                 "CardBase transmit raised InvalidStateError"):
        assert line in out, out
    assert "Operation __repr__ returned '<scardio.Operation (not submitted)>'" in out, out


# ---- deallocation never runs the driver with the GIL held ---------------------------

@pytest.fixture(scope="module")
def slow_stop_driver() -> str:
    """The hostile driver (tests/hostile/hostile_ifd.c); its no-card and
    slow-stop modes make IS_PRESENT wait in a polling function whose stop
    function blocks SLOW_STOP_MS."""
    if WINDOWS:
        pytest.skip("the test driver is built as a POSIX shared object")
    from hostile_driver import build
    return build()


DEALLOC_CHILD = """
    import gc, threading, time
    from scardio import _core
    from scardio.constants import IOCTL
    dev = _core.Device.open_ifd({lib!r}, "no-card,slow-stop", 0)
    op = dev.submit(IOCTL.IS_PRESENT)        # waits in the driver's polling function
    time.sleep(0.3)
    ticks, stop = [], threading.Event()
    def ticker():                            # needs the GIL every 10 ms
        while not stop.is_set():
            ticks.append(time.monotonic())
            time.sleep(0.01)
    th = threading.Thread(target=ticker)
    th.start()
    time.sleep(0.1)
    t = time.monotonic()
    if {how!r} == "gc":
        holder = [op]; holder.append(holder)  # only the collector frees it
        del op, holder
        gc.collect()
    else:
        del op                               # cancels it: the driver's stop function runs
    took = time.monotonic() - t
    time.sleep(1.0)
    stop.set(); th.join()
    meanwhile = sum(1 for x in ticks if t <= x <= t + 1.0)
    print("DEALLOC", round(took, 3), "TICKS", meanwhile, flush=True)
    dev.close()
    print("CLOSED", flush=True)
"""


@pytest.mark.parametrize("how", ["del", "gc"])
def test_releasing_a_pending_operation_never_blocks_nor_holds_the_gil(slow_stop_driver, how):
    """Dropping the last reference to a pending tracking operation cancels
    it; the driver's stop function (here: blocks 1.5 s) runs on a core
    thread, so the deallocation returns at once and other threads keep the
    GIL meanwhile.  Regression: __dealloc__ ran it in place with the GIL
    held, freezing every thread (a deadlock if the driver needs the GIL)."""
    out = run_child(DEALLOC_CHILD.format(lib=slow_stop_driver, how=how), timeout=20,
                    env={"SLOW_STOP_MS": "1500"})
    assert "CLOSED" in out, out
    fields = out.split("DEALLOC", 1)[1].split()
    took, ticks = float(fields[0]), int(fields[2])
    assert took < 0.3, out
    assert ticks >= 20, out  # the ticker ran while the stop function blocked


# ---- timeouts ------------------------------------------------------------------------

@pytest.fixture
def dev():
    d = scardio.sim.open_device(0x7E00)
    try:
        yield d
    finally:
        d.close()


@pytest.mark.parametrize("bad", [-0.001, -1, -math.inf, math.nan])
def test_negative_or_nan_timeouts_are_refused_everywhere(dev, bad):
    from scardio.probe import probe_atr
    from scardio.reader import Reader
    op = dev.submit(IOCTL.GET_STATE, b"", 4)
    for call in (op.wait, dev.harvest):
        with pytest.raises(ValueError, match="timeout must be seconds >= 0, inf or None"):
            call(bad)
    op.wait(5)
    SimControl(dev).insert()
    reader = Reader(dev, power_down_timeout=None)
    try:
        for call in (reader.wait_for_card, reader.wait_for_removal, reader.connect,
                     lambda timeout: probe_atr(reader, timeout)):
            with pytest.raises(ValueError, match="timeout must be seconds >= 0, inf or None"):
                call(timeout=bad)
        card = reader.connect(timeout=5)
        with pytest.raises(ValueError, match="timeout must be seconds >= 0, inf or None"):
            card.transmit(bytes([0x80, 0xEE, 0, 0, 1]), timeout=bad)
        assert card.transmit(bytes([0x80, 0xEE, 0, 0, 1]), timeout=math.inf).sw == 0x9000
    finally:
        reader.close()


def test_non_numbers_are_not_timeouts(dev):
    with pytest.raises(TypeError):
        dev.harvest("1")
    with pytest.raises(TypeError):
        dev.submit(IOCTL.GET_STATE, b"", 4).wait("1")


@pytest.mark.parametrize("forever", [None, math.inf, 1e12])
def test_harvest_waits_without_a_bound_until_a_wake(dev, forever):
    """None and inf mean no timeout (regression: refused); a huge finite
    one works too (it used to overflow the core's int milliseconds)."""
    import threading
    import time
    timer = threading.Timer(0.3, dev.wake)
    timer.start()
    t = time.monotonic()
    try:
        assert dev.harvest(forever) == []
    finally:
        timer.cancel()
    assert 0.25 <= time.monotonic() - t < 3.0
    op = dev.submit(IOCTL.GET_STATE, b"", 4)
    assert dev.harvest(forever) == [op]


# ---- fork ------------------------------------------------------------------------------

FORK_CHILD = """
    import os, signal, sys, time
    import scardio.sim
    from scardio import errors
    from scardio.constants import IOCTL
    from scardio.sim import SimControl
    dev = scardio.sim.open_device(0x7E10)
    op = dev.submit(IOCTL.IS_PRESENT)          # pending in the parent's lane thread
    pid = os.fork()
    if pid == 0:
        signal.alarm(10)                         # a hang kills the child: the parent sees it
        bad = []
        for name, call in [("ioctl", lambda: dev.ioctl(IOCTL.GET_STATE, b"", 4)),
                           ("submit", lambda: dev.submit(IOCTL.GET_STATE, b"", 4)),
                           ("harvest", lambda: dev.harvest(None)),
                           ("fileno", dev.fileno), ("wake", dev.wake),
                           ("cancel_all", dev.cancel_all),
                           ("wait", lambda: op.wait()), ("done", op.done),
                           ("result", op.result), ("cancel", op.cancel)]:
            t = time.monotonic()
            try:
                call()
                bad.append(name + " worked")
            except errors.InvalidStateError as exc:
                if "opened in the parent process" not in str(exc):
                    bad.append(name + ": " + str(exc))
            if time.monotonic() - t > 0.1:
                bad.append(name + " was slow")
        repr(op); repr(dev)
        t = time.monotonic()
        dev.close()
        if time.monotonic() - t > 0.1 or not dev.closed:
            bad.append("close was slow")
        del op, dev                               # leaves the parent's state alone
        other = scardio.sim.open_device(0x7E11)   # a reader opened in the child works
        other.ioctl(IOCTL.GET_STATE, b"", 4)
        other.close()
        print("CHILD", bad or "OK", flush=True)
        os._exit(0 if not bad else 1)
    deadline = time.monotonic() + 15
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            print("CHILD HUNG", flush=True)
            sys.exit(1)
        time.sleep(0.02)
    print("CHILD STATUS", status, flush=True)
    # the parent is unaffected: its operation is still pending and completes
    assert dev.ioctl(IOCTL.GET_STATE, b"", 4) and not op.done()
    SimControl(dev).insert()
    op.wait(5)
    assert dev.harvest(1) == [op]
    dev.close()
    print("PARENT OK", flush=True)
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork (POSIX)")
def test_a_device_inherited_through_fork_refuses_at_once_and_closes_at_once():
    """Regression: in the child, op.wait() hung for good (the lane threads
    are the parent's) and close() took the full close timeout."""
    out = run_child(FORK_CHILD, timeout=40)
    assert "CHILD OK" in out and "CHILD STATUS 0" in out and "PARENT OK" in out, out


C_FORK_CHILD = """
    import ctypes, os, signal, sys, time
    import scardio.sim
    from scardio import errors
    from scardio.constants import IOCTL
    from scardio.sim import SimControl
    dev = scardio.sim.open_device(0x7E12)
    op = dev.submit(IOCTL.IS_PRESENT)          # pending in the parent's lane thread
    # C's fork(), through ctypes: none of Python's fork hooks (os.register_at_fork)
    # run.  PyDLL keeps the GIL across the call, so the child holds it.
    pid = ctypes.PyDLL(None).fork()
    if pid == 0:
        # The child makes only the calls under test, then os._exit: its exit
        # code says what failed (a hang: SIGALRM ends it).
        signal.alarm(10)
        code = 0
        for n, call in enumerate([lambda: dev.ioctl(IOCTL.GET_STATE, b"", 4),
                                  lambda: dev.submit(IOCTL.GET_STATE, b"", 4),
                                  lambda: op.wait(), op.done, dev.harvest]):
            t = time.monotonic()
            try:
                call()
                code = code or 10 + n                # worked: not detected
            except errors.InvalidStateError as exc:
                if "opened in the parent process" not in str(exc):
                    code = code or 20 + n
            if time.monotonic() - t > 0.1:
                code = code or 30 + n
        t = time.monotonic()
        dev.close()
        if time.monotonic() - t > 0.1 or not dev.closed:
            code = code or 40
        del op, dev                                # leaves the parent's state alone
        os._exit(code)
    deadline = time.monotonic() + 15
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            print("CHILD HUNG", flush=True)
            sys.exit(1)
        time.sleep(0.02)
    print("CHILD EXIT", os.waitstatus_to_exitcode(status), flush=True)
    # the parent is unaffected: its operation is still pending and completes
    assert dev.ioctl(IOCTL.GET_STATE, b"", 4) and not op.done()
    SimControl(dev).insert()
    op.wait(5)
    assert dev.harvest(1) == [op]
    dev.close()
    print("PARENT OK", flush=True)
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork() (POSIX)")
def test_a_fork_made_from_c_is_detected_too():
    """A child made by C's fork() (here through ctypes), which runs none of
    Python's fork hooks, is told apart by the core's pthread_atfork
    generation: every call raises InvalidStateError at once, close() is
    immediate and the parent's pending operation still completes.
    Regression: the binding counted forks with os.register_at_fork only, so
    in this child ioctl() ran the parent's driver state (exit 10) and
    op.wait() hung."""
    out = run_child(C_FORK_CHILD, timeout=40)
    assert "CHILD EXIT 0" in out and "PARENT OK" in out, out


# ---- NUL characters ----------------------------------------------------------------------

@pytest.mark.parametrize("kind", [str, bytes])
def test_a_nul_inside_a_path_or_name_is_refused(kind):
    """Regression: C cut the string at the NUL, so `lib.so\\0junk` loaded
    lib.so."""
    lib = scardio.sim.SIM_LIBRARY
    conv = os.fsencode if kind is bytes else str
    with pytest.raises(ValueError, match="library must not contain a NUL"):
        _core.Device.open_ifd(conv(lib + "\0junk"), conv("sim:1"), 0x7E20)
    with pytest.raises(ValueError, match="device_name must not contain a NUL"):
        _core.Device.open_ifd(conv(lib), conv("sim:1\0junk"), 0x7E20)
    with pytest.raises(ValueError, match="path must not contain a NUL"):
        _core.Device.open_path("reader\0junk")
    # the same strings without the NUL part still open
    _core.Device.open_ifd(conv(lib), conv("sim:1"), 0x7E20).close()
