"""``scardio atr``, and the ATR report scan prints too: an ATR decoded
offline and looked up in pcsc-tools' card list (:mod:`scardio.atr_list`)."""

from __future__ import annotations

from .outcome import EXIT_OK, EXIT_USAGE
from .output import atr_lines

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from typing import Any, Optional

    from .output import Output

__all__ = ["atr_report", "atr_report_lines", "cmd_atr"]


def atr_report(atr: bytes, list_file: Optional[str]) -> dict[str, Any]:
    """The ATR decoded and looked up: the fields scan and atr print."""
    from ..atr import ATRError, parse_atr
    from ..atr_list import load_atr_list
    d: dict[str, Any] = {"atr": atr.hex().upper()}
    try:
        parsed = parse_atr(atr)
    except ATRError as exc:
        d["atr_error"] = str(exc)
    else:
        d["atr_protocols"] = [f"T={p}" for p in parsed.protocols]
        d["atr_description"] = parsed.describe()
    d["atr_list"] = list_file
    d["cards"] = [] if list_file is None else [
        m.as_dict() for m in load_atr_list(list_file).match(atr)]
    return d


def atr_report_lines(d: dict[str, Any], indent: str = "") -> list[str]:
    lines = atr_lines(bytes.fromhex(d["atr"]), d.get("atr_description"), d.get("atr_error"))
    if d["atr_list"] is None:
        lines.append("Card list: none installed (pcsc-tools has one; or give --atr-list)")
    elif not d["cards"]:
        lines.append(f"Card list: no entry matches ({d['atr_list']})")
    else:
        lines.append(f"Possibly identified card (using {d['atr_list']}):")
        for m in d["cards"]:
            lines.append(f"  {m['pattern']}")
            lines += [f"      {text}" for text in m["descriptions"]]
    return [indent + ln for ln in lines]



def cmd_atr(args: argparse.Namespace, out: Output) -> int:
    from ..apdu import parse_hex
    from ..atr_list import find_atr_list
    atr = parse_hex(" ".join(args.atr))  # malformed hex: APDUError, exit 2
    report = atr_report(atr, args.atr_list or find_atr_list())
    if out.json:
        out.doc(report)
    else:
        for line in atr_report_lines(report):
            out.line(line)
    if "atr_error" in report:
        out.err(f"scardio: bad input: not a valid ATR: {report['atr_error']}")
        return EXIT_USAGE
    return EXIT_OK
