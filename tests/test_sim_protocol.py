"""scardio.sim's constants against native/sim/sim_protocol.h, the header the
simulated driver is built from: every SIM_* definition is parsed and must
have its Python twin with the same value (a new one without a twin fails)."""

from __future__ import annotations

import re
import struct
from pathlib import Path

import pytest

from scardio import IOCTL, sim
from scardio.sim import (AID, ATR_T0, ATR_T1, COUNTER_COUNT, CardKind, Control, Counter,
                         EntryPoint, Fault, SimControl)

HEADER = Path(__file__).resolve().parent.parent / "native" / "sim" / "sim_protocol.h"
EXT_HEADER = Path(__file__).resolve().parent.parent / "native" / "ifd" / "ifd_ext.h"


def parse_defines(path: Path) -> dict[str, str]:
    """#define NAME value, comments stripped and continuation lines joined."""
    text = re.sub(r"/\*.*?\*/", " ", path.read_text(), flags=re.S)
    text = text.replace("\\\n", " ")
    out = {}
    for m in re.finditer(r"^\s*#define\s+(\w+)(?:[ \t]+(.*))?$", text, flags=re.M):
        out[m.group(1)] = (m.group(2) or "").strip()
    return out


def evaluate(defines: dict[str, str]) -> dict[str, object]:
    """Values: integers (plain, hex, sums of other names), byte lists
    ({ 0x3B, ... }) and strings."""
    values: dict[str, object] = {}

    def value(name: str) -> object:
        if name in values:
            return values[name]
        raw = defines[name]
        v: object
        if raw.startswith("{"):
            v = bytes(int(x, 0) for x in raw.strip("{} ").split(","))
        elif raw.startswith('"'):
            v = raw.strip('"')
        else:
            expr = re.sub(r"\b([A-Z_][A-Z0-9_]*)\b", lambda m: str(value(m.group(1))), raw)
            expr = re.sub(r"(0x[0-9A-Fa-f]+|\d+)[uUlL]+", r"\1", expr)
            assert re.fullmatch(r"[0-9a-fA-Fx +()]+", expr), (name, raw)
            v = eval(expr, {"__builtins__": {}})  # digits, + and parentheses only
        values[name] = v
        return v

    for name, raw in defines.items():
        if raw:  # not an include guard
            value(name)
    return values


@pytest.fixture(scope="module")
def header() -> dict[str, object]:
    return evaluate(parse_defines(HEADER))


def python_twins() -> dict[str, object]:
    """Each header name and the Python value that mirrors it."""
    twins: dict[str, object] = {}
    twins.update({f"SIM_CTL_{c.name}": int(c) for c in Control})
    twins["SIM_CTL_FIRST"] = min(Control)
    twins["SIM_CTL_LAST"] = max(Control)
    twins.update({f"SIM_CARD_{k.name}": int(k) for k in CardKind})
    twins.update({f"SIM_EP_{e.name}": int(e) for e in EntryPoint})
    twins["SIM_EP_COUNT"] = len(EntryPoint)
    twins.update({f"SIM_FAULT_{f.name}": int(f) for f in Fault})
    twins["SIM_COUNTER_CALLS"] = 0
    twins.update({f"SIM_COUNTER_{c.name}": int(c) for c in Counter})
    twins["SIM_COUNTER_COUNT"] = COUNTER_COUNT
    twins.update({"SIM_ATR_T1": ATR_T1, "SIM_ATR_T1_LEN": len(ATR_T1),
                  "SIM_ATR_T0": ATR_T0, "SIM_ATR_T0_LEN": len(ATR_T0),
                  "SIM_AID": AID, "SIM_AID_LEN": len(AID), "SIM_EF_SIZE": sim.EF_SIZE,
                  "SIM_VENDOR_NAME": sim.VENDOR_NAME, "SIM_IFD_TYPE": sim.IFD_TYPE,
                  "SIM_CLA_PROPRIETARY": sim.CLA_PROPRIETARY, "SIM_INS_ECHO": sim.INS_ECHO})
    return twins


def test_the_parser_reads_the_header(header):
    # A parser that found nothing would make the comparison below vacuous.
    assert header["SIM_CTL_INSERT"] == 3500
    assert header["SIM_COUNTER_COUNT"] == 19
    assert header["SIM_ATR_T1"] == bytes.fromhex("3BF81300008131FE457363617264696F31B0")
    assert len(header) >= 50


def test_every_header_constant_has_its_python_twin(header):
    twins = python_twins()
    assert sorted(set(header) - set(twins)) == [], "in the header, not in scardio.sim"
    assert sorted(set(twins) - set(header)) == [], "in scardio.sim, not in the header"
    wrong = {name: (header[name], twins[name]) for name in header if header[name] != twins[name]}
    assert wrong == {}


def test_the_unlocked_range_covers_every_control(header):
    # The sim declares SIM_CTL_FIRST..SIM_CTL_LAST unlocked (ifd_ext.h): every
    # control must lie in it, or it would wait behind a blocked call.
    assert all(header["SIM_CTL_FIRST"] <= c <= header["SIM_CTL_LAST"] for c in Control)


def test_the_sim_answers_the_extension_tags(sim_device):
    ext = evaluate(parse_defines(EXT_HEADER))
    raw = sim_device.ioctl(IOCTL.GET_ATTRIBUTE,
                           struct.pack("<I", ext["SCIO_IFD_TAG_UNLOCKED_CONTROLS"]), 16)
    assert struct.unpack("<II", raw) == (0x42000000 + min(Control), 0x42000000 + max(Control))
    tag = struct.pack("<I", ext["SCIO_IFD_TAG_CARD_EVENTS"])
    gen_tag = struct.pack("<I", ext["SCIO_IFD_TAG_CARD_EVENT_GENERATION"])

    def generation() -> int:
        return struct.unpack("<I", sim_device.ioctl(IOCTL.GET_ATTRIBUTE, gen_tag, 16))[0]

    assert struct.unpack("<II", sim_device.ioctl(IOCTL.GET_ATTRIBUTE, tag, 16)) == (0, 0)
    ctl = SimControl(sim_device)
    gens = [generation()]
    for step in (ctl.insert, ctl.insert, ctl.remove):  # the second: a swap, both counts
        step()
        gens.append(generation())
    assert struct.unpack("<II", sim_device.ioctl(IOCTL.GET_ATTRIBUTE, tag, 16)) == (2, 2)
    assert all(a != b for a, b in zip(gens, gens[1:])), gens  # each change moved it
    ctl.remove()  # no card: no event
    assert generation() == gens[-1]


def test_the_binding_knows_no_simulator_protocol():
    from scardio import _core
    assert not hasattr(_core, "SIM")
