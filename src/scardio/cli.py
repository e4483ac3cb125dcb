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
import sys
from collections.abc import Mapping

from . import errors
from ._cli.outcome import EXIT_ERROR as EXIT_ERROR
from ._cli.outcome import EXIT_IN_USE as EXIT_IN_USE
from ._cli.outcome import EXIT_INTERRUPTED as EXIT_INTERRUPTED
from ._cli.outcome import EXIT_NO_CARD as EXIT_NO_CARD
from ._cli.outcome import EXIT_NOT_FOUND as EXIT_NOT_FOUND
from ._cli.outcome import EXIT_OK as EXIT_OK
from ._cli.outcome import EXIT_PIPE_CLOSED as EXIT_PIPE_CLOSED
from ._cli.outcome import EXIT_USAGE as EXIT_USAGE
from ._cli.outcome import UsageError as UsageError
from ._defaults import DEFAULT_POWER_DOWN_TIMEOUT

# Start-up is paid on every run, so only what the running command needs is
# loaded: the parser builds the subparser of that command alone (the top
# level's --help needs none), the command's implementation (a module of
# scardio._cli) is imported once parsing chose it, and that module imports
# the layers it uses (discovery, the reader, the monitor, ...) when it runs.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import IO, Any, Callable, Iterator, NoReturn, Optional, Sequence

    from ._cli.output import Output

    _SubParsers = argparse._SubParsersAction[argparse.ArgumentParser]
    Runner = Callable[[argparse.Namespace, Output], int]
else:
    _SubParsers = argparse._SubParsersAction

__all__ = ["main", "EXIT_OK", "EXIT_ERROR", "EXIT_USAGE", "EXIT_NO_CARD",
           "EXIT_NOT_FOUND", "EXIT_IN_USE", "EXIT_INTERRUPTED", "EXIT_PIPE_CLOSED"]

#: --protocol's choices (scardio._cli.card_io.PROTOCOLS says what each asks for).
PROTOCOL_NAMES = ("any", "raw", "t0", "t1")


def _terminal_columns() -> int:
    """The width ``shutil.get_terminal_size()`` reports ($COLUMNS, else the
    terminal's, else 80), found without importing shutil, which loads the
    compression modules (zlib, bz2, lzma) at every --help."""
    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
        except (AttributeError, ValueError, OSError):
            columns = 0
    return columns or 80


class _HelpFormatter(argparse.HelpFormatter):
    """argparse's formatter at the width it would choose itself."""

    def __init__(self, prog: str, indent_increment: int = 2, max_help_position: int = 24,
                 width: Optional[int] = None, **kwargs: Any) -> None:
        if width is None:
            width = _terminal_columns() - 2  # as argparse narrows the terminal's
        super().__init__(prog, indent_increment, max_help_position, width, **kwargs)


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)

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


def _atr_list_file(text: str) -> str:
    if not os.path.isfile(text):
        raise argparse.ArgumentTypeError(f"no such ATR list file: {text}")
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


# ---------------------------------------------------------------------------
# The commands' arguments (besides the global options every command takes)


def _list_arguments(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--all", action="store_true", help="include unavailable readers")


def _info_arguments(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("reader", help=READER_HELP)


def _watch_arguments(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("readers", nargs="*", metavar="READER", help="default: every reader")
    sp.add_argument("--count", type=_count, metavar="N", help="stop after N events")
    sp.add_argument("--timeout", type=_seconds, metavar="S", help="stop after S seconds")


def _connect_arguments(sp: argparse.ArgumentParser, apdus: bool = False) -> None:
    sp.add_argument("reader", help=READER_HELP)
    if apdus:
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
    sp.add_argument("--protocol", choices=PROTOCOL_NAMES, default="any",
                    help="t0, t1, any (T=0 or T=1: the card's choice) or raw "
                         "(default %(default)s)")
    sp.add_argument("--wait", type=_seconds, metavar="S",
                    help="wait up to S seconds for a card first")
    sp.add_argument("--timeout", type=_seconds, default=10.0, metavar="S",
                    help="bound on the connect sequence (default %(default)s)")


def _apdu_arguments(sp: argparse.ArgumentParser) -> None:
    _connect_arguments(sp, apdus=True)


def _demo_arguments(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--delay", type=_seconds, default=0.5, metavar="S",
                    help="power-down timeout used by the demo (default %(default)s)")


ATR_LIST_HELP = ("ATR list in pcsc-tools' smartcard_list.txt format (default: the "
                 "installed one, if any)")


def _scan_arguments(sp: argparse.ArgumentParser) -> None:
    _watch_arguments(sp)
    sp.add_argument("--atr-list", type=_atr_list_file, metavar="FILE", help=ATR_LIST_HELP)
    sp.add_argument("--sim-toggle", type=_seconds, metavar="S",
                    help="simulated readers: every S seconds insert a card if there is "
                         "none, else remove it (to try scan without hardware)")


def _atr_arguments(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("atr", nargs="+", metavar="HEX", help="the ATR in hex (spaces allowed)")
    sp.add_argument("--atr-list", type=_atr_list_file, metavar="FILE", help=ATR_LIST_HELP)


def _card_arguments(sp: argparse.ArgumentParser) -> None:
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


#: Every command, in the order --help lists them: its help line and what
#: adds its arguments.
COMMAND_ARGUMENTS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None]]] = {
    "list": ("list readers", _list_arguments),
    "info": ("reader attributes and card state", _info_arguments),
    "monitor": ("print card arrivals and departures", _watch_arguments),
    "connect": ("connect to the card; show ATR and protocol", _connect_arguments),
    "apdu": ("connect and send APDUs", _apdu_arguments),
    "demo": ("run the spec's whole sequence on a simulated reader", _demo_arguments),
    "scan": ("watch readers like pcsc_scan: arrivals and removals with the time, each "
             "card's ATR decoded and named from the ATR list", _scan_arguments),
    "atr": ("decode an ATR offline and name the card (like ATR_analysis)", _atr_arguments),
    "card": ("cards written in Python for simulated readers", _card_arguments),
}


class _Commands(_SubParsers):
    """The subcommands, each one's parser built when it is first looked up:
    argparse looks up only the command that runs (the top level's help needs
    just the names and help lines); reading ``choices`` builds them all."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # typeshed says dict; argparse only looks names up, tests membership
        # and iterates (as users of choices do)
        self.choices = _CommandParsers(self)  # type: ignore[assignment]

    def add_command(self, name: str, help: str) -> None:
        """*name* in the help now; its parser when it is looked up."""
        self._choices_actions.append(self._ChoicesPseudoAction(name, (), help))

    def parser(self, name: str) -> argparse.ArgumentParser:
        """The parser of command *name*, built at the first call."""
        built = self._name_parser_map.get(name)
        if built is None:
            help, add_arguments = COMMAND_ARGUMENTS[name]
            built = self.add_parser(name, description=help)
            _globals(built, True)
            add_arguments(built)
        return built

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: Optional[str] = None) -> None:
        self.parser(values[0])  # argparse checked the name against choices
        super().__call__(parser, namespace, values, option_string)


class _CommandParsers(Mapping[str, argparse.ArgumentParser]):
    """The command names, each mapping to its parser, built on first use."""

    def __init__(self, commands: _Commands) -> None:
        self._commands = commands

    def __getitem__(self, name: str) -> argparse.ArgumentParser:
        if name not in COMMAND_ARGUMENTS:
            raise KeyError(name)
        return self._commands.parser(name)

    def __iter__(self) -> Iterator[str]:
        return iter(COMMAND_ARGUMENTS)

    def __len__(self) -> int:
        return len(COMMAND_ARGUMENTS)

    def __contains__(self, name: object) -> bool:
        return name in COMMAND_ARGUMENTS


def build_parser() -> argparse.ArgumentParser:
    """The command line's parser.  Each command's subparser is built when
    first looked up (its ``choices`` entry, or by parsing that command)."""
    p = _Parser(prog="scardio", description="Talk to smart-card reader drivers directly.",
                epilog="Exit codes: 0 ok, 1 error, 2 usage/bad input, 3 no card, "
                       "4 reader not found, 5 reader in use (held by another "
                       "process, e.g. pcscd), 130 Ctrl-C, 141 output closed.")
    _globals(p, False)
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser,
                           action=_Commands)
    sub.required = True
    assert isinstance(sub, _Commands)
    for name, (help, _) in COMMAND_ARGUMENTS.items():
        sub.add_command(name, help)
    return p


def _runner(command: str) -> Runner:
    """The function that runs *command*: only its module is imported."""
    if command in ("list", "info"):
        from ._cli import readers
        return readers.cmd_list if command == "list" else readers.cmd_info
    if command in ("connect", "apdu"):
        from ._cli import card_io
        return card_io.cmd_connect if command == "connect" else card_io.cmd_apdu
    if command in ("monitor", "scan"):
        from ._cli import watch
        return watch.cmd_monitor if command == "monitor" else watch.cmd_scan
    if command == "demo":
        from ._cli import demo
        return demo.cmd_demo
    if command == "atr":
        from ._cli import atr_report
        return atr_report.cmd_atr
    if command == "card":
        from ._cli import card_serve
        return card_serve.cmd_card
    raise KeyError(command)


# ---------------------------------------------------------------------------
# Running a command


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
    from ._cli.output import Output
    out = Output(args, so, se)

    def fail(code: int, kind: str, exc: BaseException) -> int:
        if out.json:
            import json
            print(json.dumps({"error": kind, "message": str(exc),
                              "type": type(exc).__name__, "exit_code": code}), file=se)
        else:
            print(f"scardio: {kind}: {exc}", file=se)
        return code

    try:
        return _runner(args.command)(args, out)
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
