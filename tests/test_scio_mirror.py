"""src/scardio/_scio.pxd mirrors native/scio.h: every macro, type and
function the public C header declares is declared to Cython, and nothing
else of the core (so the binding can use any of the API, and only it)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HEADER = ROOT / "native" / "scio.h"
PXD = ROOT / "src" / "scardio" / "_scio.pxd"

# The include guard is the header's own business.
NOT_API = {"SCIO_H"}


def _strip_c_comments(text: str) -> str:
    return re.sub(r"/\*.*?\*/", " ", text, flags=re.S)


def header_names(text: str) -> set[str]:
    code = _strip_c_comments(text)
    names = set(re.findall(r"^\s*#\s*define\s+(SCIO_\w+)", code, flags=re.M))
    names |= set(re.findall(r"\b(scio_\w+)\s*\(", code))          # functions
    names |= set(re.findall(r"\(\s*\*\s*(scio_\w+)\s*\)", code))  # function-pointer types
    names |= set(re.findall(r"\bstruct\s+(scio_\w+)", code))       # structures
    names |= set(re.findall(r"\btypedef\s+\w+\s+(scio_\w+)\s*;", code))
    names |= set(re.findall(r"^\s*extern\s+[\w\s*]+?\b(scio_\w+)\s*;", code, flags=re.M))  # variables
    return names - NOT_API


def pxd_names(text: str) -> set[str]:
    code = re.sub(r"#.*", "", text)
    block = code.split('cdef extern from "scio.h"', 1)[1]
    block = re.split(r"^cdef ", block, maxsplit=1, flags=re.M)[0]
    return set(re.findall(r"\b((?:scio|SCIO)_\w+)\b", block))


def _sources() -> tuple[str, str]:
    if not HEADER.exists() or not PXD.exists():
        pytest.skip("needs the source tree (native/scio.h, src/scardio/_scio.pxd)")
    return HEADER.read_text(encoding="utf-8"), PXD.read_text(encoding="utf-8")


def test_every_name_of_scio_h_is_declared_in_the_pxd() -> None:
    header, pxd = _sources()
    missing = header_names(header) - pxd_names(pxd)
    assert not missing, f"_scio.pxd lacks: {sorted(missing)}"


def test_the_pxd_declares_nothing_scio_h_does_not() -> None:
    header, pxd = _sources()
    extra = pxd_names(pxd) - header_names(header)
    assert not extra, f"_scio.pxd declares names scio.h does not: {sorted(extra)}"


def test_the_parser_sees_each_kind_of_declaration() -> None:
    """The checks above are only as good as header_names: it must find a
    macro, a function-like macro, a function, a struct, a typedef and a
    callback type, and find nothing in comments."""
    sample = ("/* scio_in_comment(x) SCIO_COMMENTED */\n#define SCIO_H\n"
              "#define SCIO_LIMIT 4u\n#define SCIO_CODE(n) (n)\n"
              "typedef uint32_t scio_status;\ntypedef struct scio_queue scio_queue;\n"
              "scio_queue *scio_queue_new(void);\n"
              "typedef void (*scio_log_fn)(int priority);\n"
              "extern unsigned long scio_counter;\n")
    assert header_names(sample) == {"SCIO_LIMIT", "SCIO_CODE", "scio_status", "scio_queue",
                                    "scio_queue_new", "scio_log_fn", "scio_counter"}
    missing = header_names(sample) - pxd_names('cdef extern from "scio.h":\n'
                                               "    const int SCIO_LIMIT\n")
    assert "scio_queue_new" in missing and "SCIO_LIMIT" not in missing
