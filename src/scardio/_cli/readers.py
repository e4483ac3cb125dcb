"""``scardio list`` and ``scardio info``: the readers found, and one reader's
start-up attributes and card state."""

from __future__ import annotations

from .opening import list_for, open_for
from .outcome import EXIT_OK

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse

    from ..discovery import ReaderDescriptor
    from .output import Output

__all__ = ["cmd_info", "cmd_list"]


def _paths_text(r: ReaderDescriptor) -> str:
    """How `list` shows a reader's paths: its direct source, the PC/SC name
    when it has one, and the path auto takes (only shown with PC/SC)."""
    if "direct" not in r.backends:
        return f"PC/SC only; auto: {r.auto_backend}"
    text = f"{r.source}: {r.device_name}, lun {r.lun}"
    if r.pcsc_name is not None:
        text += f"; PC/SC: {r.pcsc_name}; auto: {r.auto_backend}"
    return text



def cmd_list(args: argparse.Namespace, out: Output) -> int:
    readers = list_for(args, include_unavailable=args.all, check_busy=True)
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
    with open_for(args, out, args.reader) as reader:
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
