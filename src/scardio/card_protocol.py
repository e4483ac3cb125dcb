"""The framing protocol between the simulated reader and a card server.

One Unix stream connection per reader.  Every message is a frame: an
8-byte header, two 32-bit little-endian integers (the message type, then the
payload length), followed by the payload.  A payload never exceeds
:data:`MAX_PAYLOAD` bytes (an extended case-4 command APDU).  The reader
sends requests; the server answers each with exactly one reply, in order:
the request's type with :data:`REPLY` set, or :attr:`Message.ERROR` /
:attr:`Message.MALFORMED` (a UTF-8 text) when the card could not answer.
docs/virtual-cards.md ("The card-server protocol") is the full description;
native/sim/sim_socket.c is the reader's side, :mod:`scardio.card_server` the
server's.
"""

from __future__ import annotations

import enum
import struct
from typing import Optional

__all__ = ["VERSION", "HEADER", "HEADER_SIZE", "MAX_PAYLOAD", "MAX_ATR", "MIN_RESPONSE",
           "MAX_RESPONSE", "REPLY", "Message", "FrameError", "encode", "decode_header",
           "hello_payload", "parse_hello", "hello_reply_payload", "reply_type"]

#: The protocol version both sides announce in HELLO.
VERSION = 1
#: type, payload length (both u32 little-endian).
HEADER = struct.Struct("<II")
HEADER_SIZE = HEADER.size
#: Largest payload: an extended case-4 command (4 + 3 + 65535 + 2 bytes).
MAX_PAYLOAD = 65544
#: An ATR has 2..33 bytes.
MAX_ATR = 33
#: A response APDU: SW1 SW2 after at most 65536 data bytes.
MIN_RESPONSE = 2
MAX_RESPONSE = 65538
#: Set in the type of a reply.
REPLY = 0x80


class Message(enum.IntEnum):
    """Message types (requests; a reply is ``type | REPLY``)."""
    #: payload u32 version, u32 largest payload the sender accepts; the
    #: reply's adds the card's ATR (2..33 bytes).
    HELLO = 1
    #: empty; empty reply.
    POWER_UP = 2
    #: 1 byte: 1 warm, 0 cold; empty reply.
    RESET = 3
    #: empty; empty reply.
    POWER_DOWN = 4
    #: the command APDU; the reply's payload is the response (data, SW1 SW2).
    APDU = 5
    #: reply only: the card's answer was unusable (not bytes, too long);
    #: payload: a UTF-8 message.
    MALFORMED = 0xFE
    #: reply only: the request failed (the card's code raised, the server
    #: refused); payload: a UTF-8 message.
    ERROR = 0xFF


class FrameError(ValueError):
    """A frame breaks the protocol (unknown type, length out of bounds)."""


def encode(kind: int, payload: bytes = b"") -> bytes:
    """One frame: header and payload."""
    if len(payload) > MAX_PAYLOAD:
        raise FrameError(f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD}")
    return HEADER.pack(kind, len(payload)) + payload


def decode_header(header: bytes) -> tuple[int, int]:
    """(type, payload length) of a header, the length checked."""
    kind, length = HEADER.unpack(header)
    if length > MAX_PAYLOAD:
        raise FrameError(f"frame announces {length} payload bytes (at most {MAX_PAYLOAD})")
    return kind, length


def hello_payload(version: int = VERSION, max_payload: int = MAX_PAYLOAD) -> bytes:
    return struct.pack("<II", version, max_payload)


def parse_hello(payload: bytes) -> tuple[int, int]:
    """(version, largest payload) of a HELLO request's payload."""
    if len(payload) != 8:
        raise FrameError(f"HELLO carries 8 bytes, got {len(payload)}")
    version, max_payload = struct.unpack("<II", payload)
    return version, max_payload


def hello_reply_payload(atr: bytes, version: int = VERSION,
                        max_payload: int = MAX_PAYLOAD) -> bytes:
    if not 2 <= len(atr) <= MAX_ATR:
        raise FrameError(f"an ATR has 2..{MAX_ATR} bytes, got {len(atr)}")
    return struct.pack("<II", version, max_payload) + atr


def reply_type(request: int) -> Optional[int]:
    """The reply type of a request type, None for a type that is no request."""
    try:
        kind = Message(request)
    except ValueError:
        return None
    return None if kind >= Message.MALFORMED else int(kind) | REPLY
