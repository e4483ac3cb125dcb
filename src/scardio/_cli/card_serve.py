"""``scardio card serve``: one card written in Python (or a recorded session)
hosted on a Unix socket for simulated readers."""

from __future__ import annotations

from .outcome import EXIT_INTERRUPTED, EXIT_OK, UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse

    from .output import Output

__all__ = ["cmd_card"]


def cmd_card(args: argparse.Namespace, out: Output) -> int:
    import logging
    import signal
    from ..card_server import CardServer, CardSpecError, load_card_class
    from ..sim.virtual_card import VirtualCard
    card: VirtualCard
    if args.replay is not None:
        if args.spec is not None:
            raise UsageError("give SPEC or --replay FILE, not both")
        from ..recording import RecordingFormatError
        from ..sim.replay import ReplayCard
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
