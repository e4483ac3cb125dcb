"""The ``scardio`` command line.

::

    scardio [GLOBAL OPTIONS] COMMAND ...

    list                         readers found (USB bundles, reader.conf, --sim)
    info READER                  start-up attributes and card state
    monitor [READER ...]         card arrivals / departures (--count, --timeout)
    connect READER               connect: ATR (decoded), protocol, the sequence
    apdu READER HEX [HEX ...]    connect and send APDUs (--record FILE: write the
                                 session as JSON Lines, to replay as a card)
    demo                         the whole spec sequence on a simulated reader
    scan [READER ...]            like pcsc_scan: arrivals and removals with the time,
                                 each card's ATR decoded and named from the card list
                                 (monitor and scan of every reader: with a PC/SC
                                 resource manager running, its readers too, and
                                 readers appearing and going away: reader-added,
                                 reader-removed; without one, the readers found
                                 at start-up)
    atr HEX                      decode an ATR offline and look it up (like ATR_analysis)
    card serve SPEC --socket P   host a card written in Python (MODULE:CLASS or
                                 FILE.py:CLASS; --replay F: a recorded session) on
                                 the Unix socket P for simulated readers (pcscd's,
                                 through reader.conf ``DEVICENAME socket:P``)

READER is a name (exact, case-insensitive or a unique part) or an index from
``list``.  Global options (before or after the command):

    --sim N           add N simulated readers ("scardio Simulated Reader 0".."N-1")
    --insert          simulated readers only: insert a card first (each process
                      has its own simulated readers, and they start empty)
    --card t0|t1      the card --insert and demo put in (default t1: a T=1 card;
                      t0: a T=0-only card, whose case-4 answers need GET RESPONSE)
    --json            machine-readable output (one JSON document; monitor and
                      --trace write JSON Lines)
    --trace           every IOCTL to stderr: input, output, status, duration in µs
                      (attribute tags, POWER operations, protocol masks and card
                      states by name; --json adds them next to the raw hex)
    --reader-conf P   read readers from this reader.conf file or directory
                      instead of /etc/reader.conf.d (repeatable)
    --power-down-timeout S   seconds a disconnected card stays powered (default 5;
                      0: power it down at disconnect)
    --backend B       how to reach a reader: auto (default: directly when it can,
                      through the PC/SC resource manager when the reader is held
                      or only the resource manager knows it), direct, or pcsc

Exit codes: 0 ok; 1 error (driver, card, I/O); 2 usage or bad input (options,
malformed hex, APDU too short/long for the protocol); 3 no card (absent,
removed, or none within --wait); 4 reader not found (or ambiguous);
5 reader in use (another process, e.g. pcscd, holds it: the message names
it where it can be found and says how to free it; ``list`` marks such readers
busy; ``monitor`` and ``scan`` of every reader skip such readers with a note);
130 interrupted (Ctrl-C: pending requests are cancelled, the card is
powered down, the reader closed); 141 the output was closed (``| head``:
the readers are closed as on Ctrl-C, and nothing more is printed).
"""

from __future__ import annotations

import argparse
import os
import json
import sys
import threading
import time

from . import errors
from ._defaults import DEFAULT_POWER_DOWN_TIMEOUT
from .constants import Protocol

# Each command imports the layers it uses (discovery, the reader, the monitor,
# the ATR list, APDU parsing) when it runs: --help and `atr` load neither
# discovery nor the reader, `list` no reader, --help not even typing.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import IO, Any, Callable, NoReturn, Optional, Sequence

    from .discovery import ReaderDescriptor
    from .reader import Reader, ReaderEvent, TraceRecord

__all__ = ["main", "EXIT_OK", "EXIT_ERROR", "EXIT_USAGE", "EXIT_NO_CARD",
           "EXIT_NOT_FOUND", "EXIT_IN_USE", "EXIT_INTERRUPTED", "EXIT_PIPE_CLOSED"]

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_NO_CARD = 3
EXIT_NOT_FOUND = 4
EXIT_IN_USE = 5
EXIT_INTERRUPTED = 130
EXIT_PIPE_CLOSED = 141

PROTOCOLS = {"t0": Protocol.T0, "t1": Protocol.T1, "any": Protocol.T0 | Protocol.T1,
             "raw": Protocol.RAW}


class UsageError(Exception):
    """Bad input found after parsing (exit 2)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        raise UsageError(message)


def _seconds(text: str) -> float:
    """A duration: a finite number of seconds >= 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"seconds must be >= 0 and finite, got {text}")
    return value


def _count(text: str) -> int:
    """A count >= 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _existing_path(text: str) -> str:
    if not os.path.exists(text):
        raise argparse.ArgumentTypeError(f"no such reader.conf file or directory: {text}")
    return text


def _globals(parser: argparse.ArgumentParser, suppress: bool) -> None:
    d: Any = argparse.SUPPRESS if suppress else None
    g = parser.add_argument_group("global options")
    g.add_argument("--sim", type=_count, metavar="N", default=d if suppress else 0,
                   help="add N simulated readers")
    g.add_argument("--insert", action="store_true", default=d if suppress else False,
                   help="simulated readers: insert a card first")
    g.add_argument("--card", choices=("t0", "t1"), default=d if suppress else "t1",
                   help="the simulated card --insert and demo use (default t1; "
                        "t0 shows GET RESPONSE)")
    g.add_argument("--json", action="store_true", default=d if suppress else False,
                   help="machine-readable output")
    g.add_argument("--trace", action="store_true", default=d if suppress else False,
                   help="print every IOCTL with its input, output, status and duration")
    g.add_argument("--reader-conf", action="append", metavar="PATH", type=_existing_path,
                   default=d, help="reader.conf file or directory (repeatable)")
    g.add_argument("--power-down-timeout", type=_seconds, metavar="S",
                   default=d if suppress else DEFAULT_POWER_DOWN_TIMEOUT,
                   # the default spelled out: subcommands' copies default to SUPPRESS
                   help="seconds a disconnected card stays powered "
                        f"(default {DEFAULT_POWER_DOWN_TIMEOUT:g}; 0: power down at once)")
    _backend_option(g, d if suppress else "auto")


def _backend_option(group: Any, default: Any) -> None:
    group.add_argument("--backend", choices=("auto", "direct", "pcsc"), default=default,
                   help="how to reach a reader: directly (its driver), through the PC/SC "
                        "resource manager (pcsc), or auto (the default: direct when it "
                        "can, PC/SC when the reader is held or only PC/SC knows it)")


READER_HELP = "a name (exact, case-insensitive or a unique part) or an index from list"


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="scardio", description="Talk to smart-card reader drivers directly.",
                epilog="Exit codes: 0 ok, 1 error, 2 usage/bad input, 3 no card, "
                       "4 reader not found, 5 reader in use (held by another "
                       "process, e.g. pcscd), 130 Ctrl-C, 141 output closed.")
    _globals(p, False)
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    def cmd(name: str, help: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help, description=help)
        _globals(sp, True)
        return sp

    sp = cmd("list", "list readers")
    sp.add_argument("--all", action="store_true", help="include unavailable readers")
    sp = cmd("info", "reader attributes and card state")
    sp.add_argument("reader", help=READER_HELP)
    sp = cmd("monitor", "print card arrivals and departures")
    sp.add_argument("readers", nargs="*", metavar="READER", help="default: every reader")
    sp.add_argument("--count", type=_count, metavar="N", help="stop after N events")
    sp.add_argument("--timeout", type=_seconds, metavar="S", help="stop after S seconds")
    for name, help in (("connect", "connect to the card; show ATR and protocol"),
                       ("apdu", "connect and send APDUs")):
        sp = cmd(name, help)
        sp.add_argument("reader", help=READER_HELP)
        if name == "apdu":
            sp.add_argument("apdus", nargs="+", metavar="HEX",
                            help="command APDU in hex (all are checked before the "
                                 "reader is opened)")
            sp.add_argument("--no-get-response", action="store_true",
                            help="do not send GET RESPONSE on 61xx")
            sp.add_argument("--no-resend", action="store_true",
                            help="do not re-send with Le=xx on 6Cxx")
            sp.add_argument("--record", metavar="FILE",
                            help="write the session to FILE as JSON Lines (ATR, each "
                                 "command and response, timing), for scardio.sim.ReplayCard")
        sp.add_argument("--protocol", choices=sorted(PROTOCOLS), default="any",
                        help="t0, t1, any (T=0 or T=1: the card's choice) or raw "
                             "(default %(default)s)")
        sp.add_argument("--wait", type=_seconds, metavar="S",
                        help="wait up to S seconds for a card first")
        sp.add_argument("--timeout", type=_seconds, default=10.0, metavar="S",
                        help="bound on the connect sequence (default %(default)s)")
    sp = cmd("demo", "run the spec's whole sequence on a simulated reader")
    sp.add_argument("--delay", type=_seconds, default=0.5, metavar="S",
                    help="power-down timeout used by the demo (default %(default)s)")
    _add_scan_commands(cmd)
    _add_card_commands(cmd)
    return p


def _add_card_commands(cmd: Callable[[str, str], argparse.ArgumentParser]) -> None:
    sp = cmd("card", "cards written in Python for simulated readers")
    sp.epilog = ("serve [SPEC] --socket PATH [--replay FILE] [--loose] [--verbose]: see "
                 "scardio card serve --help")
    sub = sp.add_subparsers(dest="card_command", metavar="ACTION", parser_class=_Parser)
    sub.required = True
    help = ("host one card on a Unix socket; simulated readers opened as socket:PATH "
            "(pcscd's, through reader.conf) connect to it")
    serve = sub.add_parser("serve", help=help, description=help,
                           epilog="reader.conf: FRIENDLYNAME \"Python card\" / DEVICENAME "
                                  "socket:PATH / LIBPATH <scardio>/libscardio_sim.so. "
                                  "Stops on SIGINT or SIGTERM, removing the socket.")
    _globals(serve, True)
    serve.add_argument("spec", nargs="?", metavar="SPEC",
                       help="MODULE:CLASS or path/to/file.py:CLASS, a subclass of "
                            "scardio.sim.VirtualCard (made with no arguments)")
    serve.add_argument("--socket", required=True, metavar="PATH",
                       help="the Unix socket to listen on (a stale one is replaced)")
    serve.add_argument("--replay", metavar="FILE",
                       help="serve a recorded session (JSON Lines) instead of SPEC")
    serve.add_argument("--loose", action="store_true",
                       help="with --replay: match commands by their bytes, not in order")
    serve.add_argument("--verbose", "-v", action="store_true",
                       help="log every APDU and response")


# ---------------------------------------------------------------------------
# Output


class Output:
    def __init__(self, args: argparse.Namespace, stdout: IO[str], stderr: IO[str]) -> None:
        self.json = bool(args.json)
        self.stdout, self.stderr = stdout, stderr
        self._lock = threading.Lock()
        self.t0 = time.monotonic()

    def line(self, text: str = "") -> None:
        with self._lock:
            print(text, file=self.stdout, flush=True)

    def doc(self, obj: Any) -> None:
        with self._lock:
            print(json.dumps(obj, indent=2, default=str), file=self.stdout, flush=True)

    def jsonl(self, obj: Any) -> None:
        with self._lock:
            print(json.dumps(obj, default=str), file=self.stdout, flush=True)

    def err(self, text: str) -> None:
        with self._lock:
            print(text, file=self.stderr, flush=True)

    def ms(self, t: float) -> float:
        return round((t - self.t0) * 1000.0, 3)

    def trace(self, rec: TraceRecord) -> None:
        if self.json:
            d = rec.as_dict()
            d["t_ms"] = self.ms(rec.timestamp)
            del d["t"]
            with self._lock:
                print(json.dumps({"trace": d}), file=self.stderr, flush=True)
            return
        self.err(f"[trace {self.ms(rec.timestamp):10.3f} ms] {rec.name:<14} "
                 f"{rec.input_text()} {rec.output_text()} {rec.status} "
                 f"{rec.duration_us:.1f} us{' (overlapped)' if rec.overlapped else ''}")


# ---------------------------------------------------------------------------
# Helpers


def _readers(args: argparse.Namespace, include_unavailable: bool = False,
             check_busy: bool = False) -> list[ReaderDescriptor]:
    from .discovery import list_readers
    # --backend direct never asks the resource manager (which could start a
    # socket-activated pcscd).
    return list_readers(args.sim, reader_conf_dirs=args.reader_conf,
                        include_unavailable=include_unavailable, check_busy=check_busy,
                        pcsc=args.backend != "direct")


def _open(args: argparse.Namespace, out: Output, spec: str,
          pool: Optional[list[ReaderDescriptor]] = None,
          power_down_timeout: Optional[float] = None) -> Reader:
    from .discovery import find_reader
    from .reader import Reader, TracingDevice
    desc = find_reader(spec, pool if pool is not None else _readers(args))
    if args.insert and desc.source != "sim":
        raise UsageError(f"--insert works with simulated readers only; {desc.name!r} "
                         f"comes from {desc.source}")
    opened = _open_backend(args, out, desc)
    device: Any = opened.device
    if args.trace:
        device = TracingDevice(device, out.trace)
    reader = Reader(device, opened.descriptor, power_down_timeout=args.power_down_timeout
                    if power_down_timeout is None else power_down_timeout,
                    backend=opened.backend, backend_reason=opened.reason)
    if args.insert:
        from .sim import SimControl
        try:
            SimControl(reader.device).insert(t0=args.card == "t0")
        except BaseException:
            reader.close()
            raise
    return reader


def _open_backend(args: argparse.Namespace, out: Output, desc: ReaderDescriptor) -> Any:
    """Open *desc* by --backend; --trace says which path was taken and why."""
    from .reader import open_backend_device
    opened = open_backend_device(desc, args.backend)
    if args.trace:
        d = opened.descriptor
        if out.json:
            out.err(json.dumps({"open": {"reader": d.name, "backend": opened.backend,
                                         "asked": args.backend, "pcsc_name": d.pcsc_name,
                                         "reason": opened.reason}}))
        else:
            via = (f"through PC/SC as {d.pcsc_name!r}" if opened.backend == "pcsc"
                   else "directly")
            why = f": {opened.reason}" if opened.reason else ""
            out.err(f"[trace] open {d.name!r} {via} (backend {opened.backend}, "
                    f"--backend {args.backend}){why}")
    return opened


def _paths_text(r: ReaderDescriptor) -> str:
    """How `list` shows a reader's paths: its direct source, the PC/SC name
    when it has one, and the path auto takes (only shown with PC/SC)."""
    if "direct" not in r.backends:
        return f"PC/SC only; auto: {r.auto_backend}"
    text = f"{r.source}: {r.device_name}, lun {r.lun}"
    if r.pcsc_name is not None:
        text += f"; PC/SC: {r.pcsc_name}; auto: {r.auto_backend}"
    return text


def _atr_lines(atr: bytes, description: Optional[Sequence[str]], error: Optional[str],
               label: str = "ATR: ", pad: str = "") -> list[str]:
    """An ATR as every command prints it: its bytes after `label`, then
    `description` (``ATR.describe()``, whose first line is the bytes again)
    or why it is not a valid ATR (`error`), each line after `pad`."""
    lines = [f"{label}{atr.hex(' ').upper()} ({len(atr)} bytes)"]
    if description is not None:
        fields = list(description)
        if fields and fields[0].startswith("ATR:"):
            fields = fields[1:]  # the bytes again: printed just above
        lines += [pad + field for field in fields]
    else:
        lines.append(f"{pad}(not a valid ATR: {error})")
    return lines


# ---------------------------------------------------------------------------
# Commands


def cmd_list(args: argparse.Namespace, out: Output) -> int:
    readers = _readers(args, include_unavailable=args.all, check_busy=True)
    if out.json:
        out.doc([{"index": i, "name": r.name, "source": r.source, "library": r.library,
                  "device_name": r.device_name, "lun": r.lun, "available": r.available,
                  "pcsc_name": r.pcsc_name, "backends": list(r.backends),
                  "auto_backend": r.auto_backend,
                  **({"problem": r.extra["problem"]} if "problem" in r.extra else {}),
                  "busy": r.busy, **{k: r.extra[k] for k in ("holders", "likely_holders")
                                     if k in r.extra}}
                 for i, r in enumerate(readers)])
        return EXIT_OK
    if not readers:
        out.line("no readers found (try --sim 1)")
    for i, r in enumerate(readers):
        flag = "" if r.available else f"  [unavailable: {r.extra.get('problem')}]"
        flag += f"  [busy: {r.extra.get('busy_summary')}]" if r.busy else ""
        out.line(f"{i}: {r.name}  ({_paths_text(r)}){flag}")
    return EXIT_OK


def cmd_info(args: argparse.Namespace, out: Output) -> int:
    with _open(args, out, args.reader) as reader:
        state = reader.state()
        info = reader.info()
        info["state"] = state.name
        info["state_description"] = state.description
        if out.json:
            out.doc(info)
            return EXIT_OK
        a = reader.attributes
        out.line(f"Reader:          {reader.name}")
        if reader.descriptor is not None and reader.descriptor.name != reader.name:
            out.line(f"Listed as:       {reader.descriptor.name}")
        out.line(f"Backend:         {reader.backend}"
                 + (f" ({reader.descriptor.pcsc_name})" if reader.backend == "pcsc"
                    and reader.descriptor is not None else ""))
        out.line(f"Driver:          {info['library'] or '(the resource manager runs it)'}")
        out.line(f"Device:          {info['device_name']} (lun {info['lun']})")
        out.line(f"Vendor:          {a.vendor_name or '(not reported)'}")
        out.line(f"IFD type:        {a.ifd_type or '(not reported)'}")
        out.line(f"IFD version:     {a.ifd_version or '(not reported)'}")
        out.line(f"Device unit:     {'(not reported)' if a.device_unit is None else a.device_unit}")
        chars = "(not reported)" if a.characteristics is None else (
            f"0x{a.characteristics:08X} " + (", ".join(a.characteristics_flags)
                                             or "(no special mechanism)"))
        out.line(f"Characteristics: {chars}")
        out.line(f"Card state:      {state.name} ({state.description})")
    return EXIT_OK


def _open_watched(args: argparse.Namespace, out: Output, what: str,
                  allow_none: bool = False) -> list[Reader]:
    """The readers monitor and scan watch: the named ones, or every reader.

    With no reader named, --insert applies to the simulated readers only, and
    a reader another process holds is skipped with a note on stderr (it is
    watched when named, so that the error says who holds it).  `allow_none`:
    an empty result is no error (a reader list supplies the readers)."""
    from .discovery import ReaderNotFoundError, find_reader
    pool = _readers(args)
    descs = [find_reader(s, pool) for s in args.readers] if args.readers else pool
    if not descs and not allow_none:
        raise ReaderNotFoundError(f"no readers to {what} (try --sim 1)", "", [])
    readers: list[Reader] = []
    insert = args.insert
    try:
        for d in descs:
            args.insert = insert and (bool(args.readers) or d.source == "sim")
            try:
                readers.append(_open(args, out, d.name, pool))
            except errors.ReaderInUseError as exc:
                if args.readers:
                    raise
                if out.json:
                    out.err(json.dumps({"skipped": d.name, "reason": "reader in use",
                                        "message": str(exc)}))
                else:
                    out.err(f"scardio: skipping {d.name!r}: {exc}")
    except BaseException:
        for r in readers:
            r.close()
        raise
    finally:
        args.insert = insert
    if not readers and descs and not allow_none:
        raise errors.ReaderInUseError(f"every reader is in use: none left to {what}")
    return readers


def _hotplug_list(args: argparse.Namespace, out: Output) -> Optional[Any]:
    """monitor and scan of every reader: the resource manager's reader list
    (readers appearing and going away are watched through it), or None when
    there is no resource manager to ask (then the readers found at start-up
    are the ones watched)."""
    if args.readers:
        return None
    from . import pcsc
    try:
        return pcsc.ReaderListWatch(power_down_timeout=args.power_down_timeout,
                                    trace=out.trace if args.trace else None)
    except errors.ScardioError:
        return None


def cmd_monitor(args: argparse.Namespace, out: Output) -> int:
    from .monitor import Monitor
    reader_list = _hotplug_list(args, out)
    try:
        readers = _open_watched(args, out, "monitor", allow_none=reader_list is not None)
    except BaseException:
        if reader_list is not None:
            reader_list.close()
        raise
    monitor: Optional[Monitor] = None
    try:
        monitor = Monitor(readers, reader_list=reader_list)
        reader_list = None  # the monitor's now
        if not out.json:
            out.line(f"monitoring {len(monitor.readers)} reader(s)"
                     f"{'' if args.timeout is None else f' for {args.timeout} s'}; Ctrl-C stops")
        for ev in monitor.events(timeout=args.timeout, count=args.count):
            if out.json:
                record = ev.as_dict()
                record["t_ms"] = out.ms(ev.timestamp)
                del record["t"]
                out.jsonl(record)
            else:
                extra = f": {ev.error}" if ev.error else ""
                out.line(f"{out.ms(ev.timestamp):10.3f} ms  {ev.kind:<9}  {ev.reader.name}{extra}")
    finally:
        if monitor is not None:
            monitor.close()
        if reader_list is not None:
            reader_list.close()
        for r in readers:
            r.close()
    return EXIT_OK


def _connect(args: argparse.Namespace, reader: Reader, **kw: Any) -> Any:
    if args.wait is not None:
        try:
            reader.wait_for_card(args.wait)
        except errors.TimeoutError:
            raise errors.NoCardError(f"no card in {reader.name!r} within {args.wait} s") from None
    return reader.connect(PROTOCOLS[args.protocol], timeout=args.timeout, **kw)


def cmd_connect(args: argparse.Namespace, out: Output) -> int:
    from .reader import Disposition
    with _open(args, out, args.reader) as reader:
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
            for line in _atr_lines(card.atr_bytes, described, card.atr_error,
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
    from .apdu import check_length, parse_apdu, parse_hex
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
    from .apdu import APDUError
    from .reader import Disposition
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
        with _open(args, out, args.reader) as reader:
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


DEMO_APDUS = [
    ("SELECT application", "00 A4 04 0C 08 F0 73 63 61 72 64 69 6F"),
    ("SELECT EF 0101", "00 A4 00 0C 02 01 01"),
    ("READ BINARY 16 bytes", "00 B0 00 00 10"),
    ("GET CHALLENGE 8 bytes", "00 84 00 00 08"),
    ("ECHO (80 EE) 4 bytes", "80 EE 00 00 04 CA FE BA BE 04"),
]


def cmd_demo(args: argparse.Namespace, out: Output) -> int:
    from .monitor import Monitor
    from .sim import EntryPoint, SimControl
    from .discovery import find_reader, list_readers
    pool = list_readers(max(1, args.sim), reader_conf_dirs=())
    desc = find_reader("scardio Simulated Reader 0", pool)
    timeline: list[dict[str, Any]] = []
    lock = threading.Lock()

    def note(what: str, t: Optional[float] = None, **detail: Any) -> None:
        ts = time.monotonic() if t is None else t
        with lock:
            timeline.append({"t_ms": out.ms(ts), "event": what, **detail})
            if not out.json:
                more = "  " + ", ".join(f"{k}={v}" for k, v in detail.items()) if detail else ""
                out.line(f"{out.ms(ts):10.3f} ms  {what}{more}")

    powered_down = threading.Event()

    def on_reader(ev: ReaderEvent) -> None:
        d = dict(ev.detail)
        if "ms" in d:
            d["ms"] = round(d["ms"], 3)
        note(f"reader: {ev.kind}", ev.timestamp, **d)
        if ev.kind == "power_down" and ev.detail.get("reason") == "timer":
            powered_down.set()

    arrivals: "list[Any]" = []
    seen = threading.Condition()

    def on_card(ev: Any) -> None:
        note(f"monitor: card {ev.kind}", ev.timestamp)
        with seen:
            arrivals.append(ev.kind)
            seen.notify_all()

    def wait_event(kind: str, timeout: float = 5.0) -> None:
        with seen:
            if not seen.wait_for(lambda: kind in arrivals, timeout):
                raise errors.TimeoutError(f"demo: no {kind} within {timeout} s")
            arrivals.remove(kind)

    args.insert = False
    note("start-up: opening the simulated reader", library="(scardio sim)",
         device=desc.device_name)
    reader = _open(args, out, desc.name, pool, power_down_timeout=args.delay)
    monitor: Optional[Monitor] = None
    try:
        a = reader.attributes
        note("start-up: reader named", name=reader.name, vendor=a.vendor_name,
             ifd_type=a.ifd_type, unit=a.device_unit)
        note("start-up: characteristics", value=a.characteristics,
             flags="|".join(a.characteristics_flags) or "none")
        reader.add_listener(on_reader)
        sim = SimControl(reader.device)
        monitor = Monitor([reader], callback=on_card)
        note("monitor started (IS_PRESENT pending)")
        # noted first: the monitor may report the arrival before insert() returns
        note("sim: card inserted", card=args.card.upper().replace("T", "T="))
        sim.insert(t0=args.card == "t0")
        wait_event("arrival")
        card = reader.connect()
        note("connected", protocol=card.protocol_name, atr=card.atr_bytes.hex().upper())
        for label, hex_apdu in DEMO_APDUS:
            t0 = time.perf_counter()
            resp = card.transmit(hex_apdu)
            note(f"APDU {label}", command=hex_apdu.replace(" ", ""), response=str(resp),
                 us=round((time.perf_counter() - t0) * 1e6, 1))
        before = sim.counters()
        card.disconnect()
        note(f"disconnected: power-down timer started ({args.delay} s)" if args.delay else
             "disconnected: power-down timeout 0, powered down at once")
        card = reader.connect()
        after = sim.counters()
        note("reconnected before the timeout: powered card reused" if args.delay else
             "reconnected: the card was powered down, so it was reset",
             new_power_ups=after.power_ups - before.power_ups,
             new_resets=after.resets - before.resets, actions=" ".join(card.connect_actions))
        card.transmit(DEMO_APDUS[0][1])
        powered_down.clear()  # a timeout of 0 already powered down at the first disconnect
        card.disconnect()
        note(f"disconnected again: waiting for the power-down ({args.delay} s)")
        if not powered_down.wait(args.delay + 5.0):
            raise errors.TimeoutError("demo: the power-down timer did not fire")
        c = sim.counters()
        note("card state after the timer", state=reader.state().name, powered=c.powered)
        note("sim: card removed")
        sim.remove()
        wait_event("departure")
        c = sim.counters()
        note("done", power_ups=c.power_ups, resets=c.resets, power_downs=c.power_downs,
             apdus=c.calls[EntryPoint.TRANSMIT])
    finally:
        if monitor is not None:
            monitor.close()
        reader.close()
    if out.json:
        out.doc({"reader": reader.name, "timeline": timeline})
    return EXIT_OK


# ---------------------------------------------------------------------------
# scan and atr: cards named from pcsc-tools' list (scardio.atr_list)


def _atr_list_file(text: str) -> str:
    if not os.path.isfile(text):
        raise argparse.ArgumentTypeError(f"no such ATR list file: {text}")
    return text


def _add_scan_commands(cmd: Callable[[str, str], argparse.ArgumentParser]) -> None:
    list_help = ("ATR list in pcsc-tools' smartcard_list.txt format (default: the "
                 "installed one, if any)")
    sp = cmd("scan", "watch readers like pcsc_scan: arrivals and removals with the "
                     "time, each card's ATR decoded and named from the ATR list")
    sp.add_argument("readers", nargs="*", metavar="READER", help="default: every reader")
    sp.add_argument("--count", type=_count, metavar="N", help="stop after N events")
    sp.add_argument("--timeout", type=_seconds, metavar="S", help="stop after S seconds")
    sp.add_argument("--atr-list", type=_atr_list_file, metavar="FILE", help=list_help)
    sp.add_argument("--sim-toggle", type=_seconds, metavar="S",
                    help="simulated readers: every S seconds insert a card if there is "
                         "none, else remove it (to try scan without hardware)")
    sp = cmd("atr", "decode an ATR offline and name the card (like ATR_analysis)")
    sp.add_argument("atr", nargs="+", metavar="HEX", help="the ATR in hex (spaces allowed)")
    sp.add_argument("--atr-list", type=_atr_list_file, metavar="FILE", help=list_help)


def _atr_report(atr: bytes, list_file: Optional[str]) -> dict[str, Any]:
    """The ATR decoded and looked up: the fields scan and atr print."""
    from .atr import ATRError, parse_atr
    from .atr_list import load_atr_list
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


def _atr_report_lines(d: dict[str, Any], indent: str = "") -> list[str]:
    lines = _atr_lines(bytes.fromhex(d["atr"]), d.get("atr_description"), d.get("atr_error"))
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


def _wall_clock(monotonic_ts: float) -> str:
    """Local time of a time.monotonic() timestamp, ISO 8601 with ms."""
    import datetime
    wall = time.time() - (time.monotonic() - monotonic_ts)
    return datetime.datetime.fromtimestamp(wall).astimezone().isoformat(
        sep=" ", timespec="milliseconds")


class _SimToggler:
    """--sim-toggle: a card goes in and out of every simulated reader."""

    def __init__(self, readers: list[Reader], period: float, t0: bool) -> None:
        from .sim import SimControl
        self._sims = [SimControl(r.device) for r in readers
                      if r.descriptor is not None and r.descriptor.source == "sim"]
        self._period, self._t0 = period, t0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="scardio-sim-toggle",
                                        daemon=True)

    def start(self) -> None:
        if self._sims:
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._period):
            for sim in self._sims:
                try:
                    if sim.counters().present:
                        sim.remove()
                    else:
                        sim.insert(t0=self._t0)
                except errors.ScardioError:
                    return  # the reader closed under us: scan is ending

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5.0)


def cmd_scan(args: argparse.Namespace, out: Output) -> int:
    from .atr_list import find_atr_list
    from .monitor import ARRIVAL, Monitor
    from .probe import probe_atr
    if args.sim_toggle is not None and args.sim_toggle <= 0:
        raise UsageError("--sim-toggle needs a period > 0 seconds")
    list_file = args.atr_list or find_atr_list()
    reader_list = _hotplug_list(args, out)
    try:
        readers = _open_watched(args, out, "scan", allow_none=reader_list is not None)
    except BaseException:
        if reader_list is not None:
            reader_list.close()
        raise
    monitor: Optional[Monitor] = None
    toggler: Optional[_SimToggler] = None
    try:
        monitor = Monitor(readers, reader_list=reader_list)
        reader_list = None  # the monitor's now
        if not out.json:
            watched = monitor.readers
            out.line(f"scanning {len(watched)} reader(s)"
                     f"{'' if args.timeout is None else f' for {args.timeout} s'}; "
                     f"card list: {list_file or 'none'}; Ctrl-C stops")
            for r in watched:
                out.line(f"  {r.name}")
        if args.sim_toggle is not None:
            toggler = _SimToggler(readers, args.sim_toggle, args.card == "t0")
            toggler.start()
        for ev in monitor.events(timeout=args.timeout, count=args.count):
            record: dict[str, Any] = {"time": _wall_clock(ev.timestamp), "event": ev.kind,
                                      "reader": ev.reader.name, "seq": ev.seq}
            if ev.error is not None:
                record["error"] = str(ev.error)
            probe_error: Optional[str] = None
            if ev.kind == ARRIVAL:
                try:
                    probe = probe_atr(ev.reader, timeout=10.0)
                except errors.NoCardError:
                    probe_error = "the card left before its ATR was read"
                except errors.ScardioError as exc:
                    probe_error = f"could not read the ATR: {exc}"
                else:
                    record["card_state"] = probe.state.name
                    record["actions"] = probe.actions
                    record.update(_atr_report(probe.atr, list_file))
                if probe_error is not None:
                    record["atr_error"] = probe_error
            if out.json:
                out.jsonl(record)
                continue
            extra = f": {record['error']}" if "error" in record else ""
            lines = [f"{record['time']}  {ev.kind:<9}  {ev.reader.name}{extra}"]
            if probe_error is not None:
                lines.append(f"    ({probe_error})")
            elif "atr" in record:
                lines += _atr_report_lines(record, "    ")
            out.line("\n".join(lines))
    finally:
        if toggler is not None:
            toggler.stop()
        if monitor is not None:
            monitor.close()
        if reader_list is not None:
            reader_list.close()
        for r in readers:
            r.close()
    return EXIT_OK


def cmd_atr(args: argparse.Namespace, out: Output) -> int:
    from .apdu import parse_hex
    from .atr_list import find_atr_list
    atr = parse_hex(" ".join(args.atr))  # malformed hex: APDUError, exit 2
    report = _atr_report(atr, args.atr_list or find_atr_list())
    if out.json:
        out.doc(report)
    else:
        for line in _atr_report_lines(report):
            out.line(line)
    if "atr_error" in report:
        out.err(f"scardio: bad input: not a valid ATR: {report['atr_error']}")
        return EXIT_USAGE
    return EXIT_OK


def cmd_card(args: argparse.Namespace, out: Output) -> int:
    import logging
    import signal
    from .card_server import CardServer, CardSpecError, load_card_class
    from .sim.virtual_card import VirtualCard
    card: VirtualCard
    if args.replay is not None:
        if args.spec is not None:
            raise UsageError("give SPEC or --replay FILE, not both")
        from .recording import RecordingFormatError
        from .sim.replay import ReplayCard
        try:
            card = ReplayCard(args.replay, strict=not args.loose)
        except RecordingFormatError as exc:  # names the line
            raise UsageError(f"--replay: {exc}") from None
        except OSError as exc:
            raise UsageError(f"--replay: cannot read {args.replay}: "
                             f"{exc.strerror or exc}") from None
    elif args.spec is None:
        raise UsageError("card serve needs SPEC (MODULE:CLASS or FILE.py:CLASS) or --replay")
    elif args.loose:
        raise UsageError("--loose works with --replay only")
    else:
        try:
            card = load_card_class(args.spec)()
        except CardSpecError as exc:
            raise UsageError(str(exc)) from exc
    logger = logging.getLogger("scardio.card_server")
    handler = logging.StreamHandler(out.stderr)
    handler.setFormatter(logging.Formatter("scardio card serve: %(asctime)s "
                                           "%(levelname)s %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if args.verbose else logging.INFO)
    logger.propagate = False
    stopped_by: list[int] = []
    try:
        try:
            server = CardServer(card, args.socket)
        except CardSpecError as exc:
            raise UsageError(str(exc)) from exc

        def stop(signum: int, frame: object) -> None:
            stopped_by.append(signum)
            server.shutdown()
        old = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            with server:
                server.serve_forever()
        finally:
            for s, h in old.items():
                signal.signal(s, h)
        logger.info("stopped by %s; %s removed", signal.Signals(stopped_by[0]).name
                    if stopped_by else "request", args.socket)
    finally:
        logger.removeHandler(handler)
    return EXIT_INTERRUPTED if stopped_by and stopped_by[0] == signal.SIGINT else EXIT_OK


COMMANDS: dict[str, Callable[[argparse.Namespace, Output], int]] = {
    "list": cmd_list, "info": cmd_info, "monitor": cmd_monitor,
    "connect": cmd_connect, "apdu": cmd_apdu, "demo": cmd_demo,
    "scan": cmd_scan, "atr": cmd_atr, "card": cmd_card,
}


def _silence_closed_stdout(stream: IO[str]) -> None:
    """The reader of our output went away (``scardio monitor | head``): point
    the process's stdout at the null device, so that the interpreter's final
    flush does not report the same broken pipe again."""
    if stream is sys.stdout:
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
        except (OSError, ValueError):
            pass


class _NeverRaised(Exception):
    """Stands in for the error class of a module no command loaded."""


def _error_of(module: str, name: str) -> type[BaseException]:
    """Exception class *name* of ``scardio.<module>`` when the command loaded
    that module, else a class nothing raises: a command cannot have raised an
    error of a module it never imported, so main() need not import it (the
    `atr` command never loads discovery)."""
    loaded = sys.modules.get(f"{__package__}.{module}")
    cls: type[BaseException] = getattr(loaded, name) if loaded is not None else _NeverRaised
    return cls


def main(argv: Optional[Sequence[str]] = None, *, stdout: Optional[IO[str]] = None,
         stderr: Optional[IO[str]] = None) -> int:
    """Run the CLI; returns the exit code (never calls sys.exit)."""
    so = stdout or sys.stdout
    se = stderr or sys.stderr
    parser = build_parser()
    try:
        try:
            args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
        except SystemExit as exc:  # --help
            return int(exc.code or 0)
        if args.sim is not None and args.sim < 0:
            raise UsageError("--sim must be >= 0")
        if args.power_down_timeout is not None and args.power_down_timeout < 0:
            raise UsageError("--power-down-timeout must be >= 0")
    except UsageError as exc:
        print(f"scardio: error: {exc}", file=se)
        return EXIT_USAGE
    out = Output(args, so, se)

    def fail(code: int, kind: str, exc: BaseException) -> int:
        if out.json:
            print(json.dumps({"error": kind, "message": str(exc),
                              "type": type(exc).__name__, "exit_code": code}), file=se)
        else:
            print(f"scardio: {kind}: {exc}", file=se)
        return code

    try:
        return COMMANDS[args.command](args, out)
    except KeyboardInterrupt:
        print("scardio: interrupted", file=se)
        return EXIT_INTERRUPTED
    except (UsageError, _error_of("apdu", "APDUError")) as exc:
        return fail(EXIT_USAGE, "bad input", exc)
    except _error_of("discovery.descriptor", "ReaderNotFoundError") as exc:
        return fail(EXIT_NOT_FOUND, "reader not found", exc)
    except errors.NoCardError as exc:
        return fail(EXIT_NO_CARD, "no card", exc)
    except errors.CancelledError as exc:
        return fail(EXIT_INTERRUPTED, "cancelled", exc)
    except errors.ReaderInUseError as exc:
        return fail(EXIT_IN_USE, "reader in use", exc)
    except BrokenPipeError:
        _silence_closed_stdout(so)
        return EXIT_PIPE_CLOSED
    except (errors.ScardioError, ValueError, OSError) as exc:
        return fail(EXIT_ERROR, "error", exc)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
