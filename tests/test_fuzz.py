"""Reliability, part 6: fuzzing.

* hypothesis property tests: the ATR parser (scardio.atr), APDU parsing and
  encoding (scardio.apdu), response splitting, and Device.ioctl / submit on
  the simulated reader with random codes, inputs and output sizes (errors
  only from scardio.errors, ValueError or TypeError; never a crash; the
  reader still usable afterwards);
* the libFuzzer targets in native/fuzz/ (core + IFD backend + sim driven by
  IOCTLs and fault injection, the core's ATR walker, the sim card's APDU
  processing), built with -fsanitize=fuzzer,address,undefined and run
  briefly when clang and its sanitizer runtime are available.
"""

from __future__ import annotations

import itertools
import os
import shutil
import struct
import subprocess
import sys

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from platform_support import posix_build_scripts  # noqa: E402
import scardio.sim
from scardio import IOCTL, Device, State, errors  # noqa: E402
from scardio.constants import ctl_code, vendor_ctl_pcsc, vendor_ctl_win  # noqa: E402
from scardio.sim import SIM_LIBRARY, SimControl  # noqa: E402

_luns = itertools.count(0x26000)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FUZZ_RUN = os.path.join(ROOT, "native", "fuzz", "run.sh")

FAST = settings(max_examples=400, deadline=None,
                suppress_health_check=[HealthCheck.too_slow,
                                       HealthCheck.function_scoped_fixture])


# ---- ATR parser ----------------------------------------------------------------

atr_mod = pytest.importorskip("scardio.atr")


def _structured_atr():
    """ATR-shaped bytes: TS, T0, interface bytes following the Y bits,
    historical bytes, an optional TCK; every length field may lie."""
    @st.composite
    def build(draw):
        out = [draw(st.sampled_from([0x3B, 0x3F, 0x03, draw(st.integers(0, 255))]))]
        k = draw(st.integers(0, 15))
        y = draw(st.integers(0, 15))
        out.append(y << 4 | k)
        for _ in range(draw(st.integers(0, 6))):
            for bit in range(4):
                if y & (1 << bit):
                    out.append(draw(st.integers(0, 255)))
            if not y & 8:
                break
            y = out[-1] >> 4
        out += draw(st.lists(st.integers(0, 255), max_size=k))
        if draw(st.booleans()):
            tck = 0
            for b in out[1:]:
                tck ^= b
            out.append(tck if draw(st.booleans()) else draw(st.integers(0, 255)))
        cut = draw(st.integers(0, len(out)))
        return bytes(out[:cut] if draw(st.booleans()) else out)
    return build()


def _exercise_atr(atr) -> None:
    """Every property of a parsed ATR can be read without an exception
    other than ATRError/ValueError."""
    for name in dir(atr):
        if name.startswith("_"):
            continue
        try:
            value = getattr(atr, name)
            if callable(value) and name in ("describe", "hex", "__str__"):
                value()
        except (ValueError, LookupError):
            pass
    for i in range(0, 8):
        atr.group(i)
    str(atr)
    bytes(atr)


@FAST
@given(st.one_of(st.binary(max_size=40), _structured_atr()))
def test_atr_parser_never_fails_untyped(data):
    try:
        atr = atr_mod.parse_atr(data)
    except atr_mod.ATRError:
        return
    assert bytes(atr) == data
    _exercise_atr(atr)
    # hex text round trip
    assert bytes(atr_mod.parse_atr(data.hex(" "))) == data


@FAST
@given(st.text(max_size=80))
def test_atr_parser_on_text(text):
    try:
        atr_mod.parse_atr(text)
    except atr_mod.ATRError:
        pass


# ---- APDUs and responses --------------------------------------------------------

apdu_mod = pytest.importorskip("scardio.apdu")


# extended-length edges without making hypothesis draw 64 KiB at random
_big = st.builds(lambda head, n, tail: head + bytes(n) + tail,
                 st.binary(min_size=4, max_size=7), st.sampled_from([65531, 65534, 65535, 65536]),
                 st.binary(max_size=3))


@FAST
@given(st.binary(max_size=300) | _big)
def test_apdu_parser_never_fails_untyped(data):
    try:
        apdu = apdu_mod.parse_apdu(data)
    except apdu_mod.APDUError:
        return
    assert bytes(apdu) == data            # a parsed APDU re-encodes to itself
    assert apdu_mod.parse_apdu(bytes(apdu)) == apdu
    apdu.case, apdu.is_extended, apdu.hex()


@FAST
@given(st.integers(-1, 256), st.integers(-1, 256), st.integers(-1, 256), st.integers(-1, 256),
       st.binary(max_size=300) | st.sampled_from([bytes(65535), bytes(65536)]),
       st.one_of(st.none(), st.integers(-1, 65537)))
def test_apdu_constructor_validates(cla, ins, p1, p2, data, ne):
    try:
        apdu = apdu_mod.APDU(cla, ins, p1, p2, data, ne)
    except apdu_mod.APDUError:
        return
    raw = bytes(apdu)
    assert bytes(apdu_mod.parse_apdu(raw)) == raw


@FAST
@given(st.text(max_size=60))
def test_apdu_hex_text(text):
    try:
        apdu_mod.to_apdu_bytes(text)
    except (apdu_mod.APDUError, ValueError):
        pass


def test_response_splitting():
    from scardio.sequences.transmit import split_response as split

    @FAST
    @given(st.binary(max_size=300))
    def check(raw):
        out = struct.pack("<II", 2, 8) + raw
        try:
            r = split(out)
        except (errors.ScardioError, ValueError):
            assert len(raw) < 2
            return
        assert bytes(r) == raw and r.sw == int.from_bytes(raw[-2:], "big")
    check()


# ---- Device.ioctl with random codes, inputs and buffer sizes ---------------------

STANDARD = [int(c) for c in IOCTL]
SIM_CONTROLS = [3500, 3501, 3503, 3505, 3506, 3507]   # no STOP/latency needed

codes = st.one_of(
    st.sampled_from(STANDARD),
    st.sampled_from([vendor_ctl_pcsc(n) for n in SIM_CONTROLS] +
                    [vendor_ctl_win(n) for n in SIM_CONTROLS]),
    st.integers(0, 4095).map(ctl_code),
    st.integers(0, 0xFFFFFFFF),
)
inputs = st.one_of(
    st.binary(max_size=64),
    st.builds(lambda a, b: struct.pack("<I", a) + b, st.integers(0, 0xFFFFFFFF),
              st.binary(max_size=8)),
    st.builds(lambda p, n, apdu: struct.pack("<II", p, n) + apdu,
              st.sampled_from([0, 1, 2, 3, 0x10000]), st.sampled_from([0, 7, 8, 9, 4096]),
              st.binary(max_size=300)),
)
sizes = st.one_of(st.integers(0, 600), st.sampled_from([65546, 1 << 20]))
ALLOWED = (errors.ScardioError, ValueError, TypeError)


def _is_stalling(code: int, data: bytes) -> bool:
    """BLOCK faults and tracking requests that could wait forever."""
    if code in (IOCTL.IS_PRESENT, IOCTL.IS_ABSENT):
        return True
    if code in (vendor_ctl_pcsc(3503), vendor_ctl_win(3503)) and len(data) >= 12:
        kind = struct.unpack_from("<I", data, 4)[0]
        if kind == 3:
            return True               # BLOCK
    return code in (vendor_ctl_pcsc(3502), vendor_ctl_win(3502))  # latency


@pytest.fixture(scope="module")
def fuzz_dev():
    dev = scardio.sim.open_device(next(_luns), close_timeout_ms=500)
    yield dev
    dev.close()


@FAST
@given(st.lists(st.tuples(codes, inputs, sizes), min_size=1, max_size=8))
def test_random_ioctls_on_the_sim(fuzz_dev, calls):
    sim = SimControl(fuzz_dev)
    sim.stop()
    for code, data, size in calls:
        if _is_stalling(code, data):
            op = fuzz_dev.submit(code, data, size)     # overlapped, then cancelled
            op.cancel()
            try:
                op.wait(2)
            except ALLOWED:
                pass
            assert op.done()
            continue
        try:
            out = fuzz_dev.ioctl(code, data, size)
        except ALLOWED as exc:
            if isinstance(exc, errors.ScardioError):
                assert exc.status_name and str(exc)
            continue
        assert isinstance(out, bytes) and len(out) <= max(size, 0)
    sim.stop()
    # still usable: reinsert, connect, transmit
    sim.remove()
    sim.insert()
    fuzz_dev.ioctl(IOCTL.POWER, struct.pack("<I", 1), 33)
    fuzz_dev.ioctl(IOCTL.SET_PROTOCOL, struct.pack("<I", 3), 4)
    out = fuzz_dev.ioctl(IOCTL.TRANSMIT, struct.pack("<II", 2, 8) + b"\x80\xEE\x00\x00\x01", 300)
    assert out[-3:] == b"\x00\x90\x00"
    assert struct.unpack("<I", fuzz_dev.ioctl(IOCTL.GET_STATE, b"", 4))[0] == State.SPECIFIC


@FAST
@given(st.one_of(st.integers(), st.floats(allow_nan=True), st.text(max_size=5), st.none(),
                 st.binary(max_size=5)),
       st.one_of(st.binary(max_size=8), st.text(max_size=5), st.integers(), st.none(),
                 st.lists(st.integers(0, 255), max_size=4)),
       st.one_of(st.integers(-5, 100), st.floats(allow_nan=True), st.text(max_size=3),
                 st.none()))
def test_badly_typed_arguments(fuzz_dev, code, data, size):
    for call in (fuzz_dev.ioctl, fuzz_dev.submit):
        try:
            r = call(code, data, size)
        except (TypeError, ValueError, errors.ScardioError):  # never OverflowError
            continue
        if call is fuzz_dev.submit:
            r.cancel()
            try:
                r.wait(2)
            except errors.ScardioError:
                pass


def test_return_fault_with_success_value_does_not_crash():
    """Regression (found by fuzz_ioctl, fixed in the sim): a RETURN fault of 0
    (IFD_SUCCESS) made the entry point use an unset LUN pointer: SIGSEGV."""
    code = ("import struct\n"
            "import scardio.sim\n"
            "from scardio import Device, IOCTL\n"
            "from scardio.sim import SimControl, EntryPoint, Fault\n"
            "dev = scardio.sim.open_device(0x99)\n"
            "sim = SimControl(dev)\n"
            "for _ in range(50):\n"
            "    try:\n"
            "        sim.fault(EntryPoint.ICC_PRESENCE, Fault.RETURN, 0)\n"
            "        dev.ioctl(IOCTL.GET_STATE, b'', 4)\n"
            "    except Exception:\n"
            "        pass\n"
            "print('ALIVE')\n")
    env = dict(os.environ)
    import scardio
    env["PYTHONPATH"] = os.path.dirname(os.path.dirname(os.path.abspath(scardio.__file__))) + \
        os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=30, env=env)
    assert proc.returncode == 0 and "ALIVE" in proc.stdout, (proc.returncode, proc.stderr)


# ---- libFuzzer -------------------------------------------------------------------

def _libfuzzer_available() -> str:
    if not os.path.exists(FUZZ_RUN):
        return "native/fuzz is not part of this checkout"
    if shutil.which(os.environ.get("CC", "clang")) is None:
        return "clang is not installed (apt-get install clang libclang-rt-14-dev)"
    probe = subprocess.run(
        [os.environ.get("CC", "clang"), "-fsanitize=fuzzer,address,undefined", "-x", "c",
         "-", "-o", os.devnull],
        input="#include <stdint.h>\n#include <stddef.h>\n"
              "int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n)"
              "{(void)d;(void)n;return 0;}\n",
        capture_output=True, text=True)
    if probe.returncode != 0:
        return "clang cannot link -fsanitize=fuzzer,address (libclang-rt-*-dev missing?)"
    return ""


@posix_build_scripts
def test_libfuzzer_targets_briefly():
    why = _libfuzzer_available()
    if why:
        pytest.skip(why)
    secs = os.environ.get("SCARDIO_FUZZ_SECONDS", "5")
    proc = subprocess.run(["bash", FUZZ_RUN, secs], capture_output=True, text=True,
                          timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    for target in ("ioctl", "atr", "card", "ext"):
        assert f"== fuzz_{target}" in out, out
    assert out.count("stat::number_of_executed_units") == 4, out


# ---- bad input at the CLI (the table in docs/reliability.md) ---------------------

CLI_BAD_INPUT = [
    # (arguments, exit status, text in the output)
    (["bogus"], 2, "invalid choice"),
    (["--sim", "-1", "list"], 2, "argument --sim: must be >= 0"),
    (["--sim", "1", "--power-down-timeout", "abc", "info", "Simulated"], 2,
     "not a number of seconds"),
    (["--sim", "1", "info", "nosuchreader"], 4, "reader not found"),
    (["--sim", "1", "info", "99"], 4, "no reader with index 99"),
    (["--sim", "1", "--insert", "apdu", "Simulated", "zz"], 2, "invalid character 'z'"),
    (["--sim", "1", "--insert", "apdu", "Simulated", "00A4"], 2, "too short"),
    (["--sim", "1", "apdu", "Simulated", "00A40400"], 3, "no card"),
    (["--sim", "1", "--insert", "connect", "Simulated", "--protocol", "t5"], 2,
     "invalid choice: 't5'"),
    # structure is checked before the reader is opened (the API leaves it to the card)
    (["--sim", "1", "--insert", "apdu", "Simulated", "00A4040005F0"], 2,
     "Lc is 5 but 1 byte(s) follow it"),
    (["--sim", "1", "--insert", "apdu", "Simulated", "00A404"], 2, "too short"),
]


@pytest.mark.parametrize("args,status,text", CLI_BAD_INPUT,
                         ids=[" ".join(a) for a, _, _ in CLI_BAD_INPUT])
def test_cli_bad_input(args, status, text):
    pytest.importorskip("scardio.cli")
    env = dict(os.environ)
    import scardio
    env["PYTHONPATH"] = os.path.dirname(os.path.dirname(os.path.abspath(scardio.__file__))) + \
        os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run([sys.executable, "-m", "scardio", *args], capture_output=True,
                          text=True, timeout=30, env=env)
    out = proc.stdout + proc.stderr
    assert proc.returncode == status, out
    assert text in out, out
    assert "Traceback" not in out, out


# ---- bad input at the API (the table in docs/reliability.md) ---------------------

API_BAD_INPUT = [
    # (description, call(dev), exception class)
    ("ioctl(code, str input)", lambda d: d.ioctl(IOCTL.TRANSMIT, "text", 300), TypeError),
    ("ioctl(code, None input)", lambda d: d.ioctl(IOCTL.GET_STATE, None, 4), TypeError),
    ("ioctl(negative output_size)", lambda d: d.ioctl(IOCTL.GET_STATE, b"", -1), ValueError),
    ("ioctl(code < 0)", lambda d: d.ioctl(-1, b"", 4), ValueError),
    ("ioctl(code > 0xFFFFFFFF)", lambda d: d.ioctl(1 << 32, b"", 4), ValueError),
    ("submit(code < 0)", lambda d: d.submit(-1, b"", 4), ValueError),
    ("ioctl(output_size > sys.maxsize)", lambda d: d.ioctl(IOCTL.GET_STATE, b"", 1 << 64),
     ValueError),
    ("ioctl(unknown code)", lambda d: d.ioctl(0x12345678, b"", 4), errors.InvalidRequestError),
    ("ioctl(input > MAX_INPUT)", lambda d: d.ioctl(IOCTL.TRANSMIT, bytes(70000), 300),
     errors.InputTooLargeError),
    ("ioctl(POWER, 1-byte input)", lambda d: d.ioctl(IOCTL.POWER, b"\x01", 33),
     errors.InvalidParameterError),
    ("ioctl(POWER, action 7)", lambda d: d.ioctl(IOCTL.POWER, b"\x07\0\0\0", 33),
     errors.InvalidParameterError),
    ("ioctl(GET_STATE, output 3)", lambda d: d.ioctl(IOCTL.GET_STATE, b"", 3),
     errors.BufferTooSmallError),
    ("ioctl(TRANSMIT, cbPciLength 99)",
     lambda d: d.ioctl(IOCTL.TRANSMIT, struct.pack("<II", 2, 99) + b"\0", 300),
     errors.InvalidParameterError),
    ("ioctl(TRANSMIT, no card)",
     lambda d: d.ioctl(IOCTL.TRANSMIT, struct.pack("<II", 2, 8) + b"\0\xa4\0\0", 300),
     errors.NoCardError),
    ("submit(input > MAX_INPUT)", lambda d: d.submit(IOCTL.TRANSMIT, bytes(70000), 300),
     errors.InputTooLargeError),
    ("submit(str input)", lambda d: d.submit(IOCTL.TRANSMIT, "text", 300), TypeError),
    ("Operation.wait(-0.5)", lambda d: d.submit(IOCTL.GET_STATE, b"", 4).wait(-0.5),
     ValueError),
    ("harvest('x')", lambda d: d.harvest("x"), TypeError),
    ("harvest(-1)", lambda d: d.harvest(-1), ValueError),
    ("harvest(nan)", lambda d: d.harvest(float("nan")), ValueError),
    ("harvest(-inf)", lambda d: d.harvest(float("-inf")), ValueError),
    ("open_device(-1)", lambda d: scardio.sim.open_device(-1), ValueError),
    ("open_device(2**32)", lambda d: scardio.sim.open_device(1 << 32), ValueError),
    ("open_device(close_timeout_ms=-1)", lambda d: scardio.sim.open_device(0x7F01, close_timeout_ms=-1),
     ValueError),
    ("open_ifd(lun > 0xFFFFFFFF)", lambda d: Device.open_ifd(SIM_LIBRARY, "x", 1 << 32),
     ValueError),
    ("open_ifd(poll_interval_ms=-1)",
     lambda d: Device.open_ifd(SIM_LIBRARY, "x", 0x7F02, poll_interval_ms=-1), ValueError),
    ("Device() direct", lambda d: Device(), TypeError),
    ("Operation() direct", lambda d: scardio.Operation(), TypeError),
    ("open_ifd(NUL in library)", lambda d: Device.open_ifd(SIM_LIBRARY + "\0x", "x"), ValueError),
    ("open_ifd(missing library)", lambda d: Device.open_ifd("/nonexistent/lib.so", "x"),
     errors.DriverNotFoundError),
    ("open_ifd(not a library)", lambda d: Device.open_ifd("/etc/hostname", "x"),
     errors.NotADriverError),
    ("open_device(same LUN twice)", lambda d: scardio.sim.open_device(d.lun), errors.ReaderInUseError),
    ("SimControl.insert(40-byte ATR)", lambda d: SimControl(d).insert(bytes(40)), ValueError),
    ("parse_atr('zz')", lambda d: atr_mod.parse_atr("zz"), ValueError),
    ("parse_atr(b'')", lambda d: atr_mod.parse_atr(b""), ValueError),
    ("parse_apdu(b'\\x00')", lambda d: apdu_mod.parse_apdu(b"\x00"), ValueError),
    ("ioctl after close", None, errors.ClosedError),
]


@pytest.mark.parametrize("what,call,exc", API_BAD_INPUT, ids=[w for w, _, _ in API_BAD_INPUT])
def test_api_bad_input(sim_device, what, call, exc):
    if call is None:
        sim_device.close()
        call = lambda d: d.ioctl(IOCTL.GET_STATE, b"", 4)  # noqa: E731
    if what.startswith("open_ifd(not a library)") and not os.path.exists("/etc/hostname"):
        pytest.skip("no /etc/hostname")
    with pytest.raises(exc) as info:
        call(sim_device)
    if issubclass(exc, errors.ScardioError):
        assert type(info.value) is exc
    if not sim_device.closed:   # still usable
        assert len(sim_device.ioctl(IOCTL.GET_STATE, b"", 4)) == 4
