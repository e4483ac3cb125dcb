"""How the commands find and open readers: the listing --sim, --reader-conf
and --backend describe, and each reader opened by --backend, traced with
--trace and given a card with --insert."""

from __future__ import annotations

import json

from .. import errors
from .outcome import UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from typing import Any, Optional

    from ..discovery import ReaderDescriptor
    from ..reader import Reader
    from .output import Output

__all__ = ["hotplug_list", "list_for", "open_for", "open_watched"]


def list_for(args: argparse.Namespace, include_unavailable: bool = False,
             check_busy: bool = False) -> list[ReaderDescriptor]:
    """The readers the command line describes."""
    from ..discovery import list_readers
    # --backend direct never asks the resource manager (which could start a
    # socket-activated pcscd).
    return list_readers(args.sim, reader_conf_dirs=args.reader_conf,
                        include_unavailable=include_unavailable, check_busy=check_busy,
                        pcsc=args.backend != "direct")


def open_for(args: argparse.Namespace, out: Output, spec: str,
             pool: Optional[list[ReaderDescriptor]] = None,
             power_down_timeout: Optional[float] = None) -> Reader:
    """Reader *spec* (a name or index) from *pool* (default: :func:`list_for`),
    opened by --backend, traced with --trace, a card inserted with --insert."""
    from ..discovery import find_reader
    from ..reader import Reader, TracingDevice
    desc = find_reader(spec, pool if pool is not None else list_for(args))
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
        from ..sim import SimControl
        try:
            SimControl(reader.device).insert(t0=args.card == "t0")
        except BaseException:
            reader.close()
            raise
    return reader


def _open_backend(args: argparse.Namespace, out: Output, desc: ReaderDescriptor) -> Any:
    """Open *desc* by --backend; --trace says which path was taken and why."""
    from ..reader import open_backend_device
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


def open_watched(args: argparse.Namespace, out: Output, what: str,
                 allow_none: bool = False) -> list[Reader]:
    """The readers monitor and scan watch: the named ones, or every reader.

    With no reader named, --insert applies to the simulated readers only, and
    a reader another process holds is skipped with a note on stderr (it is
    watched when named, so that the error says who holds it).  `allow_none`:
    an empty result is no error (a reader list supplies the readers)."""
    from ..discovery import ReaderNotFoundError, find_reader
    pool = list_for(args)
    descs = [find_reader(s, pool) for s in args.readers] if args.readers else pool
    if not descs and not allow_none:
        raise ReaderNotFoundError(f"no readers to {what} (try --sim 1)", "", [])
    readers: list[Reader] = []
    insert = args.insert
    try:
        for d in descs:
            args.insert = insert and (bool(args.readers) or d.source == "sim")
            try:
                readers.append(open_for(args, out, d.name, pool))
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


def hotplug_list(args: argparse.Namespace, out: Output) -> Optional[Any]:
    """monitor and scan of every reader: the resource manager's reader list
    (readers appearing and going away are watched through it), or None when
    there is no resource manager to ask (then the readers found at start-up
    are the ones watched)."""
    if args.readers:
        return None
    from .. import pcsc
    try:
        return pcsc.ReaderListWatch(power_down_timeout=args.power_down_timeout,
                                    trace=out.trace if args.trace else None)
    except errors.ScardioError:
        return None
