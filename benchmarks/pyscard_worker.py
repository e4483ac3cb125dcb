"""pcscd + pyscard side of the benchmarks, run as a child process.

Runs under the benchmark's own interpreter with the system pyscard on its
path (or under the system interpreter; see pcsc_peer.pyscard_interpreter)
and imports nothing from scardio.  It reads one JSON command per line
on stdin and answers one JSON object per line on stdout; the timing loops run
here, so the figures are what a pyscard user sees.  Times are
``time.monotonic_ns()`` (CLOCK_MONOTONIC, comparable across processes).

Commands (``{"cmd": ...}``):

  open      match, timeout, direct  find the reader whose name contains
                                    `match`; optionally a SCARD_SHARE_DIRECT
                                    handle for vendor controls
  ctl       n, data (hex)           SCardControl(SCARD_CTL_CODE(n)) on it
  trigger   kind                    insert / remove the simulated card
                                    (SCardControl on the direct handle) ->
                                    {"t0": ..} taken just before the call
  fresh_card timeout                remove the simulated card, wait until
                                    pcscd sees the reader empty, insert
                                    one, wait until pcscd sees it present
  connect   timeout                 shared T=1 connection (waits for a card)
  disconnect                        SCardDisconnect(SCARD_LEAVE_CARD)
  run       op, n                   -> {"ns": total} for n calls of op:
                                    status, tx5, tx261, tx4k,
                                    connect_unpower, connect_leave
  apdu      op                      -> {"resp": hex} one transmit (checking)
  gsc_event kind, trigger, timeout, settle
                                    card arrival / removal seen through a
                                    blocking SCardGetStatusChange in a
                                    second thread and context
  monitor_start / monitor_stop      a pyscard CardMonitor with one observer
  monitor_event kind, trigger, timeout
                                    the same event seen by the observer
  thread                            start an idle thread: from then on the
                                    process is multi-threaded, as an
                                    application with any other thread is
  quit

For an event with trigger "ctl" the worker inserts / removes the simulated
card itself (SCardControl) and answers {"t0": .., "t1": ..}; with trigger
"external" it answers {"ready": true} once armed, then {"t1": ..} when the
event is seen (the parent makes the event happen in between).
"""

from __future__ import annotations

import queue
import sys
import threading
import time

from smartcard import scard as S

from line_protocol import reply, serve

SIM_CTL_INSERT = 3500
SIM_CTL_REMOVE = 3501


def SCARD_CTL_CODE(n: int) -> int:
    return 0x42000000 + n


class Worker:
    def __init__(self) -> None:
        self.ctx = None
        self.ctx2 = None
        self.reader = None
        self.direct = None
        self.card = None
        self.apdus = {}
        self.monitor = None
        self.observer = None
        self.events: "queue.Queue" = queue.Queue()

    def check(self, hr: int, what: str) -> None:
        if hr != S.SCARD_S_SUCCESS:
            raise RuntimeError(f"{what}: {S.SCardGetErrorMessage(hr)} ({hr & 0xFFFFFFFF:#x})")

    # -- setup ---------------------------------------------------------------
    def cmd_open(self, match: str, timeout: float = 10.0, direct: bool = False,
                 apdus: dict = None) -> dict:
        hr, self.ctx = S.SCardEstablishContext(S.SCARD_SCOPE_USER)
        self.check(hr, "SCardEstablishContext")
        hr, self.ctx2 = S.SCardEstablishContext(S.SCARD_SCOPE_USER)
        self.check(hr, "SCardEstablishContext")
        deadline = time.monotonic() + timeout
        while True:
            hr, readers = S.SCardListReaders(self.ctx, [])
            found = [r for r in (readers or []) if match in r]
            if hr == S.SCARD_S_SUCCESS and found:
                self.reader = sorted(found)[0]
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"no reader matching {match!r}: {readers}")
            time.sleep(0.05)
        if direct:
            hr, self.direct, _ = S.SCardConnect(self.ctx, self.reader, S.SCARD_SHARE_DIRECT, 0)
            self.check(hr, "SCardConnect(DIRECT)")
        self.apdus = {k: list(bytes.fromhex(v)) for k, v in (apdus or {}).items()}
        return {"reader": self.reader}

    def cmd_ctl(self, n: int, data: str = "") -> dict:
        hr, resp = S.SCardControl(self.direct, SCARD_CTL_CODE(n), list(bytes.fromhex(data)))
        self.check(hr, f"SCardControl({n})")
        return {"resp": bytes(resp).hex()}

    def cmd_trigger(self, kind: str) -> dict:
        return {"t0": self._trigger(kind)}

    def cmd_connect(self, timeout: float = 10.0) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            hr, self.card, proto = S.SCardConnect(self.ctx, self.reader, S.SCARD_SHARE_SHARED,
                                                  S.SCARD_PROTOCOL_T1)
            if hr == S.SCARD_S_SUCCESS:
                return {"protocol": proto}
            if time.monotonic() > deadline:
                self.check(hr, "SCardConnect")
            time.sleep(0.02)

    def cmd_disconnect(self) -> dict:
        if self.card is not None:
            S.SCardDisconnect(self.card, S.SCARD_LEAVE_CARD)
            self.card = None
        return {}

    def cmd_apdu(self, op: str) -> dict:
        hr, resp = S.SCardTransmit(self.card, S.SCARD_PCI_T1, self.apdus[op])
        self.check(hr, "SCardTransmit")
        return {"resp": bytes(resp).hex()}

    def cmd_thread(self) -> dict:
        # A process that has started a thread pays on every system call:
        # glibc's wrappers of the blocking calls (poll, send, read) take
        # their cancellation path, and while the thread lives the kernel
        # looks file descriptors up in a shared table.
        threading.Thread(target=threading.Event().wait, daemon=True,
                         name="idle").start()
        return {"threads": threading.active_count()}

    # -- timing loops ----------------------------------------------------------
    def cmd_run(self, op: str, n: int) -> dict:
        clock = time.perf_counter_ns
        rng = range(n)
        if op == "status":
            card, status = self.card, S.SCardStatus
            t0 = clock()
            for _ in rng:
                hr = status(card)[0]
            t1 = clock()
        elif op in self.apdus:
            card, transmit, pci, apdu = self.card, S.SCardTransmit, S.SCARD_PCI_T1, self.apdus[op]
            t0 = clock()
            for _ in rng:
                hr = transmit(card, pci, apdu)[0]
            t1 = clock()
        elif op in ("connect_unpower", "connect_leave"):
            disp = S.SCARD_UNPOWER_CARD if op == "connect_unpower" else S.SCARD_LEAVE_CARD
            ctx, reader, connect, disconnect = self.ctx, self.reader, S.SCardConnect, \
                S.SCardDisconnect
            share, proto = S.SCARD_SHARE_SHARED, S.SCARD_PROTOCOL_T1
            hr = 0
            t0 = clock()
            for _ in rng:
                r, h, _p = connect(ctx, reader, share, proto)
                hr |= r
                hr |= disconnect(h, disp)
            t1 = clock()
        else:
            raise RuntimeError(f"unknown op {op}")
        self.check(hr, op)
        return {"ns": t1 - t0}

    # -- events ------------------------------------------------------------------
    def _trigger(self, kind: str) -> int:
        t0 = time.monotonic_ns()
        hr, _ = S.SCardControl(self.direct,
                               SCARD_CTL_CODE(SIM_CTL_INSERT if kind == "insert" else SIM_CTL_REMOVE),
                               [])
        self.check(hr, "SCardControl(insert/remove)")
        return t0

    def _reader_state(self) -> int:
        hr, states = S.SCardGetStatusChange(self.ctx2, 0, [(self.reader, S.SCARD_STATE_UNAWARE)])
        self.check(hr, "SCardGetStatusChange")
        return states[0][1]

    def cmd_fresh_card(self, timeout: float = 10.0) -> dict:
        """Remove the simulated card, wait until pcscd has the reader
        empty, insert a card and wait until pcscd has it present: whatever
        an earlier user left in the reader, an insert over a card would be
        a swap, which pcscd takes in while connects fail or later calls
        find the card reset.  Polls, so that the process stays
        single-threaded."""
        deadline = time.monotonic() + timeout
        for kind, want in (("remove", S.SCARD_STATE_EMPTY), ("insert", S.SCARD_STATE_PRESENT)):
            self._trigger(kind)
            while not self._reader_state() & want:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"pcscd did not see the card {kind}ed")
                time.sleep(0.005)
        return {}

    def cmd_gsc_event(self, kind: str, trigger: str = "ctl", timeout: float = 10.0,
                      settle: float = 0.01) -> dict:
        want = S.SCARD_STATE_PRESENT if kind == "insert" else S.SCARD_STATE_EMPTY
        current = self._reader_state() & ~S.SCARD_STATE_CHANGED
        if current & want:
            raise RuntimeError(f"card already {'present' if kind == 'insert' else 'absent'}")
        seen = {}

        def waiter(current=current) -> None:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                hr, st = S.SCardGetStatusChange(self.ctx2, int(timeout * 1000),
                                                [(self.reader, current)])
                now = time.monotonic_ns()
                if hr != S.SCARD_S_SUCCESS:
                    seen["error"] = hr
                    return
                current = st[0][1] & ~S.SCARD_STATE_CHANGED
                if current & want:
                    seen["t1"] = now
                    return

        th = threading.Thread(target=waiter, daemon=True)
        th.start()
        time.sleep(settle)  # let the waiter block in pcscd
        if trigger == "ctl":
            t0 = self._trigger(kind)
            th.join(timeout + 1)
            if "t1" not in seen:
                raise RuntimeError(f"event not seen: {seen}")
            return {"t0": t0, "t1": seen["t1"]}
        reply({"ready": True})
        th.join(timeout + 1)
        if "t1" not in seen:
            raise RuntimeError(f"event not seen: {seen}")
        return {"t1": seen["t1"]}

    def cmd_monitor_start(self, settle: float = 0.5) -> dict:
        from smartcard.CardMonitoring import CardMonitor, CardObserver

        events = self.events

        class Obs(CardObserver):
            def update(self, observable, actions):
                added, removed = actions
                events.put((time.monotonic_ns(), len(added), len(removed)))

        self.monitor = CardMonitor()
        self.observer = Obs()
        self.monitor.addObserver(self.observer)
        time.sleep(settle)
        self._drain()
        return {}

    def _drain(self) -> None:
        while True:
            try:
                self.events.get_nowait()
            except queue.Empty:
                return

    def _wait_monitor(self, kind: str, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError("CardMonitor did not report the event")
            t, added, removed = self.events.get(timeout=left)
            if (kind == "insert" and added) or (kind == "remove" and removed):
                return t

    def cmd_monitor_event(self, kind: str, trigger: str = "ctl", timeout: float = 10.0) -> dict:
        self._drain()
        if trigger == "ctl":
            t0 = self._trigger(kind)
            return {"t0": t0, "t1": self._wait_monitor(kind, timeout)}
        reply({"ready": True})
        return {"t1": self._wait_monitor(kind, timeout)}

    def cmd_monitor_stop(self) -> dict:
        if self.monitor is not None:
            self.monitor.deleteObserver(self.observer)
            self.monitor = self.observer = None
        return {}

    def release(self) -> None:
        """Let go of everything: the monitor, the handles, the contexts."""
        self.cmd_monitor_stop()
        self.cmd_disconnect()
        if self.direct is not None:
            S.SCardDisconnect(self.direct, S.SCARD_LEAVE_CARD)
            self.direct = None
        for c in (self.ctx, self.ctx2):
            if c is not None:
                S.SCardReleaseContext(c)
        self.ctx = self.ctx2 = None


def main() -> int:
    w = Worker()
    serve(w, {"python": sys.version.split()[0], "executable": sys.executable})
    try:
        w.release()
    except Exception:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
