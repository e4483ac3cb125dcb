"""How a connection is shared with other clients, and transactions: the
requests of scardio's extension IOCTLs (SET_SHARE_MODE, BEGIN_TRANSACTION,
END_TRANSACTION; native/scio.h).

Through PC/SC they are the share mode of ``SCardConnect`` and
``SCardBeginTransaction`` / ``SCardEndTransaction``; a direct backend owns
its reader, answers EXCLUSIVE to any share mode and has no other client to
keep out of a transaction (docs/architecture.md, "Sharing and
transactions")."""

from __future__ import annotations

from typing import Optional

from .. import errors
from ..constants import IOCTL, Share
from . import U32, Request, Steps, u32

__all__ = ["SHARE_MODES", "TransactionError", "share_value", "share_name", "share_steps",
           "begin_transaction_steps", "end_transaction_steps"]

#: The ``share=`` values of a connect (None: the reader's default).
SHARE_MODES = ("shared", "exclusive")

class TransactionError(errors.InvalidStateError):
    """A transaction asked for where none can start: one is already open
    on the card (transactions do not nest)."""


_VALUES = {"shared": int(Share.SHARED), "exclusive": int(Share.EXCLUSIVE),
           None: int(Share.DEFAULT)}
_NAMES = {int(Share.SHARED): "shared", int(Share.EXCLUSIVE): "exclusive"}
_REQUESTS = {v: Request(IOCTL.SET_SHARE_MODE, U32.pack(v), 4) for v in _VALUES.values()}
_BEGIN = Request(IOCTL.BEGIN_TRANSACTION)
_END = Request(IOCTL.END_TRANSACTION)


def share_value(share: Optional[str]) -> int:
    """SET_SHARE_MODE's input for a connect's `share` ("shared",
    "exclusive", or None for the reader's default); ValueError otherwise."""
    try:
        return _VALUES[share]
    except (KeyError, TypeError):
        raise ValueError(f"share must be 'shared' or 'exclusive' (or None for the reader's "
                         f"default), got {share!r}") from None


def share_name(value: int) -> str:
    """The name of a share mode SET_SHARE_MODE answered."""
    return _NAMES.get(value, f"share({value})")


def share_steps(value: int) -> "Steps[int]":
    """SET_SHARE_MODE: returns the mode now in force (EXCLUSIVE or SHARED)."""
    return u32((yield _REQUESTS[value]), "SET_SHARE_MODE")


def begin_transaction_steps() -> "Steps[None]":
    yield _BEGIN


def end_transaction_steps() -> "Steps[None]":
    yield _END
