"""``scardio connect`` and ``scardio apdu``: connect to the card (its ATR,
protocol and the connect sequence), and send APDUs checked before any I/O."""

from __future__ import annotations

import os
import time

from .. import errors
from ..constants import Protocol
from .opening import open_for
from .outcome import EXIT_OK, UsageError
from .output import atr_lines

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from typing import IO, Any

    from ..reader import Reader
    from .output import Output

__all__ = ["PROTOCOLS", "cmd_apdu", "cmd_connect"]

#: --protocol's choices (the parser lists the same names).
PROTOCOLS = {"t0": Protocol.T0, "t1": Protocol.T1, "any": Protocol.T0 | Protocol.T1,
             "raw": Protocol.RAW}


def _connect(args: argparse.Namespace, reader: Reader, **kw: Any) -> Any:
    if args.wait is not None:
        try:
            reader.wait_for_card(args.wait)
        except errors.TimeoutError:
            raise errors.NoCardError(f"no card in {reader.name!r} within {args.wait} s") from None
    return reader.connect(PROTOCOLS[args.protocol], timeout=args.timeout, **kw)


def cmd_connect(args: argparse.Namespace, out: Output) -> int:
    from ..reader import Disposition
    with open_for(args, out, args.reader) as reader:
        t0 = time.perf_counter()
        card = _connect(args, reader)
        ms = (time.perf_counter() - t0) * 1000.0
        if out.json:
            d = card.info()
            d["connect_ms"] = round(ms, 3)
            out.doc(d)
        else:
            out.line(f"Reader:   {reader.name}")
            described = card.atr.describe() if card.atr is not None else None
            for line in atr_lines(card.atr_bytes, described, card.atr_error,
                                  label="ATR:      ", pad=" " * 10):
                out.line(line)
            out.line(f"Protocol: {card.protocol_name}")
            out.line(f"Sequence: {' -> '.join(card.connect_actions)} ({ms:.3f} ms)")
        card.disconnect(Disposition.UNPOWER)
    return EXIT_OK


def _checked_apdu(text: str, protocol: str) -> bytes:
    """An APDU from the command line, checked before any I/O: hex, ISO 7816-4
    structure (unless --protocol raw) and the length limits of the protocol
    asked for (the card's choice among several is checked after connect)."""
    from ..apdu import check_length, parse_apdu, parse_hex
    apdu = parse_hex(text)
    if protocol == "raw":
        check_length(apdu, Protocol.RAW)
        return apdu
    check_length(apdu, Protocol.T0 if protocol == "t0" else Protocol.T1)
    parse_apdu(apdu)  # too short, Lc that does not match the data, ...
    return apdu


def _record_file(path: str) -> IO[str]:
    """--record's file, opened before any I/O so that a path that cannot be
    written is a usage error, not a lost session."""
    try:
        return open(path, "w", encoding="utf-8", newline="\n")
    except OSError as exc:
        raise UsageError(f"--record: cannot write {path}: {exc.strerror or exc}") from None


def _remove_quietly(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass


def cmd_apdu(args: argparse.Namespace, out: Output) -> int:
    from ..apdu import APDUError
    from ..reader import Disposition
    apdus = []
    for n, text in enumerate(args.apdus, 1):  # all checked before any I/O
        try:
            apdus.append(_checked_apdu(text, args.protocol))
        except APDUError as exc:
            where = f"APDU {n}: " if len(args.apdus) > 1 else ""
            raise UsageError(f"{where}{exc}") from None
    results = []
    record = _record_file(args.record) if args.record is not None else None
    recorder = None
    try:
        with open_for(args, out, args.reader) as reader:
            card = _connect(args, reader, auto_get_response=not args.no_get_response,
                            auto_resend=not args.no_resend)
            if record is not None:
                recorder = card.record(record)
            if not out.json:
                out.line(f"Reader:   {reader.name}  ({card.protocol_name}, ATR "
                         f"{card.atr_bytes.hex().upper()})")
            for apdu in apdus:
                t0 = time.perf_counter()
                resp = card.transmit(apdu)
                us = (time.perf_counter() - t0) * 1e6
                if out.json:
                    d = {"command": apdu.hex().upper(), **resp.as_dict(), "us": round(us, 1)}
                    results.append(d)
                else:
                    out.line(f"> {apdu.hex(' ').upper()}")
                    out.line(f"< {resp}: {resp.status_word.meaning}  ({us:.1f} us)")
            card.disconnect(Disposition.UNPOWER)
    finally:
        if recorder is not None:
            recorder.close()
        if record is not None:
            record.close()
            if recorder is None:  # the session never started: leave no empty file
                _remove_quietly(args.record)
    if out.json:
        out.doc({"reader": reader.name, "protocol": card.protocol_name,
                 "atr": card.atr_bytes.hex().upper(), "responses": results})
    return EXIT_OK
