"""Serve one card written in Python to simulated readers over a Unix socket.

``scardio card serve MODULE:CLASS --socket PATH`` runs a :class:`CardServer`:
it listens on PATH, and a simulated reader opened with the device name
``socket:PATH`` (by pcscd, through reader.conf, or by scardio) connects,
sees the card present, and forwards its power actions and APDUs (the
framing is :mod:`scardio.card_protocol`).  One reader holds the card at a
time, like a card in a slot; the card object lives as long as the server, so
its state survives the reader's reconnections.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import select
import socket
import stat
import sys
import threading
import time
import traceback
from typing import Optional, Union

from . import card_protocol as wire
from .card_protocol import Message
from .sim.virtual_card import VirtualCard

__all__ = ["CardSpecError", "CardServer", "load_card_class", "check_card"]

log = logging.getLogger("scardio.card_server")

#: The answer to a command whose handler raised (the traceback is logged).
EXECUTION_ERROR = b"\x6f\x00"
#: Seconds a reply may take to leave (a reader that stops reading).
SEND_TIMEOUT = 5.0


_APDU_REPLY = Message.APDU | wire.REPLY


class CardSpecError(ValueError):
    """``MODULE:CLASS`` or ``FILE.py:CLASS`` names no usable card class, or
    the card it makes is unusable (its ATR is not valid)."""


def load_card_class(spec: str) -> type[VirtualCard]:
    """The :class:`~scardio.sim.VirtualCard` subclass ``MODULE:CLASS`` or
    ``path/to/file.py:CLASS`` names (CLASS may be dotted)."""
    where, sep, name = spec.rpartition(":")
    if not sep or not where or not name:
        raise CardSpecError(f"{spec!r}: expected MODULE:CLASS or path/to/file.py:CLASS")
    if where.endswith(".py") or os.sep in where or (os.altsep and os.altsep in where):
        if not os.path.isfile(where):
            raise CardSpecError(f"{spec!r}: no such file {where!r}")
        mod_name = "scardio_card_" + os.path.splitext(os.path.basename(where))[0]
        file_spec = importlib.util.spec_from_file_location(mod_name, where)
        if file_spec is None or file_spec.loader is None:
            raise CardSpecError(f"{spec!r}: {where!r} cannot be imported")
        module = importlib.util.module_from_spec(file_spec)
        sys.modules[mod_name] = module  # dataclasses and pickling look it up
        try:
            file_spec.loader.exec_module(module)
        except Exception as exc:
            del sys.modules[mod_name]
            raise CardSpecError(f"{spec!r}: importing {where!r} failed: "
                                f"{type(exc).__name__}: {exc}") from exc
    else:
        try:
            module = importlib.import_module(where)
        except ImportError as exc:
            raise CardSpecError(f"{spec!r}: cannot import module {where!r}: {exc}") from exc
    obj: object = module
    for part in name.split("."):
        if not hasattr(obj, part):
            raise CardSpecError(f"{spec!r}: {where!r} has no attribute {name!r}")
        obj = getattr(obj, part)
    if not (isinstance(obj, type) and issubclass(obj, VirtualCard)):
        raise CardSpecError(f"{spec!r}: {name!r} is not a subclass of scardio.sim.VirtualCard")
    return obj


def check_card(card: VirtualCard) -> bytes:
    """The card's ATR, checked with scardio's ATR parser."""
    from .atr import ATRError, parse_atr
    atr = card.atr
    if not isinstance(atr, (bytes, bytearray)):
        raise CardSpecError(f"{type(card).__name__}.atr must be bytes, "
                            f"not {type(atr).__name__}")
    try:
        parse_atr(bytes(atr))
    except ATRError as exc:
        raise CardSpecError(f"{type(card).__name__}.atr {bytes(atr).hex(' ').upper()} "
                            f"is not a valid ATR: {exc}") from exc
    return bytes(atr)


class _Connection:
    """One reader's connection: its socket and the bytes not yet parsed."""

    def __init__(self, sock: socket.socket, number: int) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.number = number
        self.buffer = bytearray()
        self.greeted = False

    def __str__(self) -> str:
        return f"reader connection #{self.number}"


class CardServer:
    """Host *card* on the Unix socket *path* (created; removed by
    :meth:`close`).  :meth:`serve_forever` answers the readers that connect
    until :meth:`shutdown` (callable from any thread or a signal handler)."""

    def __init__(self, card: VirtualCard, path: Union[str, "os.PathLike[str]"]) -> None:
        self.card = card
        self.path = os.fspath(path)
        self.atr = check_card(card)
        if not hasattr(select, "poll") or not hasattr(socket, "AF_UNIX"):
            raise OSError("card serve needs Unix sockets and poll() (a POSIX system)")
        self._poll = select.poll()
        self._rbuf = bytearray(wire.HEADER_SIZE + wire.MAX_PAYLOAD)
        self._rview = memoryview(self._rbuf)
        self._debug = False
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._stop = threading.Event()
        self._active: Optional[_Connection] = None
        self._connections: dict[int, _Connection] = {}
        self._count = 0
        self._powered = False
        self._listener = self._bind()
        self._listen_fd = self._listener.fileno()
        self._poll.register(self._listen_fd, select.POLLIN)
        self._poll.register(self._wake_r, select.POLLIN)

    # -- life cycle ----------------------------------------------------------
    def _bind(self) -> socket.socket:
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            pass
        else:
            if not stat.S_ISSOCK(st.st_mode):
                raise OSError(f"{self.path} exists and is not a socket")
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                probe.settimeout(1.0)
                probe.connect(self.path)
            except OSError:
                os.unlink(self.path)  # nobody answers: a stale socket file
            else:
                raise OSError(f"another server is listening on {self.path}")
            finally:
                probe.close()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(self.path)
            sock.listen(8)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        self._inode = os.stat(self.path).st_ino
        return sock

    def shutdown(self) -> None:
        """Make :meth:`serve_forever` return (thread- and signal-safe)."""
        self._stop.set()
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass  # the pipe is full (already woken) or closed

    def close(self) -> None:
        """Drop the connections and remove the socket file (ours only)."""
        for conn in list(self._connections.values()):
            self._drop(conn, "server closing")
        if self._listener.fileno() >= 0:
            self._poll.unregister(self._listen_fd)
            self._listener.close()
            try:
                if os.stat(self.path).st_ino == self._inode:
                    os.unlink(self.path)
            except OSError:
                pass
        if self._wake_r >= 0:
            self._poll.unregister(self._wake_r)
            os.close(self._wake_r)
            os.close(self._wake_w)
            self._wake_r = self._wake_w = -1

    def __enter__(self) -> "CardServer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the loop ------------------------------------------------------------
    def serve_forever(self) -> None:
        """Accept readers and answer their requests until :meth:`shutdown`."""
        log.info("serving %s (ATR %s) on %s", type(self.card).__name__,
                 self.atr.hex(" ").upper(), self.path)
        self._debug = log.isEnabledFor(logging.DEBUG)
        connections = self._connections
        poll = self._poll.poll
        while not self._stop.is_set():
            for fd, _ in poll():
                conn = connections.get(fd)
                if conn is not None:
                    self._readable(conn)
                elif fd == self._listen_fd:
                    self._accept()
                elif fd == self._wake_r:
                    try:
                        os.read(self._wake_r, 64)
                    except OSError:
                        pass
        log.info("stopping")

    def _accept(self) -> None:
        try:
            sock, _ = self._listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        self._count += 1
        conn = _Connection(sock, self._count)
        # Non-blocking: a receive follows poll(); a send that cannot complete
        # at once waits in _send, bounded by SEND_TIMEOUT.
        sock.setblocking(False)
        self._connections[conn.fd] = conn
        self._poll.register(conn.fd, select.POLLIN)
        log.debug("%s accepted", conn)

    def _drop(self, conn: _Connection, why: str) -> None:
        if conn.sock.fileno() < 0:
            return
        self._connections.pop(conn.fd, None)
        self._poll.unregister(conn.fd)
        conn.sock.close()
        if conn is self._active:
            self._active = None
            log.info("reader disconnected (%s)", why)
            if self._powered:
                self._powered = False
                self._hook("power_down")
        else:
            log.debug("%s closed (%s)", conn, why)

    def _readable(self, conn: _Connection) -> None:
        try:
            n = conn.sock.recv_into(self._rbuf)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._drop(conn, f"receive failed: {exc}")
            return
        if n == 0:
            self._drop(conn, "end of stream")
            return
        view = self._rview
        buf = conn.buffer
        if not buf and n >= wire.HEADER_SIZE:
            # The usual case: exactly one whole frame, handled without copies.
            kind, length = wire.HEADER.unpack_from(view)
            if n == wire.HEADER_SIZE + length and length <= wire.MAX_PAYLOAD:
                if kind == Message.APDU and conn.greeted:
                    self._apdu(conn, bytes(view[wire.HEADER_SIZE:n]))
                else:
                    self._request(conn, kind, bytes(view[wire.HEADER_SIZE:n]))
                return
        buf += view[:n]
        while len(buf) >= wire.HEADER_SIZE:
            try:
                kind, length = wire.decode_header(bytes(buf[:wire.HEADER_SIZE]))
            except wire.FrameError as exc:
                self._protocol_error(conn, str(exc))
                return
            if len(buf) < wire.HEADER_SIZE + length:
                break
            payload = bytes(buf[wire.HEADER_SIZE:wire.HEADER_SIZE + length])
            del buf[:wire.HEADER_SIZE + length]
            if not self._request(conn, kind, payload) or conn.sock.fileno() < 0:
                return

    def _send(self, conn: _Connection, kind: int, payload: bytes = b"") -> bool:
        data = memoryview(wire.encode(kind, payload))
        try:
            sent = conn.sock.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError as exc:
            self._drop(conn, f"send failed: {exc}")
            return False
        if sent == len(data):
            return True
        # A reader slow to read a long reply: wait for room, bounded.
        deadline = time.monotonic() + SEND_TIMEOUT
        while sent < len(data):
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([], [conn.sock], [], left)[1]:
                self._drop(conn, f"send failed: the reader took no data for {SEND_TIMEOUT} s")
                return False
            try:
                sent += conn.sock.send(data[sent:])
            except (BlockingIOError, InterruptedError):
                continue
            except OSError as exc:
                self._drop(conn, f"send failed: {exc}")
                return False
        return True

    def _protocol_error(self, conn: _Connection, why: str) -> None:
        log.warning("%s: protocol error: %s; closing it", conn, why)
        self._send(conn, Message.ERROR, f"protocol error: {why}".encode())
        self._drop(conn, "protocol error")

    def _error(self, conn: _Connection, why: str) -> bool:
        return self._send(conn, Message.ERROR, why.encode()[:wire.MAX_PAYLOAD])

    # -- requests ------------------------------------------------------------
    def _request(self, conn: _Connection, kind: int, payload: bytes) -> bool:
        if not conn.greeted:
            if kind != Message.HELLO:
                self._protocol_error(conn, f"expected HELLO, got type {kind:#x}")
                return False
            return self._hello(conn, payload)
        if kind == Message.APDU:
            return self._apdu(conn, payload)
        if kind == Message.POWER_UP and not payload:
            return self._power(conn, kind, "power_up")
        if kind == Message.RESET and len(payload) == 1 and payload[0] in (0, 1):
            return self._power(conn, kind, "reset", warm=bool(payload[0]))
        if kind == Message.POWER_DOWN and not payload:
            self._powered = False
            log.info("power down")
            if not self._hook("power_down"):
                return self._error(conn, "power_down() raised (see the server's log)")
            return self._send(conn, Message.POWER_DOWN | wire.REPLY)
        self._protocol_error(conn, f"bad request: type {kind:#x} with {len(payload)} bytes")
        return False

    def _hello(self, conn: _Connection, payload: bytes) -> bool:
        try:
            version, max_payload = wire.parse_hello(payload)
        except wire.FrameError as exc:
            self._protocol_error(conn, str(exc))
            return False
        if version != wire.VERSION:
            self._protocol_error(conn, f"protocol version {version} (this server speaks "
                                       f"{wire.VERSION})")
            return False
        if max_payload < wire.MAX_RESPONSE:
            self._protocol_error(conn, f"the reader accepts only {max_payload} bytes")
            return False
        old = self._active
        if old is not None and old is not conn and self._alive(old):
            log.warning("%s refused: the card is in another reader", conn)
            self._error(conn, "the card is in another reader")
            self._drop(conn, "card busy")
            return False
        if old is not None and old is not conn:
            self._drop(old, "replaced by a new connection")
        conn.greeted = True
        self._active = conn
        log.info("reader connected (protocol version %d)", version)
        try:
            atr = check_card(self.card)
        except CardSpecError as exc:
            log.error("%s", exc)
            self._error(conn, str(exc))
            self._drop(conn, "no valid ATR")
            return False
        return self._send(conn, Message.HELLO | wire.REPLY, wire.hello_reply_payload(atr))

    def _alive(self, conn: _Connection) -> bool:
        """Whether a connection's peer is still there (it may have closed
        before the selector told us)."""
        readable, _, _ = select.select([conn.sock], [], [], 0)
        if not readable:
            return True
        try:
            data = conn.sock.recv(1, socket.MSG_PEEK)
        except OSError:
            return False
        return bool(data)

    def _hook(self, name: str, *args: object) -> bool:
        try:
            getattr(self.card, name)(*args)
        except Exception:
            log.error("%s.%s() raised:\n%s", type(self.card).__name__, name,
                      traceback.format_exc().rstrip())
            return False
        return True

    def _power(self, conn: _Connection, kind: int, hook: str, **kw: bool) -> bool:
        log.info("%s%s", "power up" if hook == "power_up" else "reset",
                 "" if not kw else (" (warm)" if kw["warm"] else " (cold)"))
        if not self._hook(hook, *kw.values()):
            return self._error(conn, f"{hook}() raised (see the server's log)")
        self._powered = True
        return self._send(conn, kind | wire.REPLY)

    def _apdu(self, conn: _Connection, command: bytes) -> bool:
        if self._debug:
            log.debug("> %s", command.hex(" ").upper())
        try:
            resp = self.card.apdu(command)
        except Exception:
            log.error("%s.apdu(%s) raised (answering 6F 00):\n%s", type(self.card).__name__,
                      command.hex(" ").upper(), traceback.format_exc().rstrip())
            resp = EXECUTION_ERROR
        if not isinstance(resp, (bytes, bytearray, memoryview)):
            why = f"apdu() returned {type(resp).__name__}, not bytes"
            log.error("%s", why)
            return self._send(conn, Message.MALFORMED, why.encode())
        if not wire.MIN_RESPONSE <= len(resp) <= wire.MAX_RESPONSE:
            why = (f"apdu() returned {len(resp)} bytes (a response has "
                   f"{wire.MIN_RESPONSE}..{wire.MAX_RESPONSE})")
            log.error("%s", why)
            return self._send(conn, Message.MALFORMED, why.encode())
        if self._debug:
            log.debug("< %s", bytes(resp).hex(" ").upper())
        return self._send(conn, _APDU_REPLY, bytes(resp))
