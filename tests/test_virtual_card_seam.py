"""The Python side of the simulated reader's external-card seam against
native/sim/ext_card.h: the operation and result codes scardio.sim's host
uses are the header's, the library exports its in-process entry, and the
binding's C callback refuses what it cannot call."""

from __future__ import annotations

import ctypes
import re
from pathlib import Path

import pytest

from scardio import _core
from scardio.sim import SIM_LIBRARY, _host

HEADER = Path(__file__).resolve().parent.parent / "native" / "sim" / "ext_card.h"


def header_values() -> dict[str, int]:
    text = re.sub(r"/\*.*?\*/", " ", HEADER.read_text(), flags=re.S)
    out = {}
    for m in re.finditer(r"^#define\s+(SIM_EXT_\w+)\s+(.+)$", text, flags=re.M):
        expr = re.sub(r"(\d+)u\b", r"\1", m.group(2).strip())
        assert re.fullmatch(r"[0-9 +()\-]+", expr), (m.group(1), expr)
        out[m.group(1)] = eval(expr, {"__builtins__": {}})  # digits, + - ( ) only
    return out


def test_the_host_uses_the_header_codes():
    h = header_values()
    assert len(h) == 11, h  # the parser found them all
    twins = {"SIM_EXT_OP_POWER_UP": _host.OP_POWER_UP,
             "SIM_EXT_OP_POWER_DOWN": _host.OP_POWER_DOWN,
             "SIM_EXT_OP_RESET_WARM": _host.OP_RESET_WARM,
             "SIM_EXT_OP_RESET_COLD": _host.OP_RESET_COLD,
             "SIM_EXT_OP_APDU": _host.OP_APDU,
             "SIM_EXT_E_FAILED": _host.E_FAILED,
             "SIM_EXT_E_MALFORMED": _host.E_MALFORMED,
             "SIM_EXT_E_TIMEOUT": _host.E_TIMEOUT,
             "SIM_EXT_MAX_RESPONSE": _host.MAX_RESPONSE}
    assert {k: h[k] for k in twins} == twins
    assert h["SIM_EXT_MAX_COMMAND"] == 4 + 3 + 65535 + 2
    assert h["SIM_EXT_E_GONE"] == -4  # for socket-served cards; no Python twin


def test_the_library_exports_the_in_process_entry():
    lib = ctypes.CDLL(SIM_LIBRARY)
    assert hasattr(lib, "scardio_sim_insert_external")
    assert not hasattr(lib, "sim_ext_insert")  # the seam itself stays internal


def test_bytes_callback_needs_a_callable():
    with pytest.raises(TypeError, match="needs a callable"):
        _core.bytes_callback(42)  # type: ignore[arg-type]


def test_bytes_callback_calls_and_releases():
    # Through ctypes, as a C library would: call, then release exactly once.
    import gc
    import weakref

    seen: list[tuple[int, bytes]] = []

    class Fn:
        def __call__(self, op: int, data: bytes) -> object:
            seen.append((op, data))
            return {1: b"\x01\x02\x90\x00", 2: -3, 3: "bad"}.get(op, b"x" * 10)

    fn = Fn()
    ref = weakref.ref(fn)
    call_p, release_p, ctx = _core.bytes_callback(fn)
    del fn
    call = ctypes.CFUNCTYPE(ctypes.c_long, ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p,
                            ctypes.c_size_t, ctypes.c_void_p, ctypes.c_size_t)(call_p)
    release = ctypes.CFUNCTYPE(None, ctypes.c_void_p)(release_p)
    out = ctypes.create_string_buffer(8)
    assert call(ctx, 1, b"\x00\xb0", 2, out, 8) == 4
    assert out.raw[:4] == b"\x01\x02\x90\x00"
    assert call(ctx, 2, None, 0, out, 8) == -3       # a negative code passes
    assert call(ctx, 3, None, 0, out, 8) == -2       # not bytes: malformed
    assert call(ctx, 4, None, 0, out, 8) == -2       # longer than out_cap
    assert seen == [(1, b"\x00\xb0"), (2, b""), (3, b""), (4, b"")]
    gc.collect()
    assert ref() is not None
    release(ctx)
    gc.collect()
    assert ref() is None
