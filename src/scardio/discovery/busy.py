"""Which readers another process holds: marks descriptors from what
:mod:`scardio.holders` finds, without loading any driver."""

from __future__ import annotations

from dataclasses import replace

from .descriptor import ReaderDescriptor

__all__ = ["mark_busy"]


def mark_busy(readers: list[ReaderDescriptor]) -> list[ReaderDescriptor]:
    """*readers* with ``extra["busy"]`` set, and for a busy one
    ``extra["busy_summary"]``, ``extra["holders"]`` and, when known holders
    such as pcscd run, ``extra["likely_holders"]``."""
    # Imported when asked: most listings do not check.
    from ..holders import check_readers
    # A reader only the resource manager knows has no driver resources here.
    direct = [r for r in readers if "direct" in r.backends]
    usages = iter(check_readers([(r.library, r.device_name, r.lun) for r in direct]))
    marked = []
    for r in readers:
        if "direct" not in r.backends:
            marked.append(replace(r, extra={**r.extra, "busy": False}))
            continue
        usage = next(usages)
        extra: dict[str, object] = {**r.extra, "busy": usage.busy}
        if usage.busy:
            extra["busy_summary"] = usage.summary()
            extra["holders"] = [h.as_dict() for h in usage.holders]
            if usage.suspects:
                extra["likely_holders"] = [h.as_dict() for h in usage.suspects]
        marked.append(replace(r, extra=extra))
    return marked
