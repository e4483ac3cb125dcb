"""Cards written in Python that the card-server tests serve
(``scardio card serve serve_cards:CLASS``; the tests directory is on the
server's path), and hostile stand-ins for a card server that break the
protocol on purpose (``python serve_cards.py hostile MODE PATH``)."""

from __future__ import annotations

import os
import socket
import struct
import sys
import time

from scardio.sim import VirtualCard

ATR_T1 = bytes.fromhex("3BF81300008131FE457363617264696F31B0")
ATR_T0 = bytes.fromhex("3B680000" "73636172" "64696F30")


class CounterCard(VirtualCard):
    """T=1.  ``80 10``: increments and answers a counter (state across
    APDUs); ``80 EE``: echoes its data; ``80 20``: the hooks called so
    far; ``80 30``: raises; ``80 31``: answers one byte (malformed);
    ``80 32``: answers a str (malformed); ``80 40``: sleeps P1 seconds."""

    atr = ATR_T1

    def __init__(self) -> None:
        self.count = 0
        self.hooks: list[str] = []

    def power_up(self) -> None:
        self.hooks.append("up")

    def power_down(self) -> None:
        self.hooks.append("down")

    def reset(self, warm: bool) -> None:
        self.hooks.append("warm" if warm else "cold")

    def apdu(self, command: bytes) -> bytes:
        ins = command[1] if len(command) > 1 else None
        if ins == 0x10:
            self.count += 1
            return struct.pack(">I", self.count) + b"\x90\x00"
        if ins == 0xEE:
            return command[5:5 + command[4]] + b"\x90\x00" if len(command) > 5 else b"\x90\x00"
        if ins == 0x20:
            return ",".join(self.hooks).encode() + b"\x90\x00"
        if ins == 0x30:
            raise RuntimeError("the card's code failed on purpose")
        if ins == 0x31:
            return b"\x90"
        if ins == 0x32:
            return "9000"  # type: ignore[return-value]
        if ins == 0x40:
            time.sleep(command[2])
            return b"\x90\x00"
        return b"\x6d\x00"


class T0Card(VirtualCard):
    """T=0 only: a case-4 ``80 CA`` answers 8 data bytes (the reader frames
    them as 61 08 + GET RESPONSE)."""

    atr = ATR_T0

    def apdu(self, command: bytes) -> bytes:
        if command[:2] == b"\x80\xca":
            return bytes(range(8)) + b"\x90\x00"
        return b"\x6d\x00"


class BadAtrCard(VirtualCard):
    atr = b"\x3b"


# ---- hostile servers ---------------------------------------------------------

def _recv_frame(conn: socket.socket) -> tuple[int, bytes]:
    hdr = b""
    while len(hdr) < 8:
        chunk = conn.recv(8 - len(hdr))
        if not chunk:
            raise EOFError
        hdr += chunk
    kind, length = struct.unpack("<II", hdr)
    data = b""
    while len(data) < length:
        chunk = conn.recv(length - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return kind, data


def hostile(mode: str, path: str) -> None:
    """A server that greets correctly, then on the first APDU:
    hang (never answers), drop (closes the connection), oversize (announces
    a payload beyond the bound), wrongtype (answers a POWER_UP reply), or
    at HELLO: badhello (answers garbage)."""
    if os.path.exists(path):
        os.unlink(path)
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(4)
    print("ready", flush=True)
    held = []
    while True:
        conn, _ = srv.accept()
        held.append(conn)
        try:
            kind, _ = _recv_frame(conn)
            if mode == "badhello":
                conn.sendall(b"\x00" * 3)
                continue
            conn.sendall(struct.pack("<III", 0x81, 8 + len(ATR_T1), 1)
                         + struct.pack("<I", 65544) + ATR_T1)
            while True:
                kind, data = _recv_frame(conn)
                if kind != 5:
                    conn.sendall(struct.pack("<II", kind | 0x80, 0))
                    continue
                if mode == "hang":
                    break  # keep the connection open, never answer
                if mode == "drop":
                    conn.close()
                    break
                if mode == "oversize":
                    conn.sendall(struct.pack("<II", 0x85, 0x7FFFFFFF))
                    break
                if mode == "wrongtype":
                    conn.sendall(struct.pack("<II", 0x82, 0))
                    break
                conn.sendall(struct.pack("<II", 0x85, 2) + b"\x90\x00")
        except (EOFError, OSError):
            pass


if __name__ == "__main__":
    if sys.argv[1] == "hostile":
        hostile(sys.argv[2], sys.argv[3])
